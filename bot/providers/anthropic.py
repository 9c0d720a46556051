"""Anthropic Messages API, streamed, over the official SDK (retries off)."""

from __future__ import annotations

import base64
import json
import logging
import re
import warnings
from collections.abc import AsyncGenerator, Container
from functools import cache
from typing import TYPE_CHECKING, Any

from bot.messages import Message, Role, ToolCall, image_note
from bot.providers.base import (
    Delta,
    ModelRequest,
    ProviderInfo,
    StopDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolSpec,
    UsageDelta,
)
from bot.providers.classify import sdk_classifier, stream_failures
from bot.providers.errors import FailoverReason, ProviderError
from bot.providers.kind import ProviderKind

if TYPE_CHECKING:
    import anthropic  # about 45 MB: imported by the first client, not for every process

log = logging.getLogger(__name__)


class _AllModels:
    def __contains__(self, model: object) -> bool:
        return True


@cache
def _sdk_warns_about() -> Container[str]:
    """The models the SDK warns about when called (retired, or thinking-related)."""
    try:
        from anthropic._data import DEPRECATED_MODELS, MODELS_TO_WARN_WITH_THINKING_ENABLED
    except ImportError:  # pragma: no cover - a later SDK moved them: catch on every call
        return _AllModels()
    return frozenset(DEPRECATED_MODELS) | frozenset(MODELS_TO_WARN_WITH_THINKING_ENABLED)


STOP_REASONS = {
    "end_turn": "end",
    "stop_sequence": "end",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "refusal": "refusal",
    "pause_turn": "end",
}


def adaptive_thinking(model: str) -> bool:
    """Claude 4.6 and later choose their own thinking budget ("adaptive")."""
    match = re.match(r"claude-[a-z]+-(\d+)(?:-(\d{1,2}))?(?:-|$)", model)
    if match is None:
        return False
    version = (int(match.group(1)), int(match.group(2) or 0))
    return version >= (4, 6)


def _user_blocks(message: Message, vision: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for image in message.attachments:
        if vision and image.data is not None:
            data = base64.b64encode(image.data).decode("ascii")
            source = {"type": "base64", "media_type": image.mime, "data": data}
            blocks.append({"type": "image", "source": source})
        else:
            blocks.append({"type": "text", "text": image_note(image, vision=vision)})
    if message.content or not blocks:
        blocks.append({"type": "text", "text": message.content or "(empty message)"})
    return blocks


def to_wire(
    messages: tuple[Message, ...], *, vision: bool = True
) -> tuple[str | None, list[dict[str, Any]]]:
    """Our transcript -> (system, messages) in the Messages API shape.

    Tool results become ``tool_result`` blocks in a user message (consecutive
    results share one message); same-role neighbours are merged, since the
    API wants the roles to alternate.
    """
    system_parts: list[str] = []
    wire: list[dict[str, Any]] = []
    last_role = ""  # the role of wire[-1]; one loop, no helper call: this runs every turn
    for message in messages:
        role = message.role
        if role is Role.SYSTEM:
            system_parts.append(message.content)
            continue
        if role is Role.USER:
            side = "user"
            blocks: list[dict[str, Any]] = (
                _user_blocks(message, vision)
                if message.attachments
                else [{"type": "text", "text": message.content or "(empty message)"}]
            )
        elif role is Role.TOOL:
            side = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id or "",
                    "content": message.content or "(no output)",
                    "is_error": message.is_error,
                }
            ]
        else:
            side = "assistant"
            blocks = []
            if message.thinking and message.thinking_signature:
                blocks.append(
                    {
                        "type": "thinking",
                        "thinking": message.thinking,
                        "signature": message.thinking_signature,
                    }
                )
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            for c in message.tool_calls:
                blocks.append(
                    {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                )
            if not blocks:
                blocks.append({"type": "text", "text": "(no answer)"})
        if side == last_role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": side, "content": blocks})
            last_role = side
    return ("\n\n".join(system_parts) or None), wire


class AnthropicProvider:
    def __init__(self, info: ProviderInfo, *, timeout: float = 120.0) -> None:
        self.info = info
        self.timeout = timeout
        self._clients: dict[str, anthropic.AsyncAnthropic] = {}
        self._warned: set[tuple[str, str]] = set()
        self._tools_for: tuple[ToolSpec, ...] | None = None
        self._tools_wire: list[dict[str, Any]] = []

    def client(self, api_key: str | None) -> anthropic.AsyncAnthropic:
        key = api_key or "no-key"
        found = self._clients.get(key)
        if found is None:
            import anthropic

            found = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=self.info.base_url or None,
                max_retries=0,
                timeout=self.timeout,
                # the SDK's aiohttp transport: about 1 ms of CPU less a streamed turn than
                # its default httpx one (whose pool re-checks every idle connection per call)
                http_client=anthropic.DefaultAioHttpClient(timeout=self.timeout),
            )
            self._clients[key] = found
        return found

    def _tool_params(self, tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
        # The registry hands out the same tuple until its tools change: convert it once.
        if self._tools_for is not tools:
            self._tools_wire = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
            self._tools_for = tools
        return self._tools_wire

    def build_params(self, request: ModelRequest) -> dict[str, Any]:
        system, wire = to_wire(request.messages, vision=self.info.extra.get("vision", True))
        params: dict[str, Any] = {
            "model": request.model,
            "messages": wire,
            "max_tokens": request.max_tokens,
            "stream": True,
        }
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = self._tool_params(request.tools)
        if request.thinking_budget and adaptive_thinking(request.model):
            params["thinking"] = {"type": "adaptive", "display": "summarized"}
        elif request.thinking_budget:
            params["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
            params["max_tokens"] = max(request.max_tokens, request.thinking_budget + 1024)
        elif request.temperature is not None:
            params["temperature"] = request.temperature
        return params

    async def stream(
        self, request: ModelRequest, api_key: str | None
    ) -> AsyncGenerator[Delta, None]:
        import anthropic

        params = self.build_params(request)
        tool_blocks: dict[int, dict[str, Any]] = {}
        try:
            if request.model in _sdk_warns_about():
                # The SDK warns about retired models on every call: catch it, log it once.
                # (Only then: catching warnings costs about 0.4 ms a call.)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    events = await self.client(api_key).messages.create(**params)
                for warning in caught:
                    self._warn_once(request.model, str(warning.message))
            else:
                events = await self.client(api_key).messages.create(**params)
            stopped = False
            async with events:
                async for event in events:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield TextDelta(event.delta.text)  # most events: no call, no list
                        continue
                    for delta in self._map(event, tool_blocks):
                        yield delta
                    stopped = stopped or event.type == "message_stop"
            if not stopped:  # the body ended early: what came is not the whole reply
                raise ProviderError(
                    FailoverReason.CONNECTION,
                    "the stream ended before its message_stop event",
                    provider=self.info.name,
                    model=request.model,
                )
        except anthropic.AnthropicError as exc:
            raise classify_error(exc, provider=self.info.name, model=request.model) from exc
        except stream_failures() as exc:  # a reset mid-stream too
            raise classify_error(exc, provider=self.info.name, model=request.model) from exc

    def _warn_once(self, model: str, message: str) -> None:
        # The SDK warns about retired models on every call; the operator needs it once.
        if (model, message) not in self._warned:
            self._warned.add((model, message))
            log.warning("anthropic: %s", message.splitlines()[0])

    def _map(self, event: Any, tool_blocks: dict[int, dict[str, Any]]) -> list[Delta]:
        kind = event.type
        if kind == "message_start":
            usage = event.message.usage
            return [UsageDelta(input_tokens=usage.input_tokens or 0)] if usage else []
        if kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                tool_blocks[event.index] = {"id": block.id, "name": block.name, "json": []}
            elif block.type == "text" and block.text:
                return [TextDelta(block.text)]
            return []
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [TextDelta(delta.text)]
            if delta.type == "thinking_delta":
                return [ThinkingDelta(delta.thinking)]
            if delta.type == "signature_delta":
                return [ThinkingDelta("", signature=delta.signature)]
            if delta.type == "input_json_delta" and event.index in tool_blocks:
                tool_blocks[event.index]["json"].append(delta.partial_json)
            return []
        if kind == "content_block_stop" and event.index in tool_blocks:
            block = tool_blocks.pop(event.index)
            raw = "".join(block["json"]).strip()
            arguments = json.loads(raw) if raw else {}
            if not isinstance(arguments, dict):
                arguments = {"value": arguments}
            return [ToolCallDelta(ToolCall(block["id"], block["name"], arguments))]
        if kind == "message_delta":
            out: list[Delta] = []
            usage = getattr(event, "usage", None)
            if usage is not None and usage.output_tokens:
                out.append(UsageDelta(output_tokens=usage.output_tokens))
            reason = event.delta.stop_reason
            if reason:
                out.append(StopDelta(STOP_REASONS.get(reason, reason)))
            return out
        return []

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


classify_error = sdk_classifier("anthropic")


KIND = ProviderKind(
    "anthropic",
    AnthropicProvider,
    classify=classify_error,
    env_key="ANTHROPIC_API_KEY",
    default_model="claude-sonnet-4-6",
    sdk="anthropic",
)
