"""How a tool result is shown to the person chatting (``agent.show_tool_results``).

``off`` shows nothing, ``summary`` one plain line per call, ``full`` the
formatted result (Markdown or plain, by channel unless configured).
"""

from __future__ import annotations

from bot.formatting import FormatMode, ToolFormatter, default_format_for
from bot.tools.result import ToolResult


class ToolDisplay:
    def __init__(self, show: str, tool_format: str | None) -> None:
        self.show = show
        self.tool_format = FormatMode(tool_format) if tool_format else None
        self.formatter = ToolFormatter()

    def mode_for(self, channel: str | None, override: FormatMode | None = None) -> FormatMode:
        if override is not None:
            return override
        if self.tool_format is not None:
            return self.tool_format
        return default_format_for(channel or "web")

    def render(
        self, result: ToolResult, channel: str | None, override: FormatMode | None = None
    ) -> str:
        if self.show == "off":
            return ""
        if self.show == "summary":
            return self.formatter.summarize(result)
        return self.formatter.format_result(result, self.mode_for(channel, override))
