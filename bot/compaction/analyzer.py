"""Token counts: exact with a vocabulary when asked, estimated without one on a turn.

``TokenAnalyzer`` counts exactly. OpenAI models are counted with their own
encodings (``o200k_base`` for gpt-4o, gpt-4.1, gpt-5 and the o-series;
``cl100k_base`` for gpt-4 and gpt-3.5), from ``bpe-openai``, which ships the
vocabularies inside the wheel (tiktoken downloads them at run time, which
fails offline), plus the chat format's overhead: 3 tokens per message and 3
to prime the reply. Claude's tokenizer is not public and its counting
endpoint needs the network, so Claude models are counted with ``o200k_base``
times ``CLAUDE_FACTOR``: Claude's tokenizer yields more tokens than OpenAI's
for the same text (about 10-20% more for English prose and more for code, by
published comparisons); 1.25 errs on the side of over-counting. Unknown
models get ``o200k_base`` times ``UNKNOWN_FACTOR``.

The vocabulary costs memory: importing ``bpe_openai`` and building
``o200k_base`` adds about 140 MB to a process (63 MB for the library's
mapped tables, 75 MB for the encoding), nearly as much as the rest of
``chatlane serve`` together; tiktoken given the same vocabulary file holds
as much. So the turn path does not use it. ``TokenEstimator`` counts without
a vocabulary: it splits text as ``o200k_base``'s pre-tokenizer does (every
piece is at least one token), adds one token per 7 lowercase letters and
per 3 marks in a row (long words and symbol runs that BPE splits), weighs
characters beyond Latin (0.3 for Greek to Thai, 1 for CJK, 2 for emoji and
other astral characters), and adds ``ESTIMATE_MARGIN`` (15%). Estimate over
exact ``o200k_base`` count, for chat-sized samples (40 to 3,000 characters)
of this project's docs and code, package metadata, JSON files, a dozen
languages, and random strings:

=================  ====  ======  ====  ===========================
text               p5    median  p95   under-counted (worst)
=================  ====  ======  ====  ===========================
prose              1.00  1.25    1.45  3.7% of samples (0.80)
code               1.12  1.28    1.50  0.7% (0.79)
JSON               1.01  1.17    1.29  4.0% (0.85)
12 languages       1.21  1.47    2.00  1.6% (0.91)
base64, hex, ids   0.54  1.03    1.26  50% (0.48)
=================  ====  ======  ====  ===========================

(``cl100k_base`` models get heavier weights beyond Latin, since that
encoding splits those scripts finer; it still under-counts accented Latin
such as Turkish by up to a third.) It takes about as long as the exact
count (0.5 to 2.5 times, both about a millisecond per 2,000 characters: time
was never the problem) and holds no memory. Random machine strings are what
it under-counts; the threshold's headroom (20% by default) and the
provider's count below cover them.

The runtime does better than either for the number that decides: the
provider's own count. After each request it reports ``usage.input_tokens``
(system prompt and tools included, with the model's real tokenizer, which
for Claude no local count has), and the next request is sized as that count
plus an estimate of what was added since (see ``bot.context``). Estimates
are used alone only before a chat's first answer in this process and right
after a compaction, and to choose what a compaction keeps. Loading the
vocabulary only when a chat nears its budget was tried on paper and
dropped: a chat compacted once stays near its budget on every turn, so one
long chat would bring the 140 MB back for good.

``TokenAnalyzer`` caches per-message counts (a bounded LRU keyed by the
message's content), so counting a transcript again costs a dictionary
lookup per message.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from typing import Any, Protocol

from bot.messages import IMAGE_TOKENS, Message

CLAUDE_FACTOR = 1.25
UNKNOWN_FACTOR = 1.1
PER_MESSAGE = 3
REPLY_PRIMING = 3
CACHE_SIZE = 10_000
ESTIMATE_MARGIN = 1.15

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "text-embedding")


class TokenCounter(Protocol):
    """What compaction needs from a counter; ``TokenAnalyzer`` and ``TokenEstimator`` fit."""

    def count_text(self, text: str) -> int: ...

    def count_message(self, message: Message) -> int: ...

    def count_messages(self, messages: Iterable[Message]) -> int: ...


@cache
def _encoding(name: str) -> Any:
    import warnings

    import bpe_openai  # about 140 MB with a vocabulary: only when an exact count is asked for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bpe_openai.get_encoding(name)


def encoding_for(model: str) -> tuple[str, float]:
    """(encoding name, factor) for a model name (with or without ``provider/``)."""
    name = model.rpartition("/")[2].lower()
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base", 1.0
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base", 1.0
    if name.startswith("claude") or "claude" in name:
        return "o200k_base", CLAUDE_FACTOR
    return "o200k_base", UNKNOWN_FACTOR


class TokenAnalyzer:
    """Exact counts with the model's vocabulary (loaded on the first count)."""

    def __init__(self, model: str = "gpt-4o") -> None:
        self.model = model
        self.encoding_name, self.factor = encoding_for(model)
        self._cache: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self.encoded = 0  # texts actually tokenized (not served from the cache)

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        self.encoded += 1
        raw = len(_encoding(self.encoding_name).encode_ordinary(text))
        return int(raw * self.factor + 0.999)

    @staticmethod
    def _key(message: Message) -> tuple[Any, ...]:
        calls = tuple(
            (c.id, c.name, json.dumps(c.arguments, sort_keys=True)) for c in message.tool_calls
        )
        return (
            message.role,
            message.content,
            calls,
            message.tool_call_id,
            message.name,
            len(message.attachments),
        )

    def count_message(self, message: Message) -> int:
        key = self._key(message)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        total = PER_MESSAGE + self.count_text(message.content)
        for call in message.tool_calls:
            total += self.count_text(call.name) + self.count_text(
                json.dumps(call.arguments, ensure_ascii=False)
            )
            total += PER_MESSAGE
        if message.name:
            total += 1
        total += IMAGE_TOKENS * len(message.attachments)
        self._cache[key] = total
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return total

    def count_messages(self, messages: Iterable[Message]) -> int:
        return REPLY_PRIMING + sum(self.count_message(m) for m in messages)


# o200k_base's pre-tokenizer in the standard library's dialect (no \p{..} classes)
_PIECES = re.compile(
    r"[^\r\n\w]?(?:[A-Z]*[a-z]+|[A-Z]+[a-z]*|[^\W\d_]+)(?:'[a-zA-Z]{1,2})?"
    r"|\d{1,3}"
    r"| ?(?:[^\s\w]|_)+[\r\n/]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = re.compile(r"[a-z]{7}|[^\s\w]{3}")
_SCRIPTS = re.compile(r"[\u0370-\u2dff]")  # Greek, Cyrillic, ..., Devanagari, Thai, symbols
_CJK = re.compile(r"[\u2e80-\uffff]")
_ASTRAL = re.compile(r"[\U00010000-\U0010ffff]")  # emoji and rarer scripts
_WEIGHTS = {"o200k_base": (0.3, 1.0, 2.0), "cl100k_base": (0.8, 1.6, 3.0)}


class TokenEstimator:
    """A conservative count without a vocabulary (see the module docstring for its error)."""

    def __init__(self, model: str = "gpt-4o") -> None:
        self.model = model
        encoding, factor = encoding_for(model)
        self.factor = factor * ESTIMATE_MARGIN
        self._weights = _WEIGHTS[encoding]

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        pieces: float = len(_PIECES.findall(text)) + len(_SPLITS.findall(text))
        if not text.isascii():
            scripts, cjk, astral = self._weights
            pieces += (
                scripts * len(_SCRIPTS.findall(text))
                + cjk * len(_CJK.findall(text))
                + astral * len(_ASTRAL.findall(text))
            )
        return math.ceil(pieces * self.factor)

    def count_message(self, message: Message) -> int:
        total = PER_MESSAGE + self.count_text(message.content)
        for call in message.tool_calls:
            total += PER_MESSAGE + self.count_text(call.name)
            total += self.count_text(json.dumps(call.arguments, ensure_ascii=False))
        if message.name:
            total += 1
        if message.thinking_signature:  # reasoning that is sent back (Anthropic tool loops)
            total += self.count_text(message.thinking)
        return total + IMAGE_TOKENS * len(message.attachments)

    def count_messages(self, messages: Iterable[Message]) -> int:
        return REPLY_PRIMING + sum(self.count_message(m) for m in messages)
