"""What a turn sends to the model: the session's transcript, cached and compacted.

The full transcript stays in storage; compaction changes only what is sent.
Each session's messages are cached in the process and topped up with what
storage holds after the last cached id, so a turn reads only what is new
(and sees what another process appended). A rolling summary (strategy
``summarize``) is stored under ``kv("summary", session)`` with the id of the
last message it covers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.compaction import CompactionManager, CompactionStrategy, TokenAnalyzer
from bot.events import AgentEvent, EventType
from bot.failover.errors import FailoverReason, ProviderError
from bot.messages import Message, Role
from bot.providers.base import ModelRequest, TextDelta
from bot.storage.base import Storage

if TYPE_CHECKING:
    from bot.runtime import AgentRuntime

log = logging.getLogger(__name__)

MAX_CACHED_SESSIONS = 2000
SUMMARY_PROMPT = (
    "You maintain a running summary of a chat between a user and an assistant. "
    "Merge the previous summary (if any) with the new messages into one concise summary "
    "that keeps names, facts, decisions, open questions and anything the user asked to "
    "remember. Write only the summary."
)


@dataclass
class _Session:
    messages: list[Message] = field(default_factory=list)
    last_id: int = 0
    summary: str | None = None
    summary_upto: int = 0


@dataclass
class Window:
    messages: list[Message]
    events: list[AgentEvent] = field(default_factory=list)


class ContextBuilder:
    def __init__(self, runtime: AgentRuntime, storage: Storage) -> None:
        self.runtime = runtime
        self.storage = storage
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._analyzers: dict[str, TokenAnalyzer] = {}
        self._managers: dict[str, CompactionManager] = {}

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def analyzer(self, model_ref: str) -> TokenAnalyzer:
        model = model_ref.partition("/")[2] or model_ref
        found = self._analyzers.get(model)
        if found is None:
            found = self._analyzers[model] = TokenAnalyzer(model)
        return found

    def manager(self, model_ref: str) -> CompactionManager:
        model = model_ref.partition("/")[2] or model_ref
        found = self._managers.get(model)
        if found is None:
            found = self._managers[model] = CompactionManager(self.analyzer(model_ref))
        return found

    async def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = _Session()
            stored = await self.storage.kv_get("summary", session_id)
            if isinstance(stored, dict):
                session.summary = stored.get("text")
                session.summary_upto = int(stored.get("upto", 0))
            self._sessions[session_id] = session
            while len(self._sessions) > MAX_CACHED_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session_id)
        fresh = await self.storage.load_messages(session_id, after_id=session.last_id or None)
        if fresh:
            session.messages.extend(fresh)
            session.last_id = fresh[-1].id or session.last_id
        return session

    async def append(self, session_id: str, messages: list[Message]) -> list[Message]:
        return await self.storage.append_messages(session_id, messages)

    def _sendable(self, session: _Session) -> list[Message]:
        if not session.summary_upto:
            return list(session.messages)
        return [m for m in session.messages if (m.id or 0) > session.summary_upto]

    def _with_summary(self, session: _Session, messages: list[Message]) -> list[Message]:
        if not session.summary:
            return messages
        note = Message(Role.USER, f"[Summary of the earlier conversation]\n{session.summary}")
        ack = Message(Role.ASSISTANT, "Understood; I will keep that in mind.")
        return [note, ack, *messages]

    def budget(self) -> tuple[int, int]:
        context = self.runtime.config.agent.context
        reserve = max(context.reserve_tokens, self.runtime.config.agent.max_output_tokens)
        target = int(context.max_tokens * context.compaction_threshold) - reserve
        return max(target, 256), reserve

    async def usage(self, session_id: str, model_ref: str) -> dict[str, Any]:
        session = await self._session(session_id)
        messages = self._with_summary(session, self._sendable(session))
        used = self.analyzer(model_ref).count_messages(messages)
        return {"tokens": used, "max_tokens": self.runtime.config.agent.context.max_tokens}

    async def window(self, session_id: str, model_ref: str) -> Window:
        session = await self._session(session_id)
        candidates = self._sendable(session)
        messages = self._with_summary(session, candidates)
        target, _ = self.budget()
        analyzer = self.analyzer(model_ref)
        if analyzer.count_messages(messages) <= target:
            return Window(messages)
        return await self._compact(session_id, session, candidates, model_ref, target)

    async def compact_hard(self, session_id: str, model_ref: str) -> list[AgentEvent]:
        session = await self._session(session_id)
        target, _ = self.budget()
        window = await self._compact(
            session_id, session, self._sendable(session), model_ref, target // 2, force=True
        )
        return window.events

    async def _compact(
        self,
        session_id: str,
        session: _Session,
        candidates: list[Message],
        model_ref: str,
        target: int,
        *,
        force: bool = False,
    ) -> Window:
        strategy = self.runtime.compaction_strategy
        manager = self.manager(model_ref)
        analyzer = self.analyzer(model_ref)
        before = analyzer.count_messages(self._with_summary(session, candidates))
        summary_fallback = False
        if strategy is CompactionStrategy.SUMMARIZE:
            summary_target = target - (analyzer.count_text(session.summary or "") + 200)
            kept = manager.compact(
                candidates, max(summary_target, 128), CompactionStrategy.KEEP_RECENT
            )
            kept_ids = {m.id for m in kept}
            dropped = [m for m in candidates if m.id not in kept_ids]
            if dropped:
                try:
                    session.summary = await self._summarize(dropped, session.summary)
                    session.summary_upto = max(m.id or 0 for m in dropped)
                    await self.storage.kv_set(
                        "summary",
                        session_id,
                        {"text": session.summary, "upto": session.summary_upto},
                    )
                except ProviderError as error:
                    log.warning("summary failed (%s); keeping the recent messages", error.reason)
                    summary_fallback = True
            messages = self._with_summary(session, kept) if not summary_fallback else kept
        else:
            messages = manager.compact(candidates, target, strategy)
            kept_ids = {m.id for m in messages}
            dropped = [m for m in candidates if m.id not in kept_ids]
        after = analyzer.count_messages(messages)
        event = AgentEvent(
            EventType.COMPACTION,
            {
                "strategy": strategy.value,
                "before_tokens": before,
                "after_tokens": after,
                "dropped": len(dropped),
                "fallback": summary_fallback,
                "forced": force,
            },
        )
        return Window(messages, [event])

    async def _summarize(self, dropped: list[Message], previous: str | None) -> str:
        lines = []
        if previous:
            lines.append(f"Previous summary:\n{previous}\n")
        lines.append("New messages:")
        for message in dropped:
            if message.role is Role.TOOL:
                lines.append(f"[tool {message.name} result] {message.content[:500]}")
            elif message.content:
                lines.append(f"{message.role.value}: {message.content}")
        request_messages = (
            Message(Role.SYSTEM, SUMMARY_PROMPT),
            Message(Role.USER, "\n".join(lines)),
        )
        chunks: list[str] = []
        models = self.runtime.models
        async for item in models.router.stream(
            models.chain,
            lambda model: ModelRequest(model=model, messages=request_messages, max_tokens=1024),
        ):
            if isinstance(item, TextDelta):
                chunks.append(item.text)
        text = "".join(chunks).strip()
        if not text:
            raise ProviderError(FailoverReason.SERVER, "the model returned an empty summary")
        return text
