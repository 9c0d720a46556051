"""Discord's look: Discord Markdown, and reasoning as a quote.

A reply shown while it is written (``live``) has the reasoning streamed so far
as a quote above the answer, and what is running as a small line under it
(Discord's ``-#`` subtext); the final reply drops both.

Discord has no tables, so a table becomes aligned code; an image becomes a
link; raw HTML is dropped. Links are wrapped in ``<…>`` so Discord shows no
embed for them. A reply split into messages passes ``MARKERS`` to
``split_message``, so bold, italic, underline, strike and spoilers a break falls
inside are closed and reopened in each message.
"""

from __future__ import annotations

import re

from bot.formatting import MarkdownStyle

MARKERS = ("**", "*", "__", "_", "~~", "||")
"""Discord's emphasis: bold, italic, underline, italic, strike, spoiler."""


def _ticks(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * (longest + 1)


class DiscordStyle(MarkdownStyle):
    table_as_code = True

    def bold(self, text: str) -> str:
        return f"**{text}**"

    def italic(self, text: str) -> str:
        return f"*{text}*"

    def strike(self, text: str) -> str:
        return f"~~{text}~~"

    def code(self, text: str) -> str:
        fence = _ticks(text)
        pad = " " if text.startswith("`") or text.endswith("`") else ""
        return f"{fence}{pad}{text}{pad}{fence}"

    def link(self, text: str, url: str) -> str:
        return f"[{text}](<{url}>)" if text and text != url else url

    def heading(self, text: str, level: int) -> str:
        return f"{'#' * min(level, 3)} {text}"

    def fence(self, code: str, lang: str) -> str:
        longest = max((len(m) for m in re.findall(r"`{3,}", code)), default=0)
        fence = "`" * max(3, longest + 1)
        return f"{fence}{lang}\n{code.rstrip(chr(10))}\n{fence}"

    def quote(self, text: str) -> str:
        return "\n".join(f"> {line}" for line in text.split("\n"))

    def reasoning(self, text: str) -> str:
        text = text.strip()
        return self.quote("**Reasoning**\n" + self.render(text)) if text else ""


DISCORD = DiscordStyle()


def live(text: str, reasoning: str = "", status: str = "") -> str:
    """A reply while it is written: reasoning quoted above, the answer so far, the status.

    ``text`` may end anywhere, even inside a code block: the parser closes what is open.
    """
    pieces = [DISCORD.reasoning(reasoning) if reasoning.strip() else ""]
    pieces.append(DISCORD.render(text) if text.strip() else "")
    status = status.strip()
    if status:
        one_line = "\n" not in status and len(status) <= 200
        pieces.append(f"-# {status}" if one_line else status)
    return "\n\n".join(p for p in pieces if p) or "…"


def render_discord(markdown: str) -> str:
    return DISCORD.render(markdown)
