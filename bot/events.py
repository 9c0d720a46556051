"""Events yielded by ``AgentRuntime.run``.

Every event is ``AgentEvent(type, data)``. ``type`` is one of the closed set
``EventType``; ``data`` is a plain dict whose keys, per type, are (one
``TypedDict`` each below, used where events are built):

=========== ================================================================
type        data
=========== ================================================================
queue       ``position`` (int, 1 = next), ``lane`` (str)
thinking    ``content`` (str delta or whole block), ``mode`` ("on"|"stream")
text        ``delta`` (str)
tool_call   ``id``, ``name``, ``arguments`` (dict)
tool_result ``id``, ``name``, ``content`` (str), ``is_error`` (bool),
            ``display`` (str: formatted for the channel, may be "")
failover    ``from``, ``to`` (model refs), ``reason`` (str)
compaction  ``strategy``, ``before_tokens``, ``after_tokens``, ``dropped`` (int:
            messages no longer sent), ``fallback`` (bool: the summary failed, so
            recent messages were kept instead), ``forced`` (bool: after the
            provider said the context overflowed)
done        ``text`` (the final answer), ``model``, ``usage`` (dict),
            ``thinking`` (the reasoning, in mode ``on``; else ""),
            ``stop_reason`` (why the last model call stopped: "end",
            "tool_use", "max_tokens", "refusal", a provider's own, or None)
error       ``message`` (a plain sentence for the user), ``reason``,
            ``retry_after`` (seconds or None), ``error`` (the ``ProviderError``,
            for code; never shown to people)
=========== ================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from bot.providers.errors import ProviderError


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


class QueueData(TypedDict):
    position: int
    lane: str


class ThinkingData(TypedDict):
    content: str
    mode: str


class TextData(TypedDict):
    delta: str


class ToolCallData(TypedDict):
    id: str
    name: str
    arguments: dict[str, Any]


class ToolResultData(TypedDict):
    id: str
    name: str
    content: str
    is_error: bool
    display: str


# "from" is a keyword, so this one is spelled the functional way.
FailoverData = TypedDict("FailoverData", {"from": str, "to": str, "reason": str})


class CompactionData(TypedDict):
    strategy: str
    before_tokens: int
    after_tokens: int
    dropped: int
    fallback: bool
    forced: bool


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int


class DoneData(TypedDict):
    text: str
    model: str
    usage: Usage
    thinking: str
    stop_reason: str | None


class ErrorData(TypedDict):
    message: str
    reason: str
    retry_after: float | None
    error: ProviderError


EventData = (
    QueueData
    | ThinkingData
    | TextData
    | ToolCallData
    | ToolResultData
    | FailoverData
    | CompactionData
    | DoneData
    | ErrorData
)


@dataclass(frozen=True, slots=True, init=False)
class AgentEvent:
    """One step of a turn, as the plan shapes it: ``AgentEvent("text", {"delta": "hi"})``.

    ``data`` accepts any mapping (the ``TypedDict`` of its type where the runtime
    builds it, so mypy checks the keys) and is a plain dict once stored."""

    type: EventType
    data: dict[str, Any]

    def __init__(self, type: EventType | str, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "type", type if isinstance(type, EventType) else EventType(type))
        object.__setattr__(self, "data", data if isinstance(data, dict) else dict(data or {}))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]
