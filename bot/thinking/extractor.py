"""Separate a model's reasoning from its answer, in one piece or as it streams.

Rules:

- Reasoning sits in ``<thinking>``, ``<thought>``, ``<antthinking>`` or
  ``<think>`` tags: any case, optional spaces (``< think >``) and attributes
  (``<thinking type="plan">``). Tags inside inline code (`` `<think>` ``) or
  a fenced block are text, not tags.
- An unclosed tag runs to the end: everything after it is reasoning.
- A stray closing tag (no tag open) is dropped, never shown. When it comes
  within the first line of the reply, the text before it is reasoning: some
  models (DeepSeek-R1 style) start mid-thought and only close.
- Lead-in: text on the first line, before the first thinking tag, of at most
  ``LEAD_IN_MAX`` characters (``Here's my thought: ``) introduces the
  reasoning; it is not part of the answer, and it is dropped. A paragraph or
  any text after a line break stays answer.
- Several blocks are joined with a blank line; the answer is stripped.

The streaming extractor holds back only what it cannot classify yet: a
half-arrived tag (``<thi``), a run of backticks, or the short first line
while it may still be a lead-in. Each chunk is scanned once (regular
expressions from the last held position), so the work is linear in the input.
``extract(text)`` is the streaming extractor fed the whole text.
"""

from __future__ import annotations

import re
from typing import Literal

TAG_NAMES = ("thinking", "thought", "antthinking", "think")
LEAD_IN_MAX = 40
MAX_TAG_LENGTH = 200

Kind = Literal["thinking", "text"]
Piece = tuple[Kind, str]

_NAMES = "|".join(sorted(TAG_NAMES, key=len, reverse=True))
# A token that changes state in text: a fence, a backtick, an opening or closing tag.
_TEXT_TOKEN = re.compile(
    rf"(?P<ticks>`+)|(?P<open><\s{{0,3}}(?:{_NAMES})(?:\s[^<>]{{0,{MAX_TAG_LENGTH}}})?>)"
    rf"|(?P<close><\s{{0,3}}/\s{{0,3}}(?:{_NAMES})\s{{0,3}}>)",
    re.IGNORECASE,
)
_CLOSE = re.compile(rf"<\s{{0,3}}/\s{{0,3}}(?:{_NAMES})\s{{0,3}}>", re.IGNORECASE)
_PARTIAL = re.compile(r"<\s{0,3}/?\s{0,3}([A-Za-z]*)(.*)\Z", re.DOTALL)


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
        return rest[0].isspace()
    return False


def _hold_from(text: str, start: int) -> int:
    """Where the unclassifiable tail of ``text[start:]`` begins (len(text) if none)."""
    end = len(text)
    ticks = end
    while ticks > start and text[ticks - 1] == "`":
        ticks -= 1
    lt = text.rfind("<", start)
    if lt != -1 and _could_become_tag(text[lt:]):
        return min(lt, ticks)
    return ticks


class StreamingThinkingExtractor:
    """Feed chunks; get ``("thinking" | "text", piece)`` pairs as soon as they are certain."""

    def __init__(self) -> None:
        self._held = ""
        self._in_think = False
        self._in_fence = False
        self._inline_ticks = 0  # the length of the backtick run that opened inline code
        self._lead = True  # still on the first line, before any answer text
        self._lead_text = ""
        self._blocks = 0

    def feed(self, chunk: str) -> list[Piece]:
        # Fast path, the common case: nothing held and nothing in the chunk that could
        # change state (no "<" while a tag could matter, no backtick).
        if not self._held and not self._lead and chunk:
            if self._in_think:
                if "<" not in chunk:
                    return [("thinking", chunk)]
            elif "`" not in chunk and (self._in_fence or self._inline_ticks or "<" not in chunk):
                return [("text", chunk)]
        return self._process(self._held + chunk, final=False)

    def finish(self) -> list[Piece]:
        out = self._process(self._held, final=True)
        if self._lead and self._lead_text:
            out.append(("text", self._lead_text))
            self._lead_text = ""
        self._lead = False
        return out

    def _emit_text(self, out: list[Piece], text: str) -> None:
        if not text:
            return
        if self._lead:
            self._lead_text += text
            newline = self._lead_text.find("\n")
            if newline != -1 or len(self._lead_text) > LEAD_IN_MAX:
                self._lead = False
                text, self._lead_text = self._lead_text, ""
            else:
                return
        out.append(("text", text))

    def _is_lead_in(self, before: str) -> bool:
        lead = self._lead_text + before
        return self._lead and "\n" not in lead and len(lead) <= LEAD_IN_MAX

    def _emit_thinking(self, out: list[Piece], text: str) -> None:
        if text:
            out.append(("thinking", text))

    def _open_block(self, out: list[Piece]) -> None:
        self._lead = False
        self._lead_text = ""
        if self._blocks:
            out.append(("thinking", "\n\n"))
        self._blocks += 1
        self._in_think = True

    def _process(self, text: str, *, final: bool) -> list[Piece]:
        out: list[Piece] = []
        pos = 0
        length = len(text)
        while pos < length:
            if self._in_think:
                match = _CLOSE.search(text, pos)
                if match is None:
                    stop = length if final else _hold_from(text, pos)
                    self._emit_thinking(out, text[pos:stop])
                    pos = stop
                    break
                self._emit_thinking(out, text[pos : match.start()])
                self._in_think = False
                pos = match.end()
                continue
            match = _TEXT_TOKEN.search(text, pos)
            if match is None:
                stop = length if final else _hold_from(text, pos)
                self._emit_text(out, text[pos:stop])
                pos = stop
                break
            if not final and match.end() == length and match.lastgroup == "ticks":
                # a run of backticks at the end may still grow
                self._emit_text(out, text[pos : match.start()])
                pos = match.start()
                break
            kind = match.lastgroup
            if kind == "ticks":
                run = match.end() - match.start()
                if self._inline_ticks:
                    if run == self._inline_ticks:
                        self._inline_ticks = 0
                elif run >= 3:
                    self._in_fence = not self._in_fence
                elif not self._in_fence:
                    self._inline_ticks = run
                self._emit_text(out, text[pos : match.end()])
            elif self._in_fence or self._inline_ticks:
                self._emit_text(out, text[pos : match.end()])
            elif kind == "open":
                before = text[pos : match.start()]
                if self._is_lead_in(before):
                    self._lead_text = ""  # a lead-in: dropped
                else:
                    self._emit_text(out, before)
                self._open_block(out)
            else:  # a stray closing tag
                before = text[pos : match.start()]
                if self._is_lead_in(before):
                    lead, self._lead_text = self._lead_text + before, ""
                    self._blocks += 1
                    self._emit_thinking(out, lead)
                    self._lead = False
                else:
                    self._emit_text(out, before)
            pos = match.end()
        self._held = text[pos:]
        return out


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
