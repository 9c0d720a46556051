"""OpenAI Chat Completions (and any OpenAI-compatible server), streamed, retries off.

Reasoning from compatible servers arrives as ``delta.reasoning_content``
(DeepSeek, vLLM) or ``delta.reasoning`` (OpenRouter, Ollama); both become
``ThinkingDelta``. With a thinking budget, o-series and gpt-5 models get a
``reasoning_effort``; other models ignore it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
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
    UsageDelta,
)
from bot.providers.classify import sdk_classifier, stream_failures
from bot.providers.errors import FailoverReason, ProviderError
from bot.providers.kind import ProviderKind

if TYPE_CHECKING:
    import openai  # about 12 MB: imported by the first client, not for every process

FINISH_REASONS = {
    "stop": "end",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")


def _user_content(message: Message, vision: bool) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if message.content:
        content.append({"type": "text", "text": message.content})
    for image in message.attachments:
        if vision and image.data is not None:
            url = f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"
            content.append({"type": "image_url", "image_url": {"url": url}})
        else:
            content.append({"type": "text", "text": image_note(image, vision=vision)})
    return content


def to_wire(messages: tuple[Message, ...], *, vision: bool = True) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.role is Role.TOOL:
            wire.append(
                {
                    "role": "tool",
                    "tool_call_id": message.tool_call_id or "",
                    "content": message.content or "(no output)",
                }
            )
        elif message.role is Role.ASSISTANT:
            entry: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for c in message.tool_calls
                ]
            elif entry["content"] is None:
                entry["content"] = ""
            wire.append(entry)
        elif message.attachments and message.role is Role.USER:
            wire.append({"role": "user", "content": _user_content(message, vision)})
        else:
            wire.append({"role": message.role.value, "content": message.content})
    return wire


class OpenAIProvider:
    def __init__(self, info: ProviderInfo, *, timeout: float = 120.0) -> None:
        self.info = info
        self.timeout = timeout
        self._clients: dict[str, openai.AsyncOpenAI] = {}

    def client(self, api_key: str | None) -> openai.AsyncOpenAI:
        key = api_key or "not-needed"
        found = self._clients.get(key)
        if found is None:
            kwargs: dict[str, Any] = {"api_key": key, "max_retries": 0, "timeout": self.timeout}
            if self.info.base_url:
                kwargs["base_url"] = self.info.base_url
            import openai

            # the SDK's aiohttp transport, as for Anthropic: less CPU a streamed turn
            kwargs["http_client"] = openai.DefaultAioHttpClient(timeout=self.timeout)
            found = openai.AsyncOpenAI(**kwargs)
            self._clients[key] = found
        return found

    def build_params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_wire(request.messages, vision=self.info.extra.get("vision", True)),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_completion_tokens": request.max_tokens,
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if request.thinking_budget and request.model.startswith(REASONING_MODELS):
            params["reasoning_effort"] = "low" if request.thinking_budget <= 2048 else "medium"
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return params

    async def stream(
        self, request: ModelRequest, api_key: str | None
    ) -> AsyncGenerator[Delta, None]:
        import openai

        params = self.build_params(request)
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        try:
            chunks = await self.client(api_key).chat.completions.create(**params)
            async with chunks:
                async for chunk in chunks:
                    usage = getattr(chunk, "usage", None)
                    if usage is not None:
                        yield UsageDelta(
                            input_tokens=usage.prompt_tokens or 0,
                            output_tokens=usage.completion_tokens or 0,
                        )
                    for choice in chunk.choices or ():
                        delta = choice.delta
                        if delta is not None:
                            reasoning = _reasoning(delta)
                            if reasoning:
                                yield ThinkingDelta(reasoning)
                            if delta.content:
                                yield TextDelta(delta.content)
                            for call in delta.tool_calls or ():
                                slot = calls.setdefault(
                                    call.index, {"id": "", "name": "", "args": []}
                                )
                                if call.id:
                                    slot["id"] = call.id
                                if call.function is not None:
                                    if call.function.name:
                                        slot["name"] = call.function.name
                                    if call.function.arguments:
                                        slot["args"].append(call.function.arguments)
                        if choice.finish_reason:
                            finish = choice.finish_reason
        except openai.OpenAIError as exc:
            raise classify_error(exc, provider=self.info.name, model=request.model) from exc
        except stream_failures() as exc:  # a reset mid-stream too
            raise classify_error(exc, provider=self.info.name, model=request.model) from exc
        for index in sorted(calls):
            slot = calls[index]
            raw = "".join(slot["args"]).strip()
            try:
                arguments = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                arguments = {"_raw": raw}
            if not isinstance(arguments, dict):
                arguments = {"value": arguments}
            yield ToolCallDelta(ToolCall(slot["id"] or f"call_{index}", slot["name"], arguments))
        if not finish:  # the body ended early: what came is not the whole reply
            raise ProviderError(
                FailoverReason.CONNECTION,
                "the stream ended before a finish_reason",
                provider=self.info.name,
                model=request.model,
            )
        yield StopDelta(FINISH_REASONS.get(finish, finish))

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def _reasoning(delta: Any) -> str | None:
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None)
        if value is None:
            extra = getattr(delta, "model_extra", None) or {}
            value = extra.get(name)
        if isinstance(value, str) and value:
            return value
    return None


classify_error = sdk_classifier("openai")


KIND = ProviderKind(
    "openai",
    OpenAIProvider,
    classify=classify_error,
    env_key="OPENAI_API_KEY",
    default_model="gpt-4o",
    sdk="openai",
)
