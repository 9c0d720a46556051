"""How a tool result is shown to the person chatting (``agent.show_tool_results``).

``off`` shows nothing, ``summary`` one plain line per call, ``full`` the
formatted result, in the format the runtime resolved for the turn (Markdown
or plain: the channel's, unless configured).
"""

from __future__ import annotations

from bot.formatting import FormatMode, ToolFormatter
from bot.tools.result import ToolResult


class ToolDisplay:
    def __init__(self, show: str) -> None:
        self.show = show
        self.formatter = ToolFormatter()

    def render(self, result: ToolResult, mode: FormatMode) -> str:
        if self.show == "off":
            return ""
        if self.show == "summary":
            return self.formatter.summarize(result)
        return self.formatter.format_result(result, mode)
