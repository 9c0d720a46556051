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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.auth import AuthProfile
from bot.compaction import CompactionStrategy
from bot.components import build_lanes, build_storage, build_tools
from bot.config import Config, load_config
from bot.context import Budget, ContextBuilder, Preload
from bot.events import (
    AgentEvent,
    DoneData,
    ErrorData,
    EventType,
    FailoverData,
    QueueData,
    TextData,
    ThinkingData,
    ToolCallData,
    ToolResultData,
    Usage,
)
from bot.failover import FallbackChain
from bot.failover.errors import FailoverReason, ProviderError, user_message
from bot.failover.runner import Failover
from bot.formatting import FormatMode
from bot.hooks import Hooks, ToolUse, TurnEnd, TurnStart, load_hooks
from bot.messages import Attachment, Message, Role, ToolCall
from bot.models import ModelSetup, build_model_setup
from bot.providers.base import (
    Delta,
    ModelRequest,
    StopDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UsageDelta,
)
from bot.queuing import QueueManager
from bot.storage.base import JSON, Storage
from bot.thinking import ThinkingMode
from bot.thinking.extractor import StreamingThinkingExtractor
from bot.tool_display import ToolDisplay
from bot.tools import ToolRegistry, ToolResult
from bot.tools.mcp import McpServers
from bot.tools.registry import permitted

log = logging.getLogger(__name__)

MAX_CACHED_SETTINGS = 1000  # sessions whose /think and /model choices are kept in memory


CUT_OFF = {  # stop reasons that end a reply before it is whole, and what the person is told
    "max_tokens": "(The reply was cut off: it reached the length limit.)",
    "refusal": "(The reply was cut off: the AI provider stopped it.)",
}
NO_ANSWER = "(The model gave no answer.)"


@dataclass(slots=True)
class _Round:
    """What one model call has produced so far."""

    separate: bool = False  # reasoning was streamed in an earlier round of this turn
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    signature: str | None = None
    calls: list[ToolCall] = field(default_factory=list)
    stop: str | None = None
    counted: int = 0  # the provider's count of the request's input tokens,
    by_primary: bool = True  # usable only when the primary model counted it

    def restart(self) -> None:
        """Another model of the chain answers instead, with its own tokenizer."""
        self.text, self.thinking, self.calls = [], [], []
        self.signature = self.stop = None
        self.by_primary = False

    def reply(self) -> str:
        return "".join(self.text).strip()


@dataclass(slots=True)
class _Turn:
    session_id: str
    mode: ThinkingMode
    chain: FallbackChain
    display: FormatMode  # how tool results are shown
    unsaved: list[Message]  # written to the transcript when the turn ends, however it ends
    model: str  # the model that answered
    channel: str | None = None  # its config section (prompt, tools), the logs
    context: str = ""  # what before_turn hooks added to the system prompt, this turn only
    started: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=0, output_tokens=0))
    thinking: list[str] = field(default_factory=list)  # each round's reasoning
    answer: list[str] = field(default_factory=list)  # each round's text
    stop: str | None = None  # the last model call's stop reason
    overflow_retried: bool = False


@dataclass(slots=True)
class TurnWrite:
    """What a caller adds to a turn's closing transcript write: ``reply`` (an inbox id
    and the parts about to be sent for it), set before the turn's events are closed, is
    stored in the same step; ``stored`` then says that it was."""

    reply: tuple[int, list[JSON]] | None = None
    stored: bool = False


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
        hooks: Sequence[object] = (),
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
        self._prompt_given = system_prompt is not None  # then it is every channel's prompt
        if system_prompt is None and agent.system_prompt_file is not None:
            system_prompt = agent.system_prompt_file.read_text(encoding="utf-8")
        self.system_prompt = system_prompt if system_prompt is not None else agent.system_prompt
        self._systems: dict[str, Message] = {}
        self._channel_prompts: dict[str, str | None] = {}
        self.models: ModelSetup = build_model_setup(
            self.config,
            model=model,
            fallbacks=fallbacks,
            auth_profiles=auth_profiles,
            demo_when_unconfigured=demo_when_unconfigured,
            env=env,
        )
        self.tools = tools if tools is not None else build_tools(self.config)
        self.hooks: Hooks = load_hooks(self.config, extra=hooks)
        self.mcp = McpServers(
            self.config.mcp_servers, self.tools, os.environ if env is None else env
        )
        self._storage = storage
        self._env = env
        self.queue = QueueManager(
            max_concurrent_per_session=agent.queuing.max_concurrent_per_session,
            max_concurrent_global=agent.queuing.max_concurrent_global,
            redis=build_lanes(self.config, env),
        )
        self.display = ToolDisplay(agent.show_tool_results)
        self._context: ContextBuilder | None = None
        self._settings: dict[str, dict[str, Any]] = {}
        self._start_lock = asyncio.Lock()
        self._started = False
        self._leave_with_write = False  # the transcript and the lanes on one Redis

    # -- lifecycle -------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.models.chain.primary

    @property
    def storage(self) -> Storage:
        if self._storage is None:  # built on first use: no Redis pool for a runtime never run
            self._storage = build_storage(self.config, self._env)
        return self._storage

    async def start(self) -> None:
        if self._started:  # every turn asks; only the first waits for the lock
            return
        async with self._start_lock:
            if self._started:
                return
            await self.storage.open()
            await self.models.rotation.load(self.storage)
            await self.models.preload()
            await self.mcp.start()  # a server that fails is logged and skipped
            self._context = self._new_context()
            lanes = self.queue.redis
            if lanes is not None:  # (redis-py is loaded then)
                from bot.storage.redis import RedisStorage

                storage = self.storage
                self._leave_with_write = (
                    isinstance(storage, RedisStorage) and storage.url == lanes.url
                )
            self._started = True

    async def close(self) -> None:
        await self.mcp.stop()
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
        tool_format: FormatMode | str | None = None,
        on_start: Callable[[], object] | None = None,
        attachments: Sequence[Attachment] = (),
        resumed: bool = False,
        write: TurnWrite | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run one turn, yielding ``AgentEvent``s; see ``bot.events`` for each type's data.

        ``attachments``: images sent with ``text`` (their bytes loaded; see ``bot.media``).

        ``channel`` names the channel (its config section, the logs); ``tool_format`` is
        the channel's own way to show tool results, used where the runtime and the
        config set none.
        ``on_start`` is called once the turn holds its lanes and is about to call the
        model (a channel shows "typing" from then on, not while the turn waits).
        ``resumed``: ``text`` was taken up before and that turn was cut short (a restart,
        a failure): when the transcript ends with it unanswered, the turn goes on from
        there (tool rounds it finished included) instead of storing it a second time.
        ``write``: see ``TurnWrite`` (the dispatcher's reply, stored with the transcript)."""
        await self.start()
        assert self._context is not None
        lane = self.queue.slot(session_id) if self.queuing_enabled else nullcontext()
        async with lane as slot:
            # On Redis, the turn's read joins the trip that joins its lanes, when both are
            # granted at once (the common case below saturation).
            pre = (
                self._context.turn_call(session_id)
                if slot is not None and self._leave_with_write and not resumed
                else None
            )
            if pre is not None and slot is not None:
                slot.preload = pre[0]
            if slot is not None and not slot.take_now():
                async for position in slot.wait():
                    yield AgentEvent(EventType.QUEUE, QueueData(position=position, lane=slot.lane))
            if on_start is not None:
                on_start()
            # The turn's messages are stored together at its end (one write), or as far as
            # they got when it fails or is cancelled: the user's message is never lost.
            # The inner generator is closed in place (``aclosing``) when the caller stops
            # early, so that write happens, or fails, before ``run`` returns.
            unsaved = [Message(Role.USER, text, attachments=tuple(attachments))]
            if resumed and await self._context.unfinished(session_id, text):
                unsaved = []
            try:
                preloaded = (
                    (pre[1], slot.preloaded)
                    if pre is not None and slot is not None and slot.preloaded is not None
                    else None
                )
                turn = self._hooked(
                    session_id, text, unsaved, channel, thinking_mode, tool_format, preloaded
                )
                async with aclosing(turn) as rounds:
                    async for event in rounds:
                        yield event
            finally:
                reply = write.reply if write is not None else None
                # On Redis, the lanes are left in the same trip as this write.
                then = slot.leave_call() if slot is not None and self._leave_with_write else None
                await self._context.append(session_id, unsaved, reply, then=then)
                if slot is not None and then is not None:
                    slot.left()
                if write is not None and reply is not None:
                    write.stored = True

    async def _hooked(
        self,
        session_id: str,
        text: str,
        unsaved: list[Message],
        channel: str | None,
        thinking_mode: ThinkingMode | str | None,
        tool_format: FormatMode | str | None,
        preloaded: tuple[Preload, Any] | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """The turn between the hooks: ``before_turn`` may refuse it or add context for it,
        ``after_turn`` sees how it ended."""
        contexts, refusal = await self.hooks.before_turn(TurnStart(session_id, channel, text))
        end = TurnEnd(session_id, channel, text, reply="")
        if refusal is not None:
            unsaved.append(Message(Role.ASSISTANT, refusal.message))
            yield AgentEvent(EventType.TEXT, TextData(delta=refusal.message))
            done = DoneData(
                text=refusal.message,
                model="",
                usage=Usage(input_tokens=0, output_tokens=0),
                thinking="",
                stop_reason=None,
            )
            yield AgentEvent(EventType.DONE, done)
            await self.hooks.after_turn(replace(end, reply=refusal.message, refused=True))
            return
        context = "\n\n".join(contexts)
        rounds = self._rounds(
            session_id, unsaved, channel, thinking_mode, tool_format, context, preloaded
        )
        async with aclosing(rounds):
            async for event in rounds:
                if event.type is EventType.DONE:
                    data = event.data
                    end = replace(end, reply=data["text"], model=data["model"], usage=data["usage"])
                elif event.type is EventType.ERROR:
                    end = replace(end, error=event.data["reason"])
                yield event
        await self.hooks.after_turn(end)

    async def _rounds(
        self,
        session_id: str,
        unsaved: list[Message],
        channel: str | None,
        thinking_mode: ThinkingMode | str | None,
        tool_format: FormatMode | str | None,
        context: str = "",
        preloaded: tuple[Preload, Any] | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """The turn: a model call per round, tools between rounds, then ``done``."""
        assert self._context is not None
        # Shared storage: read with the transcript's news in one trip where it can.
        settings = await self._context.begin(session_id, preloaded)
        if settings is None:
            settings = await self.settings(session_id)
        chain = self.models.chain_for(settings.get("model"))
        turn = _Turn(
            session_id=session_id,
            mode=ThinkingMode(thinking_mode or settings.get("thinking_mode") or self.thinking_mode),
            chain=chain,
            display=self._tool_format(channel, tool_format),
            unsaved=unsaved,
            model=chain.primary,
            channel=channel,
            context=context,
        )
        limit = self.config.agent.max_tool_rounds
        index = 0
        while index <= limit:
            current = _Round(separate=bool(turn.thinking))
            try:
                async with aclosing(self._stream_round(turn, current, index < limit)) as deltas:
                    async for event in deltas:
                        yield event
            except ProviderError as error:
                if error.reason is FailoverReason.CONTEXT_OVERFLOW and not turn.overflow_retried:
                    turn.overflow_retried = True  # compact harder and try the round once more
                    for event in await self._context.compact_hard(
                        session_id, chain.primary, unsaved
                    ):
                        yield event
                    continue
                for event in self._failed(turn, current, error):
                    yield event
                return
            async with aclosing(self._run_tools(turn, current)) as tools:
                async for event in tools:
                    yield event
            if not current.calls:
                break
            index += 1
        for event in self._finish(turn):
            yield event

    async def _stream_round(
        self, turn: _Turn, current: _Round, offer_tools: bool
    ) -> AsyncGenerator[AgentEvent, None]:
        """One model call: its deltas as events; its text, calls and stop reason in ``current``."""
        assert self._context is not None
        window = await self._context.window(turn.session_id, turn.chain.primary, turn.unsaved)
        for event in window.events:
            yield event
        build = self._request(turn, window.messages, offer_tools)
        extractor = self.models.new_extractor()
        stream = self.models.router.stream(turn.chain, build, session_id=turn.session_id)
        try:
            async with aclosing(stream):
                async for item in stream:
                    if isinstance(item, TextDelta):
                        for event in self._feed(extractor, item.text, turn.mode, current):
                            yield event
                    elif isinstance(item, Failover):
                        extractor = self.models.new_extractor()
                        yield self._failed_over(turn, current, item)
                    elif (noted := self._note(turn, current, item)) is not None:
                        yield noted
        except ProviderError:
            for event in self._flush(extractor, turn.mode, current):
                yield event
            raise
        for event in self._flush(extractor, turn.mode, current):
            yield event
        if current.counted and current.by_primary:
            self._context.observe(turn.session_id, window, current.counted)
        turn.stop = current.stop
        notice = self._stop_notice(turn, current)
        if notice:
            current.text.append(notice)
            yield AgentEvent(EventType.TEXT, TextData(delta=notice))

    def _request(
        self, turn: _Turn, messages: Sequence[Message], offer_tools: bool
    ) -> Callable[[str], ModelRequest]:
        """The round's request, for whichever model of the chain is asked."""
        agent = self.config.agent
        system = self._system_message(turn)
        return functools.partial(
            ModelRequest,
            messages=(*system, *messages),
            tools=self.tools.specs(*self._tool_filter(turn.channel)) if offer_tools else (),
            max_tokens=agent.max_output_tokens,
            thinking_budget=agent.thinking_budget if turn.mode is not ThinkingMode.OFF else None,
        )

    def _feed(
        self, extractor: StreamingThinkingExtractor, text: str, mode: ThinkingMode, current: _Round
    ) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        for kind, piece in extractor.feed(text):
            if kind == "text" and piece:  # _piece's text case, inline: once per streamed piece
                current.text.append(piece)
                data: TextData = {"delta": piece}
                events.append(AgentEvent(EventType.TEXT, data))
            elif (event := self._piece(kind, piece, mode, current)) is not None:
                events.append(event)
        return events

    def _failed_over(self, turn: _Turn, current: _Round, item: Failover) -> AgentEvent:
        """The chain moved to its next model: what was streamed so far no longer counts."""
        turn.model = item.to_model
        current.restart()
        moved: FailoverData = {
            "from": item.from_model,
            "to": item.to_model,
            "reason": str(item.reason),
        }
        return AgentEvent(EventType.FAILOVER, moved)

    def _note(self, turn: _Turn, current: _Round, item: Delta) -> AgentEvent | None:
        """Every delta but text: reasoning, a tool call, usage, the stop reason."""
        if isinstance(item, ThinkingDelta):
            if item.signature:
                current.signature = item.signature
            return self._piece("thinking", item.text, turn.mode, current)
        if isinstance(item, ToolCallDelta):
            current.calls.append(item.call)
        elif isinstance(item, UsageDelta):
            turn.usage["input_tokens"] += item.input_tokens
            turn.usage["output_tokens"] += item.output_tokens
            current.counted += item.input_tokens
        elif isinstance(item, StopDelta):
            current.stop = item.reason
        return None

    def _piece(
        self, kind: str, piece: str, mode: ThinkingMode, current: _Round
    ) -> AgentEvent | None:
        """A piece of text or reasoning; reasoning is an event in mode ``stream`` only."""
        if not piece:
            return None
        if kind == "thinking":
            shown = "\n\n" + piece if current.separate and not current.thinking else piece
            current.thinking.append(piece)
            if mode is ThinkingMode.STREAM:
                return AgentEvent(EventType.THINKING, ThinkingData(content=shown, mode=mode.value))
            return None
        current.text.append(piece)
        return AgentEvent(EventType.TEXT, TextData(delta=piece))

    def _flush(
        self, extractor: StreamingThinkingExtractor, mode: ThinkingMode, current: _Round
    ) -> list[AgentEvent]:
        """What the extractor held back, waiting to see whether a tag began."""
        pieces = (self._piece(kind, piece, mode, current) for kind, piece in extractor.finish())
        return [event for event in pieces if event is not None]

    def _stop_notice(self, turn: _Turn, current: _Round) -> str:
        """A plain note when the reply was cut off or is empty; "" when it is whole."""
        if current.calls:
            return ""
        notice = CUT_OFF.get(current.stop or "")
        if notice is None:
            if turn.answer or current.reply():
                return ""
            notice = NO_ANSWER
        log.info("reply incomplete session=%s stop=%s", turn.session_id, current.stop)
        return "\n\n" + notice if current.reply() else notice

    async def _run_tools(self, turn: _Turn, current: _Round) -> AsyncGenerator[AgentEvent, None]:
        """Keep the round's reply, then run its tool calls one after another."""
        text, thinking = current.reply(), "".join(current.thinking).strip()
        if thinking:
            turn.thinking.append(thinking)
        if text:
            turn.answer.append(text)
        assistant = Message(
            Role.ASSISTANT,
            text,
            tool_calls=tuple(current.calls),
            thinking=thinking,
            thinking_signature=current.signature,
        )
        results: list[Message] = []
        for call in current.calls:
            yield AgentEvent(
                EventType.TOOL_CALL,
                ToolCallData(id=call.id, name=call.name, arguments=call.arguments),
            )
            result = await self._call_tool(turn, call)
            results.append(
                Message(
                    Role.TOOL,
                    result.content,
                    tool_call_id=call.id,
                    name=call.name,
                    is_error=result.is_error,
                )
            )
            shown = ToolResultData(
                id=call.id,
                name=call.name,
                content=result.content,
                is_error=result.is_error,
                display=self.display.render(result, turn.display),
            )
            yield AgentEvent(EventType.TOOL_RESULT, shown)
        # Stored only now: a tool call is never kept without its result.
        turn.unsaved.extend([assistant, *results])

    def _failed(self, turn: _Turn, current: _Round, error: ProviderError) -> list[AgentEvent]:
        """The turn's end when the model call failed: a plain sentence, and half a reply kept."""
        events: list[AgentEvent] = []
        partial = "".join(current.text)
        if partial:
            notice = (
                "\n\n(The reply was cut off: the AI provider failed partway. "
                + user_message(error)
                + ")"
            )
            events.append(AgentEvent(EventType.TEXT, TextData(delta=notice)))
            turn.unsaved.append(Message(Role.ASSISTANT, partial + notice))
        log.warning(
            "turn failed session=%s reason=%s model=%s status=%s",
            turn.session_id,
            error.reason.value,
            error.model,
            error.status_code,
        )
        failed = ErrorData(
            message=user_message(error),
            reason=error.reason.value,
            retry_after=error.retry_after,
            error=error,
        )
        events.append(AgentEvent(EventType.ERROR, failed))
        return events

    def _finish(self, turn: _Turn) -> list[AgentEvent]:
        """The reasoning (mode ``on``) and the ``done`` event."""
        events: list[AgentEvent] = []
        reasoning = "\n\n".join(turn.thinking) if turn.mode is ThinkingMode.ON else ""
        if reasoning:
            data = ThinkingData(content=reasoning, mode=turn.mode.value)
            events.append(AgentEvent(EventType.THINKING, data))
        log.info(
            "turn done session=%s channel=%s model=%s in=%d out=%d seconds=%.2f stop=%s",
            turn.session_id,
            turn.channel or "-",
            turn.model,
            turn.usage["input_tokens"],
            turn.usage["output_tokens"],
            time.monotonic() - turn.started,
            turn.stop,
        )
        done = DoneData(
            text="\n\n".join(turn.answer),
            model=turn.model,
            usage=turn.usage,
            thinking=reasoning,
            stop_reason=turn.stop,
        )
        events.append(AgentEvent(EventType.DONE, done))
        return events

    def _tool_format(self, channel: str | None, given: FormatMode | str | None) -> FormatMode:
        """AgentRuntime(tool_format=) > channels.<channel>.tool_format > agent.tool_format
        > run(tool_format=) (the channel's own) > Markdown: the most specific setting wins."""
        configured = self.config.channel(channel).tool_format if channel is not None else None
        configured = configured or self.config.agent.tool_format
        return FormatMode(self.tool_format or configured or given or FormatMode.MARKDOWN)

    def _new_context(self) -> ContextBuilder:
        return ContextBuilder(
            self.storage,
            budget=Budget.from_config(self.config.agent),
            strategy=self.compaction_strategy,
            summarize=self._complete,
        )

    async def _complete(self, messages: tuple[Message, ...], max_tokens: int) -> str:
        """The default chain's whole text answer to ``messages`` (for summaries)."""

        def build(model: str) -> ModelRequest:
            return ModelRequest(model=model, messages=messages, max_tokens=max_tokens)

        chunks: list[str] = []
        async for item in self.models.router.stream(self.models.chain, build):
            if isinstance(item, TextDelta):
                chunks.append(item.text)
        return "".join(chunks)

    def _system_message(self, turn: _Turn) -> tuple[Message, ...]:
        """The turn's system prompt (its channel's, with what hooks added) as a message;
        a prompt without additions is made into a message once."""
        prompt = self._prompt_for(turn.channel)
        if turn.context:
            prompt = f"{prompt}\n\n{turn.context}" if prompt else turn.context
        if not prompt:
            return ()
        if turn.context:
            return (Message(Role.SYSTEM, prompt),)
        found = self._systems.get(prompt)
        if found is None:
            if len(self._systems) > 64:  # the prompt attribute may be changed at will
                self._systems.clear()
            found = self._systems[prompt] = Message(Role.SYSTEM, prompt)
        return (found,)

    def _prompt_for(self, channel: str | None) -> str:
        """AgentRuntime(system_prompt=) > channels.<channel>.system_prompt(_file) >
        agent.system_prompt_file > agent.system_prompt. Files are read once."""
        if channel is None or self._prompt_given:
            return self.system_prompt or ""
        if channel not in self._channel_prompts:
            section = self.config.channel(channel)
            own = section.system_prompt
            if own is None and section.system_prompt_file is not None:
                own = section.system_prompt_file.read_text(encoding="utf-8")
            self._channel_prompts[channel] = own
        own = self._channel_prompts[channel]
        return own if own is not None else self.system_prompt or ""

    def _tool_filter(self, channel: str | None) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
        """``channels.<channel>.allowed_tools`` and ``disabled_tools`` (no channel: every tool)."""
        if channel is None:
            return None, ()
        section = self.config.channel(channel)
        return section.allowed_tools, section.disabled_tools

    async def _call_tool(self, turn: _Turn, call: ToolCall) -> ToolResult:
        """One tool call: refused when the channel does not allow the tool or a hook says no."""
        if not permitted(call.name, *self._tool_filter(turn.channel)):
            return ToolResult(
                call.name,
                f"The tool {call.name} is not available here.",
                call.arguments,
                is_error=True,
                call_id=call.id,
            )
        use = ToolUse(turn.session_id, turn.channel, call.name, call.arguments, call.id)
        refusal = await self.hooks.before_tool(use)
        if refusal is not None:
            return ToolResult(
                call.name, refusal.message, call.arguments, is_error=True, call_id=call.id
            )
        result = await self.tools.call(call.name, call.arguments, call.id)
        await self.hooks.after_tool(use, result)
        return result

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
