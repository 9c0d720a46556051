"""Separate a model's reasoning from its answer, in one piece or as it streams.

Rules:

- Reasoning sits in ``<thinking>``, ``<thought>``, ``<antthinking>`` or
  ``<think>`` tags: any case, optional spaces (``< think >``) and attributes
  (``<thinking type="plan">``). Tags inside inline code (`` `<think>` ``) or
  a fenced block (```` ``` ```` or ``~~~``; each closes only its own kind) are
  text, not tags. A fence left open runs to the end. A backtick with no
  matching run after it in the same paragraph (and within ``INLINE_MAX``
  characters) is a plain backtick: it protects nothing.
- Tags nest: an opening tag inside reasoning needs its own closing tag
  before the reasoning ends.
- A self-closing tag (``<think/>``, ``<thinking id="1" />``) is an empty
  block: it is dropped and hides nothing.
- An unclosed tag runs to the end: everything after it is reasoning.
- A stray closing tag (no tag open) is dropped, never shown. When it comes
  within the first line of the reply, the text before it is reasoning: some
  models (DeepSeek-R1 style) start mid-thought and only close.
- Lead-in: text on the first line, right before the first thinking tag, of at
  most ``LEAD_IN_MAX`` characters and ending with a colon (``Here's my
  thought: ``) introduces the reasoning; it is not part of the answer, and it
  is dropped. Any other text before a tag (``Hello <think>``) stays answer.
- Several blocks are joined with a blank line; the answer is stripped.

The streaming extractor holds back only what it cannot classify yet: a
half-arrived tag (``<thi``), a run of backticks or tildes, an inline code
span until its closing backticks (or the paragraph's end), or the short
first line while it may still be a lead-in. ``extract(text)`` is the
streaming extractor fed the whole text.
"""

from __future__ import annotations

import re
from typing import Literal

TAG_NAMES = ("thinking", "thought", "antthinking", "think")
LEAD_IN_MAX = 40
MAX_TAG_LENGTH = 200
INLINE_MAX = 1000  # an inline code span closes within this many characters, or is no span

Kind = Literal["thinking", "text"]
Piece = tuple[Kind, str]

_NAMES = "|".join(sorted(TAG_NAMES, key=len, reverse=True))
# An opening tag; one whose text ends with "/" before its ">" closes itself (_empty).
_OPENING = rf"<\s{{0,3}}(?:{_NAMES})(?:\s[^<>]{{0,{MAX_TAG_LENGTH}}}|/\s{{0,3}})?>"
_TAGS = (
    rf"(?P<open>{_OPENING})"
    rf"|(?P<close><\s{{0,3}}/\s{{0,3}}(?:{_NAMES})\s{{0,3}}>)"
)
# A token that changes state in text: backticks, a tilde fence, a tag of any kind.
_TEXT_TOKEN = re.compile(rf"(?P<ticks>`+)|(?P<tildes>~{{3,}})|{_TAGS}", re.IGNORECASE)
_THINK_TOKEN = re.compile(_TAGS, re.IGNORECASE)
_FENCE_TOKEN = {"`": re.compile(r"`{3,}"), "~": re.compile(r"~{3,}")}
_PARAGRAPH_END = re.compile(r"\n[ \t]*\n")
_PARTIAL = re.compile(r"<\s{0,3}/?\s{0,3}([A-Za-z]*)(.*)\Z", re.DOTALL)
_RUNS = {n: re.compile(rf"(?<!`)`{{{n}}}(?!`)") for n in (1, 2)}


def _could_become_tag(tail: str) -> bool:
    """True when ``tail`` (starting at ``<``) may still grow into a tag."""
    if len(tail) > MAX_TAG_LENGTH + 20 or ">" in tail:
        return False
    match = _PARTIAL.match(tail)
    if match is None:
        # "<" followed only by spaces or a slash that the regex could not take yet
        return bool(re.fullmatch(r"<[\s/]*", tail))
    name, rest = match.group(1).lower(), match.group(2)
    if not rest:
        return any(t.startswith(name) for t in TAG_NAMES)
    if name in TAG_NAMES:
        return rest[0].isspace() or re.fullmatch(r"/\s*", rest) is not None
    return False


def _hold_from(text: str, start: int) -> int:
    """Where the unclassifiable tail of ``text[start:]`` begins (len(text) if none)."""
    end = len(text)
    run = end
    if run > start and text[run - 1] in "`~":
        mark = text[run - 1]
        while run > start and text[run - 1] == mark:
            run -= 1
    lt = text.rfind("<", start)
    if lt != -1 and _could_become_tag(text[lt:]):
        return min(lt, run)
    return run


def _empty(tag: str) -> bool:
    """A self-closing tag: ``<think/>``, ``<thinking id="1" />``."""
    return tag[:-1].rstrip().endswith("/")


def _span_end(text: str, start: int, ticks: int, final: bool) -> int | None:
    """Where the inline code span opened by ``ticks`` backticks ending at ``start``
    ends; -1 when those backticks open no span; None when that is not known yet."""
    limit = min(len(text), start + INLINE_MAX)
    close = _RUNS[ticks].search(text, start, limit)
    stop = close.start() if close is not None else limit
    if text.find("\n", start, stop) != -1 and _PARAGRAPH_END.search(text, start, stop):
        return -1  # the paragraph ends first: a plain backtick
    if close is not None:
        if close.end() == len(text) and not final:
            return None  # the closing run may still grow into a longer one
        return close.end()
    if final or start + INLINE_MAX <= len(text):
        return -1
    return None


class StreamingThinkingExtractor:
    """Feed chunks; get ``("thinking" | "text", piece)`` pairs as soon as they are certain."""

    def __init__(self) -> None:
        self._held = ""
        self._depth = 0  # reasoning tags open (nested ones count)
        self._fence = ""  # "`" or "~" inside a fenced block
        self._fence_length = 0
        self._lead = True  # still on the first line, before any answer text
        self._lead_text = ""
        self._blocks = 0

    def feed(self, chunk: str) -> list[Piece]:
        # Fast path, the common case: nothing held and nothing in the chunk that could
        # change state (no "<" while a tag could matter, no backtick or tilde).
        if not self._held and not self._lead and chunk:
            if self._depth:
                if "<" not in chunk:
                    return [("thinking", chunk)]
            elif "`" not in chunk and "~" not in chunk and (self._fence or "<" not in chunk):
                return [("text", chunk)]
        return self._process(self._held + chunk, final=False)

    def finish(self) -> list[Piece]:
        out = self._process(self._held, final=True)
        self._flush_lead(out)
        return out

    def _emit_text(self, out: list[Piece], text: str) -> None:
        if not text:
            return
        if self._lead:
            self._lead_text += text
            if "\n" not in self._lead_text and len(self._lead_text) <= LEAD_IN_MAX:
                return
            self._lead = False
            text, self._lead_text = self._lead_text, ""
        out.append(("text", text))

    def _flush_lead(self, out: list[Piece]) -> None:
        if self._lead_text:
            out.append(("text", self._lead_text))
            self._lead_text = ""
        self._lead = False

    def _is_lead_in(self, before: str) -> bool:
        lead = self._lead_text + before
        return (
            self._lead
            and "\n" not in lead
            and len(lead) <= LEAD_IN_MAX
            and lead.rstrip().endswith(":")
        )

    def _emit_thinking(self, out: list[Piece], text: str) -> None:
        if text:
            out.append(("thinking", text))

    def _open_block(self, out: list[Piece], before: str) -> None:
        if self._is_lead_in(before):
            self._lead_text = ""  # a lead-in: dropped
        else:
            self._emit_text(out, before)
        self._flush_lead(out)
        if self._blocks:
            out.append(("thinking", "\n\n"))
        self._blocks += 1
        self._depth = 1

    def _stray_close(self, out: list[Piece], before: str) -> None:
        if self._is_lead_in_before_close(before):
            lead, self._lead_text = self._lead_text + before, ""
            self._blocks += 1
            self._emit_thinking(out, lead)
            self._lead = False
        else:
            self._emit_text(out, before)

    def _is_lead_in_before_close(self, before: str) -> bool:
        lead = self._lead_text + before
        return self._lead and "\n" not in lead and len(lead) <= LEAD_IN_MAX

    def _process(self, text: str, *, final: bool) -> list[Piece]:
        out: list[Piece] = []
        pos = 0
        length = len(text)
        while pos < length:
            if self._depth:
                step = self._in_thinking(out, text, pos, final)
            elif self._fence:
                step = self._in_fence(out, text, pos, final)
            else:
                step = self._in_text(out, text, pos, final)
            if step < 0:  # the rest is held
                pos = -step - 1
                break
            pos = step
        self._held = text[pos:]
        return out

    # Each step consumes from ``pos`` and returns where it stopped, or -(stop + 1) when
    # what is left from ``stop`` on must wait for more text.

    def _in_thinking(self, out: list[Piece], text: str, pos: int, final: bool) -> int:
        match = _THINK_TOKEN.search(text, pos)
        if match is None:
            stop = len(text) if final else _hold_from(text, pos)
            self._emit_thinking(out, text[pos:stop])
            return -stop - 1
        self._emit_thinking(out, text[pos : match.start()])
        if match.lastgroup == "close":
            self._depth -= 1
        elif not _empty(match.group()):
            self._depth += 1
        return match.end()

    def _in_fence(self, out: list[Piece], text: str, pos: int, final: bool) -> int:
        match = _FENCE_TOKEN[self._fence].search(text, pos)
        if match is None:
            stop = len(text) if final else _hold_from(text, pos)
            self._emit_text(out, text[pos:stop])
            return -stop - 1
        if not final and match.end() == len(text):
            self._emit_text(out, text[pos : match.start()])
            return -match.start() - 1  # the run may still grow
        if self._fence == "`" or match.end() - match.start() >= self._fence_length:
            self._fence = ""
        self._emit_text(out, text[pos : match.end()])
        return match.end()

    def _in_text(self, out: list[Piece], text: str, pos: int, final: bool) -> int:
        match = _TEXT_TOKEN.search(text, pos)
        if match is None:
            stop = len(text) if final else _hold_from(text, pos)
            self._emit_text(out, text[pos:stop])
            return -stop - 1
        kind = match.lastgroup
        if not final and match.end() == len(text) and kind in ("ticks", "tildes"):
            self._emit_text(out, text[pos : match.start()])
            return -match.start() - 1  # a run at the end may still grow
        before = text[pos : match.start()]
        if kind == "ticks":
            run = match.end() - match.start()
            if run >= 3:
                self._fence, self._fence_length = "`", run
                end = match.end()
            else:
                span = _span_end(text, match.end(), run, final)
                if span is None:
                    self._emit_text(out, before)
                    return -match.start() - 1
                end = match.end() if span < 0 else span
            self._emit_text(out, text[pos:end])
            return end
        if kind == "tildes":
            self._fence, self._fence_length = "~", match.end() - match.start()
            self._emit_text(out, text[pos : match.end()])
        elif kind == "close":
            self._stray_close(out, before)
        elif _empty(match.group()):  # a self-closing tag: an empty block, dropped
            self._emit_text(out, before)
        else:
            self._open_block(out, before)
        return match.end()


class ThinkingExtractor:
    """``extract(text) -> (thinking, content)``; ``stream()`` for chunk-by-chunk use."""

    def extract(self, text: str) -> tuple[str, str]:
        stream = StreamingThinkingExtractor()
        pieces = stream.feed(text) + stream.finish()
        return join(pieces)

    def stream(self) -> StreamingThinkingExtractor:
        return StreamingThinkingExtractor()


def join(pieces: list[Piece]) -> tuple[str, str]:
    """Pieces from a stream -> (thinking, content), as ``extract`` returns them."""
    thinking = "".join(p for k, p in pieces if k == "thinking")
    content = "".join(p for k, p in pieces if k == "text")
    blocks = [b.strip() for b in thinking.split("\n\n") if b.strip()]
    return "\n\n".join(blocks), content.strip()
