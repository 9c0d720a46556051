"""Slack's look: mrkdwn, and reasoning as a quote.

mrkdwn is ``*bold*``, ``_italic_``, ``~strike~``, ``<url|text>``; headings
become bold lines, lists ``•`` lines, tables aligned code. ``&``, ``<`` and
``>`` are escaped, but Slack's own ``<@U…>``, ``<#C…|…>``, ``<!here>`` and
``<url>`` tokens in the model's text are kept as they are.
"""

from __future__ import annotations

import re

from bot.formatting import MarkdownStyle

SLACK_TOKEN = re.compile(r"<(?:[@#!][^<>\s]+|https?://[^<>\s|]+(?:\|[^<>]*)?)>")
_KEPT = re.compile("\ue000(\\d+)\ue001")


class SlackStyle(MarkdownStyle):
    bullet = "•"
    table_as_code = True

    def escape(self, text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def bold(self, text: str) -> str:
        return f"*{text}*"

    def italic(self, text: str) -> str:
        return f"_{text}_"

    def strike(self, text: str) -> str:
        return f"~{text}~"

    def code(self, text: str) -> str:
        return f"`{text}`"

    def link(self, text: str, url: str) -> str:
        return f"<{url}|{text}>" if text and text != url else f"<{url}>"

    def heading(self, text: str, level: int) -> str:
        return f"*{text}*"

    def fence(self, code: str, lang: str) -> str:
        return f"```\n{code.rstrip(chr(10))}\n```"

    def render(self, markdown: str) -> str:
        # Slack's tokens are set aside before parsing, so they are neither escaped nor taken apart.
        kept: list[str] = []

        def protect(match: re.Match[str]) -> str:
            kept.append(match.group(0))
            return f"\ue000{len(kept) - 1}\ue001"

        text = super().render(SLACK_TOKEN.sub(protect, markdown))
        return _KEPT.sub(lambda m: kept[int(m.group(1))], text)

    def reasoning(self, text: str) -> str:
        text = text.strip()
        if not text:
            return ""
        return "> *Reasoning*\n" + "\n".join(f"> {line}" for line in self.render(text).split("\n"))


SLACK = SlackStyle()


def render_slack(markdown: str) -> str:
    return SLACK.render(markdown)
