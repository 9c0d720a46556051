"""Token counts that work offline and cost time only for what is new.

OpenAI models are counted exactly with their own encodings (``o200k_base``
for gpt-4o, gpt-4.1, gpt-5 and the o-series; ``cl100k_base`` for gpt-4 and
gpt-3.5), from ``bpe-openai``, which ships the vocabularies inside the wheel
(tiktoken downloads them at run time, which fails offline), plus the chat
format's overhead: 3 tokens per message and 3 to prime the reply.

Claude's tokenizer is not public and its counting endpoint needs the
network, so Claude models are counted with ``o200k_base`` times
``CLAUDE_FACTOR``. Claude's tokenizer yields more tokens than OpenAI's for
the same text (about 10-20% more for English prose and more for code, by
published comparisons); 1.25 errs on the side of over-counting, so a
compaction happens a little early rather than a request overflowing. Expect
counts within roughly -5% to +25% of Anthropic's ``usage.input_tokens``.
Unknown models get ``o200k_base`` times ``UNKNOWN_FACTOR``.

Per-message counts are cached (bounded LRU keyed by the message's content),
so counting a transcript again costs a dictionary lookup per message.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from typing import Any

from bot.messages import Message

CLAUDE_FACTOR = 1.25
UNKNOWN_FACTOR = 1.1
PER_MESSAGE = 3
REPLY_PRIMING = 3
CACHE_SIZE = 200_000

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "text-embedding")


@cache
def _encoding(name: str) -> Any:
    import warnings

    import bpe_openai  # loading the vocabularies takes a moment: only when first needed

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
        return (message.role, message.content, calls, message.tool_call_id, message.name)

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
        self._cache[key] = total
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return total

    def count_messages(self, messages: Iterable[Message]) -> int:
        return REPLY_PRIMING + sum(self.count_message(m) for m in messages)
