"""AgentRuntime: one turn = lane -> compaction -> model -> thinking -> tools -> events.

The model step rotates API keys and falls back along the chain.

::

    runtime = AgentRuntime("anthropic/claude-opus-4-5", thinking_mode=ThinkingMode.STREAM)
    async for event in runtime.run("chat-1", "hello"):
        ...
    reply = await runtime.ask("chat-1", "hello")

Everything beyond the model is opt-in and read from the config file (same
precedence as ``chatlane serve``); keyword arguments override the file.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.auth import AuthProfile
from bot.compaction import CompactionStrategy
from bot.config import Config, load_config
from bot.context import ContextBuilder
from bot.events import AgentEvent, EventType
from bot.failover import FallbackChain
from bot.failover.errors import FailoverReason, ProviderError, user_message
from bot.failover.runner import Failover
from bot.formatting import FormatMode
from bot.messages import Message, Role, ToolCall
from bot.models import ModelSetup, build_model_setup
from bot.providers.base import ModelRequest, TextDelta, ThinkingDelta, ToolCallDelta, UsageDelta
from bot.queuing import QueueManager
from bot.storage.base import Storage
from bot.thinking import ThinkingMode
from bot.tool_display import ToolDisplay
from bot.tools import ToolRegistry, builtin_tools

log = logging.getLogger(__name__)

MAX_CACHED_SETTINGS = 1000  # sessions whose /think and /model choices are kept in memory


@dataclass(slots=True)
class _Round:
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    signature: str | None = None
    calls: list[ToolCall] = field(default_factory=list)
    visible: bool = False
    separate: bool = False  # reasoning was streamed in an earlier round of this turn


class AgentRuntime:
    """Runs turns for any number of sessions. Safe to share across tasks."""

    def __init__(
        self,
        model: str | None = None,
        *,
        thinking_mode: ThinkingMode | str | None = None,
        fallback_models: Sequence[str] | None = None,
        fallback_chain: Sequence[str] | None = None,
        auth_profiles: Sequence[AuthProfile] | None = None,
        enable_queuing: bool | None = None,
        tool_format: FormatMode | str | None = None,
        compaction_strategy: CompactionStrategy | str | None = None,
        config: Config | None = None,
        config_path: str | Path | None = None,
        storage: Storage | None = None,
        tools: ToolRegistry | None = None,
        system_prompt: str | None = None,
        demo_when_unconfigured: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config if config is not None else load_config(config_path, env=env)
        agent = self.config.agent
        if fallback_models is not None and fallback_chain is not None:
            raise TypeError("give fallback_models= or fallback_chain=, not both")
        fallbacks = fallback_models if fallback_models is not None else fallback_chain
        self.thinking_mode = ThinkingMode(thinking_mode or agent.thinking_mode)
        self.tool_format = FormatMode(tool_format) if tool_format else None
        self.compaction_strategy = CompactionStrategy(
            compaction_strategy or agent.context.compaction_strategy
        )
        self.queuing_enabled = (
            agent.queuing.enabled if enable_queuing is None else bool(enable_queuing)
        )
        self.system_prompt = system_prompt if system_prompt is not None else agent.system_prompt
        self._system: Message | None = None
        self.models: ModelSetup = build_model_setup(
            self.config,
            model=model,
            fallbacks=fallbacks,
            auth_profiles=auth_profiles,
            demo_when_unconfigured=demo_when_unconfigured,
            env=env,
        )
        self.tools = tools if tools is not None else builtin_tools(agent.workspace)
        self._storage = storage
        self._env = env
        redis_url = (os.environ if env is None else env).get("REDIS_URL")
        lanes = None
        if redis_url:
            from bot.queuing.redis_backend import RedisLanes

            lanes = RedisLanes(
                redis_url,
                per_session=agent.queuing.max_concurrent_per_session,
                global_cap=agent.queuing.max_concurrent_global,
                max_connections=self.config.server.redis_max_connections,
            )
        self.queue = QueueManager(
            max_concurrent_per_session=agent.queuing.max_concurrent_per_session,
            max_concurrent_global=agent.queuing.max_concurrent_global,
            redis=lanes,
        )
        self.display = ToolDisplay(agent.show_tool_results, agent.tool_format)
        self._context: ContextBuilder | None = None
        self._settings: dict[str, dict[str, Any]] = {}
        self._start_lock = asyncio.Lock()
        self._started = False

    # -- lifecycle -------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.models.chain.primary

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            from bot.storage.factory import default_storage

            cap = self.config.agent.queuing.max_concurrent_global
            self._storage = default_storage(
                self._env,
                max_connections=self.config.server.redis_max_connections or max(64, 2 * cap + 32),
            )
        return self._storage

    async def start(self) -> None:
        if self._started:  # every turn asks; only the first waits for the lock
            return
        async with self._start_lock:
            if self._started:
                return
            await self.storage.open()
            await self.models.rotation.load(self.storage)
            self._context = ContextBuilder(self, self.storage)
            self._started = True

    async def close(self) -> None:
        await self.models.aclose()
        if self.queue.redis is not None:
            await self.queue.redis.aclose()
        if self._storage is not None and self._started:
            await self._storage.close()  # opened by start(), so closed here
        self._started = False

    async def __aenter__(self) -> AgentRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- session commands ----------------------------------------------------

    async def reset(self, session_id: str) -> None:
        await self.start()
        await self.storage.reset_session(session_id)
        assert self._context is not None
        self._context.forget(session_id)

    async def settings(self, session_id: str) -> dict[str, Any]:
        """The session's ``/think`` and ``/model`` choices (cached unless storage is shared)."""
        await self.start()
        cached = self._settings.pop(session_id, None)
        if cached is not None:
            self._settings[session_id] = cached  # now the most recently used
            return cached
        settings = await self.storage.get_settings(session_id)
        if not getattr(self.storage, "shared", False):
            if len(self._settings) >= MAX_CACHED_SETTINGS:
                del self._settings[next(iter(self._settings))]  # the least recently used
            self._settings[session_id] = settings
        return settings

    async def _set(self, session_id: str, key: str, value: Any) -> None:
        await self.start()
        await self.storage.set_setting(session_id, key, value)
        self._settings.pop(session_id, None)

    async def set_thinking_mode(self, session_id: str, mode: ThinkingMode | str | None) -> None:
        value = ThinkingMode(mode).value if mode is not None else None
        await self._set(session_id, "thinking_mode", value)

    async def set_model(self, session_id: str, model: str | None) -> None:
        if model is not None:
            self.models.check_ref(model)
        await self._set(session_id, "model", model)

    async def session_thinking_mode(self, session_id: str) -> ThinkingMode:
        value = (await self.settings(session_id)).get("thinking_mode")
        return ThinkingMode(value) if value else self.thinking_mode

    # -- turns -----------------------------------------------------------------

    async def ask(self, session_id: str, text: str, **kwargs: Any) -> str:
        """Run a turn and return the final answer text; raise its error if it failed."""
        answer = ""
        async with aclosing(self.run(session_id, text, **kwargs)) as events:
            async for event in events:
                if event.type is EventType.DONE:
                    answer = event.data["text"]
                elif event.type is EventType.ERROR:
                    raise event.data["error"]
        return answer

    async def run(
        self,
        session_id: str,
        text: str,
        *,
        channel: str | None = None,
        thinking_mode: ThinkingMode | str | None = None,
        on_start: Callable[[], object] | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run one turn, yielding ``AgentEvent``s; see ``bot.events`` for each type's data.

        ``on_start`` is called once the turn holds its lanes and is about to call the
        model (a channel shows "typing" from then on, not while the turn waits)."""
        await self.start()
        assert self._context is not None
        lane = self.queue.slot(session_id) if self.queuing_enabled else nullcontext()
        async with lane as slot:
            if slot is not None and not slot.take_now():
                async for position in slot.wait():
                    yield AgentEvent(EventType.QUEUE, {"position": position, "lane": slot.lane})
            if on_start is not None:
                on_start()
            # The turn's messages are stored together at its end (one write), or as far as
            # they got when it fails or is cancelled: the user's message is never lost.
            # The inner generator is closed in place (``aclosing``) when the caller stops
            # early, so that write happens, or fails, before ``run`` returns.
            unsaved = [Message(Role.USER, text)]
            try:
                async with aclosing(
                    self._rounds(session_id, channel, thinking_mode, unsaved)
                ) as rounds:
                    async for event in rounds:
                        yield event
            finally:
                await self._context.append(session_id, unsaved)

    async def _rounds(
        self,
        session_id: str,
        channel: str | None,
        thinking_mode: ThinkingMode | str | None,
        unsaved: list[Message],
    ) -> AsyncGenerator[AgentEvent, None]:
        assert self._context is not None
        started = time.monotonic()
        settings = await self.settings(session_id)
        mode = ThinkingMode(thinking_mode or settings.get("thinking_mode") or self.thinking_mode)
        chain = self.models.chain_for(settings.get("model"))
        usage = {"input_tokens": 0, "output_tokens": 0}
        thinking_all: list[str] = []
        answer: list[str] = []
        model_used = chain.primary
        overflow_retried = False
        rounds = self.config.agent.max_tool_rounds
        round_index = 0
        while round_index <= rounds:
            offer_tools = round_index < rounds
            window = await self._context.window(session_id, chain.primary, unsaved)
            for event in window.events:
                yield event
            request_messages = (
                (self._system_message(), *window.messages)
                if self.system_prompt
                else tuple(window.messages)
            )
            current = _Round(separate=bool(thinking_all))
            extractor = self.models.new_extractor()
            counted, by_primary = 0, True  # the provider's count of this request
            try:
                build = functools.partial(
                    ModelRequest,
                    messages=request_messages,
                    tools=self.tools.specs() if offer_tools else (),
                    max_tokens=self.config.agent.max_output_tokens,
                    thinking_budget=(
                        self.config.agent.thinking_budget if mode is not ThinkingMode.OFF else None
                    ),
                )
                stream = self.models.router.stream(chain, build, session_id=session_id)
                async with aclosing(stream):
                    async for item in stream:
                        if isinstance(item, TextDelta):
                            for kind, piece in extractor.feed(item.text):
                                if kind == "text" and piece:  # _emit's text case, inline:
                                    current.text.append(piece)  # once per streamed piece
                                    current.visible = True
                                    yield AgentEvent(EventType.TEXT, {"delta": piece})
                                    continue
                                for event in self._emit(kind, piece, mode, current):
                                    yield event
                        elif isinstance(item, ThinkingDelta):
                            if item.signature:
                                current.signature = item.signature
                            for event in self._emit("thinking", item.text, mode, current):
                                yield event
                        elif isinstance(item, ToolCallDelta):
                            current.calls.append(item.call)
                            current.visible = True
                        elif isinstance(item, UsageDelta):
                            usage["input_tokens"] += item.input_tokens
                            usage["output_tokens"] += item.output_tokens
                            counted += item.input_tokens
                        elif isinstance(item, Failover):
                            model_used = item.to_model
                            by_primary = False  # another tokenizer: its count is not the primary's
                            current = _Round(separate=bool(thinking_all))
                            extractor = self.models.new_extractor()
                            yield AgentEvent(
                                EventType.FAILOVER,
                                {
                                    "from": item.from_model,
                                    "to": item.to_model,
                                    "reason": str(item.reason),
                                },
                            )
                for kind, piece in extractor.finish():
                    for event in self._emit(kind, piece, mode, current):
                        yield event
                if counted and by_primary:
                    self._context.observe(session_id, window, counted)
            except ProviderError as error:
                for kind, piece in extractor.finish():
                    for event in self._emit(kind, piece, mode, current):
                        yield event
                if error.reason is FailoverReason.CONTEXT_OVERFLOW and not overflow_retried:
                    overflow_retried = True
                    for event in await self._context.compact_hard(
                        session_id, chain.primary, unsaved
                    ):
                        yield event
                    continue
                partial = "".join(current.text)
                if partial:
                    notice = (
                        "\n\n(The reply was cut off: the AI provider failed partway. "
                        + user_message(error)
                        + ")"
                    )
                    yield AgentEvent(EventType.TEXT, {"delta": notice})
                    current.text.append(notice)
                    unsaved.append(Message(Role.ASSISTANT, "".join(current.text)))
                log.warning(
                    "turn failed session=%s reason=%s model=%s status=%s",
                    session_id,
                    error.reason.value,
                    error.model,
                    error.status_code,
                )
                yield AgentEvent(
                    EventType.ERROR,
                    {
                        "message": user_message(error),
                        "reason": error.reason.value,
                        "retry_after": error.retry_after,
                        "error": error,
                    },
                )
                return
            round_text = "".join(current.text).strip()
            round_thinking = "".join(current.thinking).strip()
            if round_thinking:
                thinking_all.append(round_thinking)
            if round_text:
                answer.append(round_text)
            assistant = Message(
                Role.ASSISTANT,
                round_text,
                tool_calls=tuple(current.calls),
                thinking=round_thinking,
                thinking_signature=current.signature,
            )
            results: list[Message] = []
            for call in current.calls:
                yield AgentEvent(
                    EventType.TOOL_CALL,
                    {"id": call.id, "name": call.name, "arguments": call.arguments},
                )
                result = await self.tools.call(call.name, call.arguments, call.id)
                results.append(
                    Message(
                        Role.TOOL,
                        result.content,
                        tool_call_id=call.id,
                        name=call.name,
                        is_error=result.is_error,
                    )
                )
                yield AgentEvent(
                    EventType.TOOL_RESULT,
                    {
                        "id": call.id,
                        "name": call.name,
                        "content": result.content,
                        "is_error": result.is_error,
                        "display": self.display.render(result, channel, self.tool_format),
                    },
                )
            unsaved.extend([assistant, *results])
            if not current.calls:
                break
            round_index += 1
        reasoning = "\n\n".join(thinking_all)
        if mode is ThinkingMode.ON and reasoning:
            yield AgentEvent(EventType.THINKING, {"content": reasoning, "mode": mode.value})
        final = "\n\n".join(answer)
        log.info(
            "turn done session=%s model=%s in=%d out=%d seconds=%.2f",
            session_id,
            model_used,
            usage["input_tokens"],
            usage["output_tokens"],
            time.monotonic() - started,
        )
        yield AgentEvent(
            EventType.DONE,
            {
                "text": final,
                "model": model_used,
                "usage": usage,
                "thinking": reasoning if mode is ThinkingMode.ON else "",
            },
        )

    def _system_message(self) -> Message:
        """The system prompt as a message, made again only when the prompt changes."""
        found = self._system
        if found is None or found.content != self.system_prompt:
            found = self._system = Message(Role.SYSTEM, self.system_prompt or "")
        return found

    def _emit(self, kind: str, piece: str, mode: ThinkingMode, current: _Round) -> list[AgentEvent]:
        if not piece:
            return []
        if kind == "thinking":
            shown = "\n\n" + piece if current.separate and not current.thinking else piece
            current.thinking.append(piece)
            if mode is ThinkingMode.STREAM:
                return [AgentEvent(EventType.THINKING, {"content": shown, "mode": mode.value})]
            return []
        current.text.append(piece)
        current.visible = True
        return [AgentEvent(EventType.TEXT, {"delta": piece})]

    async def status(self, session_id: str | None = None) -> dict[str, Any]:
        """What ``/status`` shows: models, profiles (masked), the session's settings and tokens."""
        await self.start()
        data: dict[str, Any] = {
            "model": self.models.chain.primary,
            "fallbacks": list(self.models.chain.fallbacks),
            "demo": self.models.demo_reason,
            "thinking_mode": self.thinking_mode.value,
            "profiles": self.models.rotation.status(),
        }
        if session_id is not None:
            assert self._context is not None
            settings = await self.settings(session_id)
            chain = self.models.chain_for(settings.get("model"))
            data["session"] = {
                "model": chain.primary,
                "thinking_mode": settings.get("thinking_mode") or self.thinking_mode.value,
                **(await self._context.usage(session_id, chain.primary)),
            }
        return data


__all__ = ["AgentRuntime", "FallbackChain"]
