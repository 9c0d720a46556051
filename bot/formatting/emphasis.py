"""Emphasis spans in a channel's markup, found so a split can close and reopen them.

A channel names its emphasis markers (``("**", "*", "~~")``: each one or two
of ``*``, ``_``, ``~`` or ``|``); ``Emphasis(markers).spans(text)`` finds the
spans they make, with CommonMark's rules: a run of markers opens only before
text (left-flanking) and closes only after it (right-flanking), ``_`` never
opens or closes inside a word (``snake_case``), and a closer pairs with the
nearest opener of its kind (the delimiter-stack algorithm, rule of three
included). Only spans that are opened *and* closed count: a lone ``*`` stays
as it was.

What is not markup is skipped: backslash escapes, code spans, fenced code
(also inside a quote), URLs (``https://…``, ``www.…`` and ``<…>`` tokens), and
a line's block prefix (a ``*`` bullet, ``#`` heading, quote ``>``). A blank
line, a list item or a heading ends every open span, as a paragraph does.
Linear in the text's length.

Not handled: a span inside one of its own kind (``*a *b* c*``, which no
channel shows as more than one) closed and reopened together reads as
another marker (``**``; ``~~~~`` at a line start opens a code fence).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import NamedTuple

MARKDOWN_EMPHASIS = ("**", "__", "*", "_", "~~")
"""Standard Markdown's (CommonMark plus ``~~`` strikethrough) emphasis markers."""

_KINDS = "*_~|"
_DEPTH = 16  # openers looked at below the top for the rule of three
_LINE = re.compile(r"[ \t]*(?:>+[ \t]*)*(?:(?:[-*+]|\d{1,9}[.)]|#{1,6}|-#)(?=[ \t\n]|$))?")
_QUOTE = re.compile(r"[ \t]*(?:>+[ \t]*)*")
_FENCE = re.compile(r"(`{3,}|~{3,})")
_BLANK = re.compile(r"\n[ \t>]*(?=\n|$)")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>]*", re.IGNORECASE)
_URL_TAIL = re.compile(r"[?!.,:;*_~|'\")\]]+$")
_TOKEN = re.compile(r"<(?:[A-Za-z][A-Za-z0-9+.-]{1,31}:|[@#!:])[^<>\s]*>")
_TICKS = re.compile(r"`+")
_ESCAPABLE = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class Span(NamedTuple):
    """One emphasis span: its opener ends at ``opened``, its closer starts at ``closes``."""

    opened: int
    closes: int
    marker: str


def _class(char: str) -> int:
    """0 whitespace (or the text's edge), 1 punctuation or symbol, 2 anything else."""
    if not char or char.isspace():
        return 0
    return 1 if unicodedata.category(char)[0] in "PS" else 2


class _Opener:
    __slots__ = ("alive", "can_close", "left", "length", "start")

    def __init__(self, start: int, left: int, length: int, can_close: bool) -> None:
        self.start = start  # where its unused markers begin; they end at start + left
        self.left = left
        self.length = length  # the whole run's length, for the rule of three
        self.can_close = can_close
        self.alive = True


class Emphasis:
    """A channel's emphasis markers, ready to find spans in its text."""

    def __init__(self, markers: Iterable[str]) -> None:
        found: dict[str, set[int]] = {}
        for marker in markers:
            if not marker or marker[0] not in _KINDS or len(marker) > 2 or len(set(marker)) > 1:
                raise ValueError(
                    f"emphasis marker {marker!r}: use one or two of the same character, "
                    f"one of {' '.join(_KINDS)} (for example '**' or '_')"
                )
            found.setdefault(marker[0], set()).add(len(marker))
        self.lengths = {char: frozenset(sizes) for char, sizes in found.items()}
        chars = re.escape("".join(self.lengths))
        self.pattern = re.compile(rf"[\\`<\n{chars}]|https?://|www\.", re.IGNORECASE)

    def __bool__(self) -> bool:
        return bool(self.lengths)

    def spans(self, text: str) -> list[Span]:
        """Every emphasis span opened and closed in ``text``, in the order they close."""
        return _Scan(self, text).run() if self.lengths else []


class _Scan:
    def __init__(self, emphasis: Emphasis, text: str) -> None:
        self.lengths = emphasis.lengths
        self.next = emphasis.pattern
        self.text = text
        self.spans: list[Span] = []
        self.order: list[_Opener] = []
        self.stacks: dict[str, list[_Opener]] = {char: [] for char in self.lengths}
        self.ticks: dict[int, list[int]] = {}
        for match in _TICKS.finditer(text):
            self.ticks.setdefault(len(match.group(0)), []).append(match.start())
        self.paragraph_end = -1

    def run(self) -> list[Span]:
        text, index = self.text, self._line(0)
        while index < len(text):
            found = self.next.search(text, index)
            if found is None:
                break
            index = self._step(found.start(), found.group(0))
        return self.spans

    def _step(self, at: int, what: str) -> int:
        text = self.text
        if what == "\n":
            return self._line(at + 1)
        if what == "\\":
            return at + 2 if text[at + 1 : at + 2] in _ESCAPABLE else at + 1
        if what == "`":
            return self._code(at)
        if what == "<":
            token = _TOKEN.match(text, at)
            return token.end() if token else at + 1
        if len(what) > 1:  # a URL, unless it starts inside a word
            if at and text[at - 1].isalnum():
                return at + 1
            url = _URL.match(text, at)
            assert url is not None
            tail = _URL_TAIL.search(url.group(0))
            return url.end() - (len(tail.group(0)) if tail else 0)
        end = at
        while end < len(text) and text[end] == what:
            end += 1
        self._run(what, at, end)
        return end

    def _line(self, start: int) -> int:
        """Past a line's block prefix; a new block (blank line, list item, heading,
        fence) ends every open span."""
        text = self.text
        prefix = _LINE.match(text, start)
        assert prefix is not None
        end = prefix.end()
        line_end = text.find("\n", end)
        rest = text[end : line_end if line_end != -1 else len(text)]
        quote = _QUOTE.match(text, start)
        assert quote is not None
        if end > quote.end() or not rest.strip():
            self._reset()
        fence = _FENCE.match(text, end)
        if fence:
            self._reset()
            return self._skip_fence(fence.group(1), end)
        return end

    def _skip_fence(self, marker: str, start: int) -> int:
        text = self.text
        line_end = text.find("\n", start)
        while line_end != -1:
            prefix = _QUOTE.match(text, line_end + 1)
            assert prefix is not None
            after = text.find("\n", prefix.end())
            line = text[prefix.end() : after if after != -1 else len(text)].strip()
            if line.startswith(marker[0] * len(marker)) and not line.strip(marker[0]):
                return after if after != -1 else len(text)
            line_end = after
        return len(text)

    def _code(self, at: int) -> int:
        """Past a code span, or past the backticks when they open none."""
        text = self.text
        end = at
        while end < len(text) and text[end] == "`":
            end += 1
        size = end - at
        if at > self.paragraph_end:
            blank = _BLANK.search(text, at)
            self.paragraph_end = blank.start() if blank else len(text)
        starts = self.ticks.get(size, [])
        found = bisect.bisect_right(starts, at)
        if found < len(starts) and starts[found] < self.paragraph_end:
            return starts[found] + size
        return end

    def _reset(self) -> None:
        for opener in self.order:
            opener.alive = False
        self.order.clear()
        for stack in self.stacks.values():
            stack.clear()

    def _run(self, char: str, start: int, end: int) -> None:
        """A run of one marker character: it closes what it can, then opens."""
        text, size = self.text, end - start
        before = _class(text[start - 1] if start else "")
        after = _class(text[end] if end < len(text) else "")
        left = after != 0 and (after != 1 or before != 2)
        right = before != 0 and (before != 1 or after != 2)
        can_open, can_close = left, right
        if char == "_":
            can_open = left and (not right or before == 1)
            can_close = right and (not left or after == 1)
        used = 0
        if can_close:
            used = self._close(char, start, size, can_open)
        if size - used >= min(self.lengths[char]) and can_open:
            opener = _Opener(start + used, size - used, size, can_close)
            self.order.append(opener)
            self.stacks[char].append(opener)

    def _close(self, char: str, start: int, size: int, can_open: bool) -> int:
        lengths, used = self.lengths[char], 0
        while size - used > 0:
            opener = self._opener(char, size, can_open)
            if opener is None:
                break
            both = opener.left >= 2 and size - used >= 2
            take = 2 if 2 in lengths and both else 1 if 1 in lengths else 0
            if take == 0:
                break
            end = opener.start + opener.left
            self.spans.append(Span(end, start + used, char * take))
            opener.left -= take
            used += take
            while self.order[-1] is not opener:  # what opened in between stays text
                self.order.pop().alive = False
            if opener.left < min(lengths):
                self.order.pop().alive = False
        return used

    def _opener(self, char: str, size: int, can_open: bool) -> _Opener | None:
        stack = self.stacks[char]
        while stack and not stack[-1].alive:
            stack.pop()
        three = len(self.lengths[char]) == 2
        for opener in stack[: -_DEPTH - 1 : -1]:
            if not opener.alive:
                continue
            odd = (opener.length + size) % 3 == 0 and (opener.length % 3 or size % 3)
            if three and (opener.can_close or can_open) and odd:
                continue
            return opener
        return None


def open_at(spans: list[Span], positions: list[int]) -> list[tuple[str, ...]]:
    """For each position (ascending), the markers of the spans open across it, outermost first."""
    ordered = sorted(spans)
    stack: list[Span] = []
    found: list[tuple[str, ...]] = []
    index = 0
    for position in positions:
        while index < len(ordered) and ordered[index].opened <= position:
            span = ordered[index]
            while stack and stack[-1].closes < span.opened:
                stack.pop()
            stack.append(span)
            index += 1
        while stack and stack[-1].closes < position:
            stack.pop()
        found.append(tuple(span.marker for span in stack))
    return found


def deepest(spans: list[Span], measure: Callable[[str], int] = len) -> int:
    """The most markers open at once, measured: a bound for what a split adds at each end."""
    events = sorted(
        [(s.opened, 1, s.marker) for s in spans] + [(s.closes, 0, s.marker) for s in spans]
    )
    depth = most = 0
    for _, opens, marker in events:
        depth += measure(marker) if opens else -measure(marker)
        most = max(most, depth)
    return most
