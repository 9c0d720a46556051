"""Split a reply into parts that fit a channel's limit, without breaking code or words.

Breaks are tried in order: between paragraphs, then lines, then sentences,
then words; only a single word longer than the limit is cut. A fenced code
block that must be split is closed at the end of one part and reopened (with
its language) at the start of the next, so every part renders on its own.
Nothing is reordered and no text is lost: only whitespace at the breaks and
the added fence lines differ from the input.

Lengths are counted in the channel's unit: characters, UTF-16 code units
(Telegram, SMS in UCS-2) or GSM-7 septets (SMS).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

Measure = Callable[[str], int]

FENCE = re.compile(r"^(`{3,}|~{3,})([^\n`]*)$")
SENTENCE = re.compile(r"(?<=[.!?…])\s+")
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


def split_message(
    text: str, limit: int, *, unit: str = "chars", measure: Measure | None = None
) -> list[str]:
    """Parts of ``text``, each at most ``limit`` long in ``unit``."""
    if limit < 16:
        raise ValueError("limit must be at least 16")
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
