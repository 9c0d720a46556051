"""Slack's look: standard Markdown (``markdown_text``) first, mrkdwn as the fallback.

Slack renders standard Markdown sent as ``markdown_text``; that is what a reply
is sent as, because mrkdwn's ``*bold*`` does not render next to CJK text or
inside words (``これは**重要**です``). Each part also carries an mrkdwn version
(``*bold*``, ``_italic_``, ``~strike~``, ``<url|text>``; headings as bold lines,
lists as ``•`` lines, tables as aligned code; ``&``, ``<``, ``>`` escaped) for
the places that take only mrkdwn and for a rejected ``markdown_text``.

Broadcast mentions in the model's text (``<!channel>``, ``<!here>``,
``<!everyone>``, ``<!subteam^…>`` user groups, and a bare ``@here``) are
neutralised before anything is sent: the words stay, nobody is paged.
"""

from __future__ import annotations

import re
from typing import Any

from bot.formatting import MARKDOWN_EMPHASIS, MarkdownStyle, split_message

SLACK_TOKEN = re.compile(r"<(?:[@#!][^<>\s]+|https?://[^<>\s|]+(?:\|[^<>]*)?)>")
_KEPT = re.compile("\ue000(\\d+)\ue001")
_BROADCAST = re.compile(r"<!(channel|here|everyone)(?:\|[^<>]*)?>", re.IGNORECASE)
_SUBTEAM = re.compile(r"<!subteam\^[^<>|]*(?:\|@?([^<>]*))?>", re.IGNORECASE)
_BARE = re.compile(r"(?<![\w@])@(channel|here|everyone)\b", re.IGNORECASE)
ZWSP = "\u200b"


def neutralise(text: str) -> str:
    """``text`` with broadcast and user-group mentions made harmless words."""
    text = _BROADCAST.sub(lambda m: f"@{ZWSP}{m.group(1)}", text)
    text = _SUBTEAM.sub(lambda m: f"@{ZWSP}{m.group(1) or 'group'}", text)
    return _BARE.sub(lambda m: f"@{ZWSP}{m.group(1)}", text)


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

        text = super().render(SLACK_TOKEN.sub(protect, neutralise(markdown)))
        return _KEPT.sub(lambda m: kept[int(m.group(1))], text)

    def reasoning(self, text: str) -> str:
        text = text.strip()
        if not text:
            return ""
        return "> *Reasoning*\n" + "\n".join(f"> {line}" for line in self.render(text).split("\n"))


SLACK = SlackStyle()


def render_slack(markdown: str) -> str:
    return SLACK.render(markdown)


def reasoning_markdown(text: str) -> str:
    """Reasoning as a Markdown quote, shown above (or apart from) the answer."""
    lines = text.strip().split("\n")
    return "> **Reasoning**\n" + "\n".join(f"> {line}" if line else ">" for line in lines)


def compose_markdown(markdown: str, reasoning: str | None = None) -> str:
    """A whole reply in standard Markdown, mentions neutralised: reasoning first."""
    text = markdown.strip()
    if reasoning and reasoning.strip():
        text = f"{reasoning_markdown(reasoning)}\n\n{text}".strip()
    return neutralise(text)


MARKERS = MARKDOWN_EMPHASIS
"""The split is made on the standard Markdown, so its emphasis is what a break closes
and reopens; each part's mrkdwn is rendered from a balanced part, so it is balanced too."""


def parts(markdown: str, limit: int) -> list[dict[str, Any]]:
    """The reply as parts within ``limit``: each ``{"markdown": …, "text": mrkdwn}``;
    emphasis a break falls inside is closed and reopened in both forms."""
    chunks = split_message(markdown, limit, markers=MARKERS)
    return [{"markdown": chunk, "text": SLACK.render(chunk)} for chunk in chunks]
