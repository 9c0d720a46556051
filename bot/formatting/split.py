"""Split a reply into parts that fit a channel's limit, without breaking code or words.

Breaks are tried in order: between paragraphs, then lines, then sentences,
then words; only a single word longer than the limit is cut. A fenced code
block that must be split is closed at the end of one part and reopened (with
its language) at the start of the next, so every part renders on its own.
Nothing is reordered and no text is lost: only whitespace at the breaks and
the added fence lines differ from the input.

Given the channel's emphasis ``markers`` (``("**", "*", "~~")``; see
``emphasis``), a span of bold, italic and the like that a break falls inside
is closed at the end of one part and reopened at the start of the next (after
a quote's ``>``), so no part shows a stray marker; each part still fits the
limit with the markers added. Only spans the text both opens and closes count,
and code, URLs, bullets and ``snake_case`` are not mistaken for them.

Lengths are counted in the channel's unit: characters, UTF-16 code units
(Telegram, SMS in UCS-2) or GSM-7 septets (SMS).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

from bot.formatting.emphasis import Emphasis, Span, deepest, open_at

Measure = Callable[[str], int]

FENCE = re.compile(r"^(`{3,}|~{3,})([^\n`]*)$")
SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_QUOTE = re.compile(r"[ \t]*(?:>+[ \t]*)*")
_SPACE = re.compile(r"\s*")
MIN_ROOM = 8  # the least room a part keeps for text when markers are reserved
SMS_LIMIT = 1600
GSM_SEGMENT = 153
UCS2_SEGMENT = 67


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def measure_for(unit: str) -> Measure:
    if unit == "utf16":
        return utf16_len
    if unit == "chars":
        return len
    raise ValueError(f"unknown unit {unit!r}; use chars or utf16")


def _blocks(text: str) -> list[tuple[str, str | None]]:
    """Paragraphs and whole fenced blocks: (text, fence opener or None)."""
    blocks: list[tuple[str, str | None]] = []
    lines = text.split("\n")
    index = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(("\n".join(paragraph), None))
            paragraph.clear()

    while index < len(lines):
        line = lines[index]
        match = FENCE.match(line.strip())
        if match:
            flush()
            marker = match.group(1)
            body = [line]
            index += 1
            while index < len(lines):
                body.append(lines[index])
                closing = lines[index].strip()
                index += 1
                if closing.startswith(marker[0] * len(marker)) and not closing.strip(marker[0]):
                    break
            blocks.append(("\n".join(body), line.strip()))
            continue
        if line.strip() == "":
            flush()
        else:
            paragraph.append(line)
        index += 1
    flush()
    return blocks


def _pieces(text: str, limit: int, measure: Measure) -> list[str]:
    """Split plain text at lines, sentences, words, and as a last resort characters."""
    if measure(text) <= limit:
        return [text]
    for pattern, joiner in ((re.compile(r"\n"), "\n"), (SENTENCE, " "), (re.compile(r"\s+"), " ")):
        units = [u for u in pattern.split(text) if u != ""]
        if len(units) > 1:
            return _pack(
                [p for u in units for p in _pieces(u, limit, measure)], limit, measure, joiner
            )
    out = []
    current = ""
    for char in text:
        if measure(current + char) > limit and current:
            out.append(current)
            current = ""
        current += char
    if current:
        out.append(current)
    return out


def _pack(units: list[str], limit: int, measure: Measure, joiner: str) -> list[str]:
    parts: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}{joiner}{unit}" if current else unit
        if measure(candidate) <= limit:
            current = candidate
        else:
            if current:
                parts.append(current)
            current = unit
    if current:
        parts.append(current)
    return parts


def _split_fence(block: str, opener: str, limit: int, measure: Measure) -> list[str]:
    lines = block.split("\n")
    marker = re.match(r"`{3,}|~{3,}", opener)
    close = marker.group(0) if marker else "```"
    has_close = len(lines) > 1 and lines[-1].strip().startswith(close[0] * 3)
    body = lines[1:-1] if has_close else lines[1:]
    room = limit - measure(opener) - measure(close) - 2
    if room < 1:
        return _pieces(block, limit, measure)
    chunks = _pack(
        [p for line in body for p in _pieces(line, room, measure)] or [""], room, measure, "\n"
    )
    return [f"{opener}\n{chunk}\n{close}" for chunk in chunks]


@functools.lru_cache(maxsize=16)
def _emphasis(markers: tuple[str, ...]) -> Emphasis:
    return Emphasis(markers)


def _starts(block: str, pieces: list[str]) -> list[int] | None:
    """Where each piece begins in ``block`` (its first non-space character); None if the
    pieces are not ``block`` with only whitespace changed."""
    solid = [index for index, char in enumerate(block) if not char.isspace()]
    starts, count = [], 0
    for piece in pieces:
        starts.append(solid[count] if count < len(solid) else len(block))
        count += sum(1 for char in piece if not char.isspace())
    return starts if count == len(solid) else None


def _rebalanced(block: str, pieces: list[str], spans: list[Span]) -> list[str] | None:
    """``pieces`` with each span a break falls inside closed before it and reopened after it."""
    starts = _starts(block, pieces)
    if starts is None:
        return None
    across = open_at(spans, starts[1:])
    out = []
    for index, piece in enumerate(pieces):
        if index and across[index - 1]:
            start = starts[index]
            at_line = block[:start].rstrip(" \t").endswith("\n")
            head = _QUOTE if at_line else _SPACE
            found = head.match(piece)
            cut = found.end() if found else 0
            piece = piece[:cut] + "".join(across[index - 1]) + piece[cut:]
        if index < len(across) and across[index]:
            piece = piece.rstrip() + "".join(reversed(across[index]))
        out.append(piece)
    return out


def _balanced_pieces(block: str, limit: int, measure: Measure, emphasis: Emphasis) -> list[str]:
    """A paragraph split as ``_pieces`` does, its emphasis spans closed and reopened
    at the breaks, each piece still within ``limit`` with the markers added."""
    pieces = _pieces(block, limit, measure)
    spans = emphasis.spans(block) if len(pieces) > 1 else []
    if not spans:
        return pieces
    balanced = _rebalanced(block, pieces, spans)
    if balanced is not None and all(measure(p) <= limit for p in balanced):
        return balanced
    room = limit - 2 * deepest(spans, measure)  # each piece gains at most this much
    if balanced is None or room < MIN_ROOM:
        return pieces  # markers nested too deep to fit: left as they are
    return _rebalanced(block, _pieces(block, room, measure), spans) or pieces


def split_message(
    text: str,
    limit: int,
    *,
    unit: str = "chars",
    measure: Measure | None = None,
    markers: Sequence[str] = (),
) -> list[str]:
    """Parts of ``text``, each at most ``limit`` long in ``unit``; emphasis made with
    ``markers`` is closed and reopened where a part ends inside it."""
    if limit < 16:
        raise ValueError("limit must be at least 16")
    emphasis = _emphasis(tuple(markers))
    size = measure or measure_for(unit)
    text = text.strip("\n")
    if not text.strip():
        return []
    if size(text) <= limit:
        return [text]
    pieces: list[str] = []
    for block, opener in _blocks(text):
        if size(block) <= limit:
            pieces.append(block)
        elif opener is not None:
            pieces.extend(_split_fence(block, opener, limit, size))
        elif emphasis:
            pieces.extend(_balanced_pieces(block, limit, size, emphasis))
        else:
            pieces.extend(_pieces(block, limit, size))
    return _pack(pieces, limit, size, "\n\n")


def is_gsm7(text: str) -> bool:
    try:
        text.encode("gsm03.38")
    except UnicodeEncodeError:
        return False
    return True


def gsm_len(text: str) -> int:
    """Septets: GSM extended characters (``€ [ ] { } \\ ~ ^ |``) take two."""
    return len(text.encode("gsm03.38"))


def sms_segments(text: str) -> int:
    if not text:
        return 0
    if is_gsm7(text):
        septets = gsm_len(text)
        return 1 if septets <= 160 else -(-septets // GSM_SEGMENT)
    units = utf16_len(text)
    return 1 if units <= 70 else -(-units // UCS2_SEGMENT)


def split_sms(text: str, limit: int = SMS_LIMIT) -> list[str]:
    """Messages of at most ``limit`` characters, each filling whole segments where it can."""
    if is_gsm7(text):
        budget = (limit // GSM_SEGMENT) * GSM_SEGMENT
        return split_message(text, budget, measure=gsm_len)
    budget = (limit // UCS2_SEGMENT) * UCS2_SEGMENT
    return split_message(text, budget, measure=utf16_len)
