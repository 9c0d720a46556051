"""Events yielded by ``AgentRuntime.run``.

Every event is ``AgentEvent(type, data)``. ``type`` is one of the closed set
``EventType``; ``data`` is a plain dict whose keys, per type, are:

========== ================================================================
type       data
========== ================================================================
queue      ``position`` (int, 1 = next), ``lane`` (str)
thinking   ``content`` (str delta or whole block), ``mode`` ("on"|"stream")
text       ``delta`` (str)
tool_call  ``id``, ``name``, ``arguments`` (dict)
tool_result ``id``, ``name``, ``content`` (str), ``is_error`` (bool),
           ``display`` (str: formatted for the channel, may be "")
failover   ``from``, ``to`` (model refs), ``reason`` (str)
compaction ``strategy``, ``before_tokens``, ``after_tokens``, ``dropped``
done       ``text`` (the final answer), ``model``, ``usage`` (dict),
           ``thinking`` (the reasoning, in mode ``on``; else "")
error      ``message`` (a plain sentence for the user), ``reason``,
           ``retry_after`` (seconds or None), ``error`` (the ``ProviderError``,
           for code; never shown to people)
========== ================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class EventType(str, Enum):
    QUEUE = "queue"
    THINKING = "thinking"
    TEXT = "text"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    FAILOVER = "failover"
    COMPACTION = "compaction"
    DONE = "done"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One step of a turn, as the plan shapes it: ``AgentEvent("text", {"delta": "hi"})``."""

    type: EventType
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.type, EventType):
            object.__setattr__(self, "type", EventType(self.type))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]
