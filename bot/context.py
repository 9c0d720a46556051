"""What a turn sends to the model: the session's transcript, cached, counted and compacted.

The full transcript stays in storage; compaction changes only what is sent.

Each session keeps, in the process, its *window*: the messages after the
last compaction point, with their token estimates and a running total, plus
(for ``keep_important``) the older messages kept in front of it and (for
``summarize``) the rolling summary. A turn adds what is new and checks the
total; only when it passes the threshold does compaction look at the
window, move its start forward and drop what fell out of it from memory.
So a turn costs time in proportion to what is new, not to the session's
length.

How big a request is: the provider's count of the session's last request
(``usage.input_tokens``, reported back through ``observe``) plus the
estimate of what was added since; before a session has one in this process
(or after a compaction), the estimate alone. Estimates come from
``TokenEstimator`` and need no vocabulary (``bot.compaction.analyzer`` has
their error). A provider count below half the estimate is not believed (a
server that does not count, or counts a cache apart); one above it also
shrinks, for that session, the estimate a compaction aims at, so that what
it keeps fits with the system prompt and tools the estimate does not see.

Memory is bounded however many chats come and go: the cache holds at most
``MAX_CACHED_SESSIONS`` sessions and ``MAX_CACHED_TOKENS`` estimated tokens
of windows, least recently used first out; an evicted session is read from
storage again on its next turn.

Storage shared between processes (Redis) is re-read after the last known
id on every turn, so a message another process appended is seen; a store
that can (``TurnLoader``) reads it with the session's settings in one trip
when the turn begins (``begin``). The summary is stored under
``kv("summary", session)`` with the id of the last message it covers.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from bot.compaction import CompactionManager, CompactionStrategy, TokenEstimator
from bot.compaction.analyzer import REPLY_PRIMING
from bot.config import AgentConfig
from bot.events import AgentEvent, CompactionData, EventType
from bot.failover.errors import FailoverReason, ProviderError
from bot.media import MediaStore
from bot.messages import Attachment, Message, Role, image_note
from bot.storage.base import JSON, ConversationStore

if TYPE_CHECKING:
    from bot.storage.redis import RedisStorage
    from bot.storage.redis_client import ScriptCall

# Asks the model: the messages to send and the most tokens to answer in; returns its text.
Summarize = Callable[[tuple[Message, ...], int], Awaitable[str]]

log = logging.getLogger(__name__)

MAX_CACHED_SESSIONS = 1000
MAX_CACHED_TOKENS = 4_000_000  # estimated; about 16 MB of text
SUMMARY_PROMPT = (
    "You maintain a running summary of a chat between a user and an assistant. "
    "Merge the previous summary (if any) with the new messages into one concise summary "
    "that keeps names, facts, decisions, open questions and anything the user asked to "
    "remember. Write only the summary."
)
SUMMARY_MAX_TOKENS = 1024
MAX_IMAGES = 4  # images sent with their bytes per request (the latest); older ones as a note


_epochs = itertools.count(1)


@runtime_checkable
class TurnLoader(Protocol):
    """A shared store that reads what a turn starts from in one trip (Redis)."""

    async def load_turn(
        self, session_id: str, after_id: int | None = None, *, summary: bool = False
    ) -> tuple[dict[str, Any], Any, list[Message]]:
        """The session's settings, its messages after ``after_id`` and, with ``summary``,
        ``kv_get("summary", session_id)`` (the messages then start after its ``upto``)."""
        ...


@runtime_checkable
class TurnScript(TurnLoader, Protocol):
    """A ``TurnLoader`` whose read can join another trip: its script, and its result read
    (Redis: the trip that joins a turn's lanes)."""

    def load_turn_call(
        self, session_id: str, after_id: int | None = None, summary: bool = False
    ) -> ScriptCall: ...

    def loaded_turn(self, raw: Any) -> tuple[dict[str, Any], Any, list[Message]]: ...


Preload = tuple[Any, int]
"""What ``ContextBuilder.turn_call``'s read was made against: the session's cache entry
(None: not cached) and the last message id it had."""


@dataclass(slots=True)
class _Session:
    window: list[Message] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    total: int = 0  # estimated tokens of ``window``
    extra: int = 0  # estimated tokens of ``prefix`` and the summary's messages
    counted_for: str = ""
    prefix: list[Message] = field(default_factory=list)
    last_id: int = 0
    summary: str | None = None
    summary_upto: int = 0
    loaded: bool = False
    fresh: bool = False  # read by ``begin`` for the turn now starting: its window needs no read
    # what is sent changes other than by appending: a provider count no longer applies
    epoch: int = field(default_factory=lambda: next(_epochs))
    reported: int = 0  # the provider's count of a request of this epoch,
    reported_at: int = 0  # and the estimate of that request
    aim: float = 1.0  # estimate / provider count, when the provider counts more (else 1)


@dataclass
class Window:
    messages: list[Message]
    events: list[AgentEvent] = field(default_factory=list)
    estimate: int = 0  # of ``messages``, for ``observe``
    epoch: int = 0


class _Known:
    """A counter that answers from the session's stored estimates (by object identity,
    so only while those messages are held), estimating anything else."""

    def __init__(self, estimator: TokenEstimator, known: dict[int, int]) -> None:
        self.estimator = estimator
        self.known = known

    def count_text(self, text: str) -> int:
        return self.estimator.count_text(text)

    def count_message(self, message: Message) -> int:
        found = self.known.get(id(message))
        return found if found is not None else self.estimator.count_message(message)

    def count_messages(self, messages: Iterable[Message]) -> int:
        return REPLY_PRIMING + sum(self.count_message(m) for m in messages)


@dataclass(frozen=True, slots=True)
class Budget:
    """How big a request may grow before it is compacted (``agent.context``)."""

    max_tokens: int
    threshold: float  # compact past this share of ``max_tokens``,
    reserve: int  # less this much, kept free for the reply

    @classmethod
    def from_config(cls, agent: AgentConfig) -> Budget:
        context = agent.context
        reserve = max(context.reserve_tokens, agent.max_output_tokens)
        return cls(context.max_tokens, context.compaction_threshold, reserve)

    @property
    def target(self) -> int:
        return max(int(self.max_tokens * self.threshold) - self.reserve, 256)


class ContextBuilder:
    """Builds each turn's window from ``storage``; ``summarize`` asks the model for
    the rolling summary (strategy ``summarize``)."""

    def __init__(
        self,
        storage: ConversationStore,
        *,
        budget: Budget,
        strategy: CompactionStrategy,
        summarize: Summarize,
        media: MediaStore | None = None,
    ) -> None:
        self.storage = storage
        self.media = media or MediaStore.default(storage=storage)  # PostgreSQL keeps media
        self.budget = budget
        self.strategy = strategy
        self.summarize = summarize
        self.shared = bool(getattr(storage, "shared", False))
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._held = 0  # estimated tokens in the cached sessions' windows
        self._estimators: dict[str, TokenEstimator] = {}

    def forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._held -= session.total + session.extra

    def estimator(self, model_ref: str) -> TokenEstimator:
        model = model_ref.partition("/")[2] or model_ref
        found = self._estimators.get(model)
        if found is None:
            if len(self._estimators) >= 64:  # models come from config and /model: few
                self._estimators.clear()
            found = self._estimators[model] = TokenEstimator(model)
        return found

    def observe(self, session_id: str, window: Window, input_tokens: int) -> None:
        """The provider counted ``input_tokens`` for the request made of ``window``."""
        session = self._sessions.get(session_id)
        if session is None or session.epoch != window.epoch or window.estimate <= 0:
            return
        if input_tokens * 2 < window.estimate:
            return
        session.reported, session.reported_at = input_tokens, window.estimate
        session.aim = min(1.0, window.estimate / input_tokens)

    def _evict(self) -> None:
        sessions = self._sessions
        while len(sessions) > MAX_CACHED_SESSIONS or (
            self._held > MAX_CACHED_TOKENS and len(sessions) > 1
        ):
            _, session = sessions.popitem(last=False)
            self._held -= session.total + session.extra

    def turn_call(self, session_id: str) -> tuple[ScriptCall, Preload] | None:
        """``begin``'s read as a script, for the turn to run in the trip that joins its
        Redis lanes (``Slot.preload``), with what it was read against; ``begin`` takes
        the result if the session's cache is still as it was. None: not on Redis."""
        if not self.shared or not isinstance(self.storage, TurnScript):
            return None
        session = self._sessions.get(session_id)
        after = session.last_id if session is not None else 0
        call = self.storage.load_turn_call(session_id, after or None, session is None)
        return call, (session, after)

    async def begin(
        self, session_id: str, preloaded: tuple[Preload, Any] | None = None
    ) -> dict[str, Any] | None:
        """A turn begins: on a ``TurnLoader``, the session's settings, read in the same trip
        as what other processes appended since (and, the first time, its summary), so the
        turn's first window costs no trip of its own. None: the store cannot; the caller
        reads the settings itself. ``preloaded``: ``turn_call``'s read and its result,
        used when the session's cache has not moved since."""
        if not self.shared or not isinstance(self.storage, TurnLoader):
            return None
        session = self._sessions.get(session_id)
        first = session is None
        after = session.last_id if session is not None else 0
        if (
            preloaded is not None
            and isinstance(self.storage, TurnScript)
            and preloaded[0][0] is session  # (not evicted, nor cached anew, meanwhile)
            and preloaded[0][1] == after
        ):
            settings, stored, messages = self.storage.loaded_turn(preloaded[1])
        else:
            settings, stored, messages = await self.storage.load_turn(
                session_id, after_id=after or None, summary=first
            )
        if session is None:
            session = _Session()
            self._summarized(session, stored)
            self.forget(session_id)  # (one cached meanwhile: this read is as recent)
            self._sessions[session_id] = session
            self._evict()
        elif self._sessions.get(session_id) is not session:
            return settings  # evicted meanwhile: the window reads it afresh
        self._extend(session, messages)
        session.loaded = session.fresh = True
        return settings

    async def unfinished(self, session_id: str, text: str) -> bool:
        """Whether the transcript ends with ``text`` from the user and no answer after it
        (only tool rounds that finished): a turn for it was cut short after it was stored."""
        session = await self._session(session_id)
        for message in reversed(session.window):
            if message.role is Role.USER:
                return message.content == text
            if message.role is not Role.TOOL and not message.tool_calls:
                return False
        return False

    @staticmethod
    def _summarized(session: _Session, stored: Any) -> None:
        if isinstance(stored, dict):
            session.summary = stored.get("text")
            session.summary_upto = int(stored.get("upto", 0))
            session.last_id = session.summary_upto

    async def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = _Session()
            self._summarized(session, await self.storage.kv_get("summary", session_id))
            self._sessions[session_id] = session
            self._evict()
        else:
            self._sessions.move_to_end(session_id)
        if session.fresh:  # read when the turn began (``begin``)
            session.fresh = False
        elif self.shared or not session.loaded:
            fresh = await self.storage.load_messages(session_id, after_id=session.last_id or None)
            self._extend(session, fresh)
            session.loaded = True
        return session

    def _extend(self, session: _Session, messages: list[Message]) -> None:
        for message in messages:
            if message.id is not None and message.id <= session.last_id:
                continue
            session.window.append(message)
            session.last_id = message.id or session.last_id

    async def append(
        self,
        session_id: str,
        messages: list[Message],
        reply: tuple[int, list[JSON]] | None = None,
        *,
        then: ScriptCall | None = None,
    ) -> list[Message]:
        """Store a turn's messages; ``reply`` (inbox id, parts) in the same write (see
        ``TranscriptStore.append_messages``); ``then``, on Redis storage only, a script
        run in the same trip (``RedisStorage.append_messages``)."""
        # Images are stored by reference: their bytes stay in the media store.
        session = self._sessions.get(session_id)
        if session is not None:
            session.fresh = False  # (a turn that ended before its first window)
        bare = [_bare(m) for m in messages]
        if then is None:
            stored = await self.storage.append_messages(session_id, bare, reply)
        else:
            redis = cast("RedisStorage", self.storage)
            stored = await redis.append_messages(session_id, bare, reply, then=then)
        session = self._sessions.get(session_id)
        if session is not None and session.loaded and not self.shared:
            self._extend(session, stored)
            estimator = self._estimators.get(session.counted_for)
            if estimator is not None:  # counted now, so the cache's size is known
                self._count(session, estimator)
        return stored

    def _count(self, session: _Session, estimator: TokenEstimator) -> TokenEstimator:
        before = session.total + session.extra
        if session.counted_for != estimator.model:
            session.counts, session.total, session.counted_for = [], 0, estimator.model
            session.extra = estimator.count_messages(self._extra(session)) - REPLY_PRIMING
            session.epoch, session.reported = next(_epochs), 0
        for message in session.window[len(session.counts) :]:
            tokens = estimator.count_message(message)
            session.counts.append(tokens)
            session.total += tokens
        self._held += session.total + session.extra - before
        if self._held > MAX_CACHED_TOKENS:
            self._evict()
        return estimator

    def _summary_messages(self, session: _Session) -> list[Message]:
        if not session.summary:
            return []
        return [
            Message(Role.USER, f"[Summary of the earlier conversation]\n{session.summary}"),
            Message(Role.ASSISTANT, "Understood; I will keep that in mind."),
        ]

    def _extra(self, session: _Session) -> list[Message]:
        return [*session.prefix, *self._summary_messages(session)]

    def _send(self, session: _Session) -> list[Message]:
        return [*session.prefix, *self._summary_messages(session), *session.window]

    def _estimate(self, session: _Session, pending: int = 0) -> int:
        return REPLY_PRIMING + session.total + session.extra + pending

    def _tokens(self, session: _Session, estimate: int) -> int:
        """The request's size: the provider's last count plus what was added since."""
        if session.reported:
            return session.reported + max(0, estimate - session.reported_at)
        return estimate

    async def usage(self, session_id: str, model_ref: str) -> dict[str, Any]:
        session = await self._session(session_id)
        self._count(session, self.estimator(model_ref))
        return {
            "tokens": self._tokens(session, self._estimate(session)),
            "max_tokens": self.budget.max_tokens,
        }

    async def window(
        self, session_id: str, model_ref: str, pending: Sequence[Message] = ()
    ) -> Window:
        """What to send: the stored window plus ``pending`` (this turn's unsaved messages)."""
        session = await self._session(session_id)
        estimator = self._count(session, self.estimator(model_ref))
        target = self.budget.target
        estimate = self._estimate(session, sum(estimator.count_message(m) for m in pending))
        if self._tokens(session, estimate) <= target:
            window = Window([*self._send(session), *pending], [], estimate, session.epoch)
        else:
            window = await self._compact(session_id, session, model_ref, target, list(pending))
        if any(m.attachments for m in window.messages):
            window.messages = await self._with_images(window.messages)
        return window

    async def _with_images(self, messages: list[Message]) -> list[Message]:
        """The latest ``MAX_IMAGES`` images go with their bytes; older ones (and any whose
        bytes are gone) become a text note: old images are dropped first."""
        shown = 0
        out: list[Message] = []
        for message in reversed(messages):
            if message.attachments:
                kept, notes = [], []
                for image in message.attachments:
                    data = image.data if shown < MAX_IMAGES else None
                    if data is None and shown < MAX_IMAGES:
                        data = await self.media.read(image.media_id)
                    if data is None:
                        notes.append(image_note(image))
                    else:
                        kept.append(Attachment(image.media_id, image.mime, image.name, data))
                        shown += 1
                content = "\n".join([*notes, message.content]) if notes else message.content
                message = replace(message, content=content, attachments=tuple(kept))
            out.append(message)
        return out[::-1]

    async def compact_hard(
        self, session_id: str, model_ref: str, pending: Sequence[Message]
    ) -> list[AgentEvent]:
        session = await self._session(session_id)
        self._count(session, self.estimator(model_ref))
        target = self.budget.target // 2
        window = await self._compact(session_id, session, model_ref, target, pending, True)
        return window.events

    def _move_start(self, session: _Session, kept: list[Message]) -> None:
        """Keep the window's kept tail as the window; earlier kept messages become the prefix."""
        kept_ids = {id(m) for m in kept}
        start = len(session.window)
        while start > 0 and id(session.window[start - 1]) in kept_ids:
            start -= 1
        tail = session.window[start:]
        tail_ids = {id(m) for m in tail}
        window_ids = {id(m) for m in session.window} | {id(m) for m in session.prefix}
        session.prefix = [m for m in kept if id(m) in window_ids and id(m) not in tail_ids]
        session.window = tail
        session.counts = session.counts[start:]
        session.total = sum(session.counts)
        session.epoch, session.reported = next(_epochs), 0

    async def _compact(
        self,
        session_id: str,
        session: _Session,
        model_ref: str,
        target: int,
        pending: Sequence[Message],
        force: bool = False,
    ) -> Window:
        estimator = self.estimator(model_ref)
        known = {id(m): n for m, n in zip(session.window, session.counts, strict=True)}
        analyzer = _Known(estimator, known)
        pending_tokens = sum(analyzer.count_message(m) for m in pending)
        before = self._tokens(session, self._estimate(session, pending_tokens))
        target = max(int(target * session.aim), 1)
        held = session.total + session.extra
        if self.strategy is CompactionStrategy.SUMMARIZE:
            dropped, fallback = await self._fold(session_id, session, analyzer, target, pending)
        else:
            candidates = [*session.prefix, *session.window, *pending]
            kept = CompactionManager(analyzer).compact(candidates, target, self.strategy)
            kept_ids = {id(m) for m in kept}
            dropped, fallback = [m for m in candidates if id(m) not in kept_ids], False
            self._move_start(session, kept)
        session.extra = estimator.count_messages(self._extra(session)) - REPLY_PRIMING
        if self._sessions.get(session_id) is session:  # not evicted while summarizing
            self._held += session.total + session.extra - held
        after = self._estimate(session, pending_tokens)
        data = CompactionData(
            strategy=self.strategy.value,
            before_tokens=before,
            after_tokens=after,
            dropped=len(dropped),
            fallback=fallback,
            forced=force,
        )
        event = AgentEvent(EventType.COMPACTION, data)
        return Window([*self._send(session), *pending], [event], after, session.epoch)

    async def _fold(
        self,
        session_id: str,
        session: _Session,
        analyzer: _Known,
        target: int,
        pending: Sequence[Message],
    ) -> tuple[list[Message], bool]:
        """Strategy ``summarize``: fold what no longer fits into the rolling summary.

        Returns the messages dropped from the window, and whether the summary failed
        (then they are dropped all the same: the recent messages are kept)."""
        room = target - analyzer.count_text(session.summary or "") - 200
        kept = CompactionManager(analyzer).compact(
            [*session.window, *pending], max(room, 128), CompactionStrategy.KEEP_RECENT
        )
        kept_ids = {id(m) for m in kept}
        dropped = [m for m in session.window if id(m) not in kept_ids]
        fallback = False
        if dropped:
            try:
                session.summary = await self._summarize(dropped, session.summary)
                session.summary_upto = max(m.id or 0 for m in dropped)
                await self.storage.kv_set(
                    "summary", session_id, {"text": session.summary, "upto": session.summary_upto}
                )
            except ProviderError as error:
                log.warning("summary failed (%s); keeping the recent messages", error.reason)
                fallback = True
        self._move_start(session, kept)
        session.prefix = []
        return dropped, fallback

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
        request = (Message(Role.SYSTEM, SUMMARY_PROMPT), Message(Role.USER, "\n".join(lines)))
        text = (await self.summarize(request, SUMMARY_MAX_TOKENS)).strip()
        if not text:
            raise ProviderError(FailoverReason.SERVER, "the model returned an empty summary")
        return text


def _bare(message: Message) -> Message:
    if not any(a.data is not None for a in message.attachments):
        return message
    bare = tuple(Attachment(a.media_id, a.mime, a.name) for a in message.attachments)
    return replace(message, attachments=bare)
