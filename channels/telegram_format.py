"""Telegram's look: Markdown to text plus entities, split at 4096 UTF-16 units.

telegramify-markdown does the conversion: it emits plain text and
``MessageEntity`` offsets in UTF-16 units, so there is no escaping to get
wrong (MarkdownV2 and HTML parse modes reject a whole message for one bad
character). Our splitter clips entities at part boundaries, so a code block
split in two stays a code block in both parts, and breaks at a line or a
space, never inside a word. Reasoning goes first,
as an expandable (collapsed) blockquote.

Two things it does that a chat must not: it drops anything that looks like
HTML (``Use <div> for containers`` lost a word), so ``<`` outside code is
escaped first; and Telegram itself turns file names whose extension is also a
top-level domain (``README.md``, ``setup.py``) into links, so those get a
``code`` entity. ``render_live`` renders a reply cut off mid-stream: an open
code fence is closed for display, so a partial reply never has a broken entity.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate
from typing import Any

import telegramify_markdown

from bot.formatting import utf16_len

TELEGRAM_LIMIT = 4096

# File extensions that are also top-level domains: Telegram links ``README.md``.
LINKED_EXTENSIONS = (
    "md|py|sh|rs|pl|ai|io|so|ps|cc|zip|mov|app|dev|ml|tf|sc|in|js|ts|cs|rb|go|sql|txt|yml"
)
FILE_NAME = re.compile(rf"^[\w./-]*\w\.(?:{LINKED_EXTENSIONS})$", re.IGNORECASE)
TOKEN = re.compile(r"\S+")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HTML_START = re.compile(r"<(?=[A-Za-z/!?])")
AUTOLINK = re.compile(r"<(?:[A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*|[^\s<>@]+@[^\s<>@]+)>")
CODE_SPAN = re.compile(r"(`+)(?:.+?)(?<!`)\1(?!`)", re.DOTALL)
COVERING = {"code", "pre", "url", "text_link", "email"}


def render_telegram(
    markdown: str,
    *,
    reasoning: str | None = None,
    status: str = "",
    limit: int = TELEGRAM_LIMIT,
) -> list[dict[str, Any]]:
    """Parts as ``{"text": ..., "entities": [MessageEntity dicts]}``, each within ``limit``.

    ``status`` (what is running, mid-stream) is shown in italics below the text."""
    text, entity_dicts = convert(markdown)
    if status.strip():
        line = status.strip()
        offset = utf16_len(text) + (2 if text else 0)
        text = f"{text}\n\n{line}" if text else line
        entity_dicts.append({"type": "italic", "offset": offset, "length": utf16_len(line)})
    if reasoning and reasoning.strip():
        head = f"Reasoning:\n{reasoning.strip()}"
        shift = utf16_len(head) + (2 if text else 0)
        quote = {"type": "expandable_blockquote", "offset": 0, "length": utf16_len(head)}
        for entity in entity_dicts:
            entity["offset"] += shift
        text = f"{head}\n\n{text}" if text else head
        entity_dicts = [quote, *entity_dicts]
    if not text.strip():
        return []
    rebuilt = [telegramify_markdown.MessageEntity(**e) for e in entity_dicts]
    parts = split_entities(text, rebuilt, limit)
    return [
        {"text": part_text, "entities": [e.to_dict() for e in part_entities]}
        for part_text, part_entities in parts
    ]


Entity = telegramify_markdown.MessageEntity


def split_entities(text: str, entities: list[Entity], limit: int) -> list[tuple[str, list[Entity]]]:
    """``text`` in parts of at most ``limit`` UTF-16 units, entities clipped into each.

    A part ends after a line break in its second half, else after the last space,
    and only a word longer than a whole part is cut (telegramify-markdown's own
    splitter cuts mid-word when a paragraph has no line break). Entities that cross
    a boundary are clipped into both parts, so bold or a code block stays so."""
    offsets = [0, *accumulate(2 if ord(c) > 0xFFFF else 1 for c in text)]
    parts: list[tuple[str, list[Entity]]] = []
    start = 0
    while start < len(text):
        end = len(text)
        if offsets[end] - offsets[start] > limit:
            end = _cut(text, start, bisect_right(offsets, offsets[start] + limit) - 1)
        chunk = text[start:end]
        if chunk.strip():
            parts.append((chunk, _clip(entities, offsets[start], offsets[end])))
        start = end
    return parts


def _cut(text: str, start: int, end: int) -> int:
    """Where a part from ``start`` that may reach ``end`` ends: after a line break
    in its second half, after its last space, or (one long word) at ``end``."""
    half = start + (end - start) // 2
    newline = text.rfind("\n", half, end) + 1
    if newline > start:
        return newline
    space = max(text.rfind(" ", start, end), text.rfind("\n", start, end)) + 1
    return space if space > start else max(end, start + 1)


def _clip(entities: list[Entity], start: int, end: int) -> list[Entity]:
    clipped = []
    for entity in entities:
        first, last = max(entity.offset, start), min(entity.offset + entity.length, end)
        if last > first:
            clipped.append(entity.copy_with(offset=first - start, length=last - first))
    return clipped


def render_live(
    markdown: str, *, reasoning: str = "", status: str = "", limit: int = TELEGRAM_LIMIT
) -> list[dict[str, Any]]:
    """A reply still being written, as parts: Markdown cut off anywhere renders safely."""
    return render_telegram(
        close_fences(markdown), reasoning=reasoning or None, status=status, limit=limit
    )


def tail_markdown(markdown: str, chars: int = 2 * TELEGRAM_LIMIT) -> str:
    """About the last ``chars`` of a long reply, from a line start, a code block cut
    in two reopened: a draft shows only the newest part, so only that is rendered."""
    if len(markdown) <= chars:
        return markdown
    cut = markdown.find("\n", len(markdown) - chars) + 1 or len(markdown) - chars
    head, tail = markdown[:cut], markdown[cut:]
    reopened = close_fences(head)[len(head) :].strip()  # the fence left open, if any
    return f"{reopened}\n{tail}" if reopened else tail


def convert(markdown: str) -> tuple[str, list[dict[str, Any]]]:
    """Markdown as Telegram text and entity dicts (HTML-looking text kept, file names
    not linked)."""
    if not markdown.strip():
        return "", []
    text, entities = telegramify_markdown.convert(escape_html(markdown))
    dicts = [e.to_dict() for e in entities]
    return text, dicts + file_name_entities(text, dicts)


def close_fences(markdown: str) -> str:
    """Close a code fence left open (a reply cut off inside a code block)."""
    open_fence = ""
    for line in markdown.split("\n"):
        found = FENCE.match(line)
        if found is None:
            continue
        fence = found.group(1)
        if not open_fence:
            open_fence = fence
        elif fence[0] == open_fence[0] and len(fence) >= len(open_fence):
            open_fence = "" if not line.strip(fence[0] + " ") else open_fence
    if not open_fence:
        return markdown
    return markdown + ("" if markdown.endswith("\n") else "\n") + open_fence


def escape_html(markdown: str) -> str:
    """Backslash-escape ``<`` that would start an HTML tag, outside code and autolinks:
    telegramify-markdown drops inline HTML, and a chat reply shows it as written."""
    out: list[str] = []
    prose: list[str] = []
    open_fence = ""
    blank = True
    for line in markdown.split("\n"):
        found = FENCE.match(line)
        indented_code = blank and not open_fence and line.startswith(("    ", "\t"))
        if open_fence or found or indented_code:
            if prose:
                out.append(_escape_prose("\n".join(prose)))
                prose = []
            out.append(line)
            if found and not open_fence:
                open_fence = found.group(1)
            elif found and found.group(1)[0] == open_fence[0]:
                open_fence = ""
            blank = indented_code  # an indented block goes on after its first line
            continue
        prose.append(line)
        blank = not line.strip()
    if prose:
        out.append(_escape_prose("\n".join(prose)))
    return "\n".join(out)


def _escape_prose(text: str) -> str:
    pieces: list[str] = []
    at = 0
    for span in CODE_SPAN.finditer(text):
        pieces.append(_escape_tags(text[at : span.start()]))
        pieces.append(span.group(0))
        at = span.end()
    pieces.append(_escape_tags(text[at:]))
    return "".join(pieces)


def _escape_tags(text: str) -> str:
    pieces: list[str] = []
    at = 0
    for link in AUTOLINK.finditer(text):
        pieces.append(HTML_START.sub(r"\\<", text[at : link.start()]))
        pieces.append(link.group(0))
        at = link.end()
    pieces.append(HTML_START.sub(r"\\<", text[at:]))
    return "".join(pieces)


def file_name_entities(text: str, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``code`` entities over bare file names Telegram would turn into links."""
    covered = [(e["offset"], e["offset"] + e["length"]) for e in entities if e["type"] in COVERING]
    found: list[dict[str, Any]] = []
    for token in TOKEN.finditer(text):
        word = token.group(0)
        stripped = word.lstrip("(\"'[")
        name = stripped.rstrip(".,;:!?)\"']")
        if "://" in name or "@" in name or name.lower().startswith("www.") or not name:
            continue
        if not FILE_NAME.match(name):
            continue
        start = utf16_len(text[: token.start() + len(word) - len(stripped)])
        end = start + utf16_len(name)
        if any(a < end and start < b for a, b in covered):
            continue
        found.append({"type": "code", "offset": start, "length": end - start})
    return found
