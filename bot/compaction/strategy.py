"""Fit a conversation into a token budget without breaking it.

Messages are grouped into units that live or go together: a user message;
an assistant message with the tool results that answer its calls. A tool
result whose call is gone is never sent. The newest user message and
everything after it (the turn in progress) always stay, and so does the
system prompt. What is sent starts with a user message, as Anthropic
requires.

- ``KEEP_RECENT``: the newest units that fit.
- ``KEEP_IMPORTANT``: first what matters, then the newest that fit. What
  matters: the first user message (it usually says what the chat is for),
  pinned messages, tool failures (with their call), and decisions: user
  messages that state a lasting instruction or fact ("remember", "always",
  "never", "from now on", "my name is", "I prefer", "we decided", "don't").
  If those alone overflow, the oldest of them go first.
- ``SUMMARIZE``: the dropped part is summarized by the model (the runtime
  calls it) and the summary rides in front; without a summary it is
  ``KEEP_RECENT``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from bot.compaction.analyzer import REPLY_PRIMING, TokenAnalyzer, TokenCounter
from bot.messages import Message, Role

DECISION = re.compile(
    r"\b(remember|always|never|from now on|my name is|call me|i prefer|we decided|"
    r"i decided|don't|do not|make sure)\b",
    re.IGNORECASE,
)


class CompactionStrategy(str, Enum):
    KEEP_RECENT = "recent"
    KEEP_IMPORTANT = "important"
    SUMMARIZE = "summarize"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> CompactionStrategy | None:
        aliases = {"keep_recent": "recent", "keep_important": "important"}
        if isinstance(value, str):
            key = value.strip().lower()
            key = aliases.get(key, key)
            for member in cls:
                if member.value == key:
                    return member
        return None


def parse_strategy(value: str) -> CompactionStrategy:
    try:
        return CompactionStrategy(value)
    except ValueError:
        raise ValueError(
            f"unknown compaction strategy {value!r}; use recent, keep_important or summarize"
        ) from None


@dataclass
class _Unit:
    messages: list[Message]
    tokens: int
    important: bool = False


def _units(messages: list[Message], analyzer: TokenCounter) -> list[_Unit]:
    units: list[_Unit] = []
    answered: dict[str, _Unit] = {}
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if message.role is Role.TOOL:
            owner = answered.get(message.tool_call_id or "")
            if owner is not None:
                owner.messages.append(message)
                owner.tokens += analyzer.count_message(message)
                if message.is_error:
                    owner.important = True
            continue
        unit = _Unit([message], analyzer.count_message(message), important=message.pinned)
        units.append(unit)
        for call in message.tool_calls:
            answered[call.id] = unit
    return units


def _complete(unit: _Unit) -> bool:
    """An assistant unit with calls must carry a result for each call."""
    head = unit.messages[0]
    if not head.tool_calls:
        return True
    answered = {m.tool_call_id for m in unit.messages[1:]}
    return all(call.id in answered for call in head.tool_calls)


class CompactionManager:
    def __init__(self, analyzer: TokenCounter | None = None) -> None:
        self.analyzer: TokenCounter = analyzer or TokenAnalyzer()

    def should_compact(
        self, messages: list[Message], max_tokens: int, threshold: float, reserve: int = 0
    ) -> bool:
        return self.analyzer.count_messages(messages) > max_tokens * threshold - reserve

    def compact(
        self, messages: list[Message], target_tokens: int, strategy: CompactionStrategy
    ) -> list[Message]:
        """The messages to send, within ``target_tokens`` when that is possible at all."""
        strategy = CompactionStrategy(strategy)
        systems = [m for m in messages if m.role is Role.SYSTEM]
        units = _units(messages, self.analyzer)
        last_user = max(
            (i for i, u in enumerate(units) if u.messages[0].role is Role.USER), default=None
        )
        keep: set[int] = set(range(last_user, len(units))) if last_user is not None else set()
        budget = (
            target_tokens - REPLY_PRIMING - sum(self.analyzer.count_message(m) for m in systems)
        )
        budget -= sum(units[i].tokens for i in keep)
        if strategy is CompactionStrategy.KEEP_IMPORTANT:
            first_user = next(
                (i for i, u in enumerate(units) if u.messages[0].role is Role.USER), None
            )
            important = [
                i
                for i, unit in enumerate(units)
                if i not in keep
                and (
                    unit.important
                    or i == first_user
                    or (
                        unit.messages[0].role is Role.USER
                        and DECISION.search(unit.messages[0].content)
                    )
                )
            ]
            # newest important first, so the oldest are the ones left out
            for i in reversed(important):
                if units[i].tokens <= budget and _complete(units[i]):
                    keep.add(i)
                    budget -= units[i].tokens
        for i in range(len(units) - 1, -1, -1):
            if i in keep or not _complete(units[i]):
                continue
            if units[i].tokens > budget:
                break
            keep.add(i)
            budget -= units[i].tokens
        chosen = [units[i] for i in sorted(keep)]
        while chosen and chosen[0].messages[0].role is not Role.USER:
            chosen.pop(0)
        return [*systems, *(m for unit in chosen for m in unit.messages)]
