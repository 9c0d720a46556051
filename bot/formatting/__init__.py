"""Replies in any channel's shape: tool results, the Markdown walker, HTML, splitting.

Nothing here knows a channel: a channel's own style (a ``MarkdownStyle``
subclass, or its own renderer) lives next to the channel.
"""

from __future__ import annotations

from bot.formatting.emphasis import MARKDOWN_EMPHASIS, Emphasis
from bot.formatting.render import PLAIN, MarkdownStyle, render_html, render_plain
from bot.formatting.split import sms_segments, split_message, split_sms, utf16_len
from bot.formatting.tool_result import FormatMode, ShowToolResults, ToolFormatter

__all__ = [
    "MARKDOWN_EMPHASIS",
    "PLAIN",
    "Emphasis",
    "FormatMode",
    "MarkdownStyle",
    "ShowToolResults",
    "ToolFormatter",
    "render_html",
    "render_plain",
    "sms_segments",
    "split_message",
    "split_sms",
    "utf16_len",
]
