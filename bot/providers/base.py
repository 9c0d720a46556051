"""What every provider speaks: one request in, one stream of typed deltas out.

A provider turns a ``ModelRequest`` into an async stream of ``Delta``. It
raises only ``ProviderError`` (classified from the SDK's exception, including
errors that arrive in the middle of a stream). SDK-side retries are off: the
runtime owns retry, rotation and fallback.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.messages import Message, ToolCall


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of an object


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str  # the provider's own model name (no "provider/" prefix)
    messages: tuple[Message, ...]  # system message first when present
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 4096
    thinking_budget: int | None = None  # request native reasoning when set
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    text: str
    signature: str | None = None  # set once, when the provider sends it


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    call: ToolCall  # emitted once the call's arguments are complete


@dataclass(frozen=True, slots=True)
class UsageDelta:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class StopDelta:
    """Why the model stopped; the last delta of a call. The runtime tells the person when
    a reply ends early ("max_tokens", "refusal") and puts the reason in ``done``."""

    reason: str  # "end", "tool_use", "max_tokens", "refusal", or provider-specific


Delta = TextDelta | ThinkingDelta | ToolCallDelta | UsageDelta | StopDelta


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str  # as used in "name/model"
    kind: str  # "anthropic" | "openai" | "demo"
    base_url: str | None = None
    needs_key: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    info: ProviderInfo

    def stream(self, request: ModelRequest, api_key: str | None) -> AsyncGenerator[Delta, None]:
        """Stream one model call. Raises ``ProviderError``."""
        ...

    async def aclose(self) -> None: ...
