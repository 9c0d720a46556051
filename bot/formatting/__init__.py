"""Replies shaped for each channel: tool results, Markdown renderers, and splitting."""

from __future__ import annotations

from bot.formatting.render import render_discord, render_html, render_plain, render_slack
from bot.formatting.split import sms_segments, split_message, split_sms, utf16_len
from bot.formatting.telegram import render_telegram
from bot.formatting.tool_result import FormatMode, ShowToolResults, ToolFormatter


def format_reasoning(reasoning: str, target: str) -> str:
    """Reasoning shown with a reply (thinking mode ``on``), in the target's style.

    ``target`` is ``slack`` (a quote), ``discord`` (a quote) or ``plain``
    (a short "Reasoning:" section). Telegram and the web chat have their own
    (a collapsed quote, a collapsed box).
    """
    text = reasoning.strip()
    if not text:
        return ""
    if target == "slack":
        body = render_slack(text)
        return "> *Reasoning*\n" + "\n".join(f"> {line}" for line in body.split("\n"))
    if target == "discord":
        body = render_discord(text)
        return "> **Reasoning**\n" + "\n".join(f"> {line}" for line in body.split("\n"))
    return "Reasoning:\n" + render_plain(text)


__all__ = [
    "FormatMode",
    "ShowToolResults",
    "ToolFormatter",
    "format_reasoning",
    "render_discord",
    "render_html",
    "render_plain",
    "render_slack",
    "render_telegram",
    "sms_segments",
    "split_message",
    "split_sms",
    "utf16_len",
]
