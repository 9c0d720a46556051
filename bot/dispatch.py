"""From accepted inbound message to delivered reply, at least once and never twice.

``submit`` runs the access checks, stores the message in the inbox (the
platform's id deduplicates redeliveries) and hands it to the session's
mailbox; only then does the channel acknowledge the platform. A turn's reply
is rendered, stored with the inbox item, and sent part by part, each part
recorded as sent, so a restart resumes where it stopped: no acknowledged
message is lost, none is answered twice.

Claims (``bot.claims``) are leases with fencing tokens: a process that lost
one (it paused past the lease, or storage was away) finds out before it
sends anything, and cannot touch the new holder's claim. The last part of a
reply is recorded by marking the message done, and the other messages a
reply answers are marked done before it is sent, so a restart never answers
a message again.

A chat's order holds across processes too: on shared storage a turn opens a
message only when every earlier message of its chat is answered or in the same
turn; otherwise it lets go, and whoever answers the earlier one takes it next.

Under overload the mailbox admits at most the global cap of turns; the rest
wait in line with no task, no typing and no polling. "Typing" is shown only
for turns that run. Past ``agent.queuing.max_backlog`` waiting messages, a
chat is told once that it will have to wait (group chats, unless the
channel's ``busy_notice`` says otherwise), and is still answered in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from bot.access import AccessPolicy, RedisRateCounter, Verdict
from bot.channel import (
    DEFAULT_TRAITS,
    ChannelTraits,
    Reply,
    ReplyKind,
    ReplySink,
    ReplyStream,
    StreamOptions,
)
from bot.claims import CLAIM_TTL, Claims
from bot.commands import handle_command
from bot.events import AgentEvent, EventType
from bot.inbound import InboundMessage, JSONPart
from bot.logs import request_id, turn_id
from bot.media import Media
from bot.messages import Attachment
from bot.metrics import Metrics, TurnMeter
from bot.queuing import Mailbox, QueueMode
from bot.runtime import TurnWrite
from bot.storage.base import UNAVAILABLE, EarlierPending, Inbox, InboxItem
from bot.streaming import LiveMemory

if TYPE_CHECKING:
    from bot.runtime import AgentRuntime

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0
MAX_ATTEMPTS = 3


class ClaimLost(Exception):
    """This process no longer holds a message's claim: another one answers it."""


class Outcome(str, Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED = "refused"
    DRAINING = "draining"


class Dispatcher:
    """Accepts messages for every channel and answers them.

    ``process=False`` only stores (a web process when separate workers
    answer); ``sweep_every`` is how often stored messages nobody holds are
    picked up (after a crash, or from a web-only process).
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        access: AccessPolicy | None = None,
        process: bool = True,
        sweep_every: float = 10.0,
    ) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.access = access or AccessPolicy(runtime.config)
        self.sinks: dict[str, ReplySink] = {}
        self.draining = False
        self.process = process
        self.sweep_every = sweep_every
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claims = Claims(self.owner, lambda: self.runtime.storage)
        self.media = Media(runtime)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[Any]] = []
        self._told: set[str] = set()  # chats told to wait (busy, overflow) until their next turn
        self._deadlines: dict[str, asyncio.Timeout] = {}  # running turns, by message
        self._abandoned: set[str] = set()  # messages whose sender left before their turn
        # Messages opened as they were stored (``inbox_take``), until their turn takes
        # them: it need not open them again.
        self._opened: dict[int, InboxItem] = {}
        self._turn_seconds = 0.0  # a moving average, for the wait a busy notice announces
        self.metrics = Metrics()
        queuing = self.config.agent.queuing
        self.max_running = queuing.max_concurrent_global
        self.mailbox = Mailbox(
            self._handle,
            mode=QueueMode(queuing.mode),
            max_pending=queuing.max_pending,
            max_running=self.max_running,
        )

    @property
    def storage(self) -> Inbox:
        return self.runtime.storage

    def register(self, sink: ReplySink) -> None:
        self.sinks[sink.name] = sink

    async def start(self) -> None:
        """Pick up what was accepted but not answered before (a crash, a restart), then keep
        sweeping for messages nobody holds and renewing the claims this process holds."""
        await self.runtime.start()
        lanes = self.runtime.queue.redis
        if self.access.counter is None and lanes is not None:  # REDIS_URL: one shared count
            self.access.counter = RedisRateCounter(lanes.client, prefix=lanes.prefix + "rate:")
        # Claims are renewed even where nothing is swept: a channel may answer its own
        # messages here (``submit(answer_here=True)``) in a process that only stores.
        self._background = [asyncio.ensure_future(self._every(CLAIM_TTL / 3, self.claims.renew))]
        if not self.process:
            return
        await self.sweep()
        self._background.append(asyncio.ensure_future(self._every(self.sweep_every, self.sweep)))

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except UNAVAILABLE as error:
                log.warning("storage unreachable (%s); %s will retry", error, job.__name__)
            except Exception:
                log.exception("background job %s failed; will retry", job.__name__)

    async def sweep(self) -> int:
        """Claim and queue stored messages that no live process holds.

        On shared storage a pass takes only what this process has room for, so
        one busy process does not hoard the backlog other processes could answer.
        """
        if self.draining:
            return 0
        free = [n for n in await self.storage.inbox_pending_ids() if n not in self.claims]
        if self.storage.shared:
            room = max(4 * self.max_running, 100) - self.mailbox.waiting
            free = free[: max(room, 0)]
        if not free:
            return 0
        queued = 0
        for n in await self.claims.take_many(free):
            item = await self.storage.inbox_get(n)
            message = InboundMessage.from_dict(item.data) if item is not None else None
            if message is None or message.channel not in self.sinks:
                await self.claims.release(n)
                continue
            self._enqueue(message, n)
            queued += 1
        if queued:
            log.info("picked up %d stored message(s)", queued)
        return queued

    async def submit(
        self, message: InboundMessage, *, when_draining: bool = False, answer_here: bool = False
    ) -> Outcome:
        """Check, store and queue ``message``. ``answer_here``: answer it in this process
        even when it only stores (a channel that streams the reply on the request)."""
        if self.draining and not when_draining:
            return Outcome.DRAINING
        # Claimed in the same step as it is stored (one trip on shared storage) when this
        # process answers it.
        here = (self.process or answer_here) and not self.draining
        claim, since = self.claims.ahead()
        data = message.to_dict()
        opened = False
        if here:  # and opened with it when its chat has nothing earlier pending
            taken = await self.storage.inbox_take(message.dedupe_key, data, claim)
            item_id, opened = taken if taken is not None else (None, False)
        else:
            item_id = await self.storage.inbox_add(message.dedupe_key, data)
        if item_id is None:
            log.info(
                "%s message %s was stored before; ignored", message.channel, message.message_id
            )
            return Outcome.DUPLICATE
        if here:
            self.claims.adopt(item_id, claim[0], since)
        if opened:
            self._opened[item_id] = InboxItem(item_id, data, attempts=1)
        # Checked after deduplication: a platform's redelivery is not a second message.
        verdict = await self.access.admit(message)
        if verdict.verdict is not Verdict.ALLOWED:
            log.info(
                "refused %s sender on %s: %s", message.channel, message.chat_id, verdict.verdict
            )
            await self.storage.inbox_done(item_id)
            self.claims.forget(item_id)
            self._opened.pop(item_id, None)
            # A sender waiting on its request is told every time; others once.
            self._spawn(self._refuse(message, verdict.reason if answer_here else verdict.notice))
            return Outcome.REFUSED
        # DEBUG: at webhook rates this line (a record, a JSON line, a write) was about a
        # tenth of the intake's CPU; each turn logs at INFO, with the same inbox id.
        log.debug("stored %s message as inbox-%d", message.channel, item_id)
        if here and not self.draining:
            self._enqueue(message, item_id)
        elif here:  # draining began meanwhile: left stored for the next process
            self._opened.pop(item_id, None)
            await self.claims.release(item_id)
        return Outcome.ACCEPTED

    def _enqueue(self, message: InboundMessage, item_id: int) -> None:
        mode = self.config.channel(message.channel).queue_mode or self._traits(message).queue_mode
        result = self.mailbox.submit(
            message.session_id, item_id, mode=QueueMode(mode) if mode else None
        )
        if not result.accepted:
            self._tell_once(
                message,
                "I'm still working on your earlier messages, so this one will only be "
                "mentioned, not answered on its own. Please send it again in a moment.",
            )
        elif result.position and self._busy(message):
            self._tell_once(message, self._busy_text())

    def _busy(self, message: InboundMessage) -> bool:
        limit = self.config.agent.queuing.max_backlog
        if not limit or self.mailbox.waiting <= limit:
            return False
        wanted = self.config.channel(message.channel).busy_notice
        return message.group if wanted is None else wanted

    def _busy_text(self) -> str:
        seconds = self._turn_seconds * self.mailbox.waiting / max(self.max_running, 1)
        wait = f"about {round(seconds / 60)} minutes" if seconds >= 90 else "a minute or so"
        return (
            "I'm answering a lot of messages right now. Yours is in the queue and "
            f"I'll get to it in {wait}."
        )

    def _tell_once(self, message: InboundMessage, text: str) -> None:
        """A notice for a chat that waits, sent once until its next turn runs: the work
        for waiting messages stays bounded per chat, not per message."""
        if message.session_id in self._told:
            return
        self._told.add(message.session_id)
        self._spawn(self._notify(message, text))

    def _traits(self, message: InboundMessage) -> ChannelTraits:
        sink = self.sinks.get(message.channel)
        return sink.traits if sink is not None else DEFAULT_TRAITS

    def abandon(self, message: InboundMessage) -> None:
        """The sender stopped waiting (a browser closed the page): stop the turn now, as a
        timeout would, so it frees its lane slots; one not started yet will not start."""
        deadline = self._deadlines.get(message.dedupe_key)
        if deadline is not None:
            deadline.reschedule(asyncio.get_running_loop().time())
        elif len(self._abandoned) < 10_000:
            self._abandoned.add(message.dedupe_key)

    @contextlib.asynccontextmanager
    async def _deadline(self, message: InboundMessage, limit: float) -> AsyncIterator[None]:
        key = message.dedupe_key
        async with asyncio.timeout(0 if key in self._abandoned else limit) as deadline:
            self._abandoned.discard(key)
            self._deadlines[key] = deadline
            try:
                yield
            finally:
                self._deadlines.pop(key, None)

    async def _done(self, item: InboxItem, message: InboundMessage | None = None) -> None:
        self.claims.finishing(item.id)  # a renewal racing the write: not a lost claim
        later = await self.storage.inbox_done(item.id)
        self.claims.forget(item.id)
        message = message or InboundMessage.from_dict(item.data)
        await self._settled(message)
        if later and self.process and not self.draining:
            # Its chat's next messages, handed back while this one was held here.
            for n in await self.claims.take_many(later):
                self._enqueue(message, n)

    async def _settled(self, message: InboundMessage) -> None:
        sink = self.sinks.get(message.channel)
        if sink is None:
            return
        try:
            await sink.settled(message)
        except Exception:
            log.exception("%s failed to settle a message", message.channel)

    async def _refuse(self, message: InboundMessage, notice: str | None) -> None:
        if notice:
            await self._notify(message, notice)
        await self._settled(message)

    async def _notify(self, message: InboundMessage, text: str) -> None:
        sink = self.sinks.get(message.channel)
        if sink is None:
            return
        try:
            await sink.notify(message, text)
        except Exception as error:
            self.metrics.send_failed(message.channel, error)
            log.exception("could not send a notice on %s", message.channel)
        else:
            self.metrics.sent(message.channel)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, session_id: str, item_ids: list[int], dropped: list[int]) -> None:
        # Each turn runs in its own task: its log lines carry the stored message's id.
        turn_id.set(f"inbox-{item_ids[-1]}" if item_ids else None)
        request_id.set(None)
        self._told.discard(session_id)
        items: list[InboxItem] = []
        opened = {n: item for n in (*item_ids, *dropped) if (item := self._opened.pop(n, None))}
        try:
            ours = await self.claims.check([*item_ids, *dropped])
            # Read and counted as an attempt in one step (one trip on shared storage).
            items = await self._open_in_order(
                [n for n in item_ids if n in ours], [n for n in dropped if n in ours], opened
            )
            lost = [i for n in dropped if n in ours and (i := await self.storage.inbox_get(n))]
            found = {item.id for item in (*items, *lost)} if items else set()
            for closed in ours - found:  # answered meanwhile, or to wait: let go
                await self.claims.release(closed)
            if items:
                await self._answer(session_id, items, lost)
        except asyncio.CancelledError:
            raise
        except ClaimLost as error:
            log.warning("lost the claim on inbox item %s; another process answers it", error)
        except UNAVAILABLE as error:
            # Not the message's fault: it stays stored and is tried again once the
            # store is back, however long that takes.
            log.warning("storage unreachable answering %s (%s); will retry", session_id, error)
            await self._retry_later([*item_ids, *dropped])
        except Exception:
            log.exception("answering %s failed", session_id)
            if items and items[-1].attempts >= MAX_ATTEMPTS:
                message = InboundMessage.from_dict(items[-1].data)
                await self._notify(message, "Sorry, something went wrong answering that.")
                with contextlib.suppress(Exception):
                    for item in items:
                        await self._done(item)
                return
            await self._retry_later([*item_ids, *dropped])

    async def _open_in_order(
        self, item_ids: list[int], dropped: list[int], opened: dict[int, InboxItem]
    ) -> list[InboxItem]:
        """A turn's items, read and counted, up to the first one that must wait: on
        shared storage, one whose chat has an earlier message that is neither answered
        nor part of this turn (held by another process, handed back, or behind this one
        in this process's line). That one's claim is let go with the check; the caller
        lets go of the rest. Whoever answers the earlier message takes them next
        (``_done``; else a sweep), so a chat's order holds across processes.

        An item in ``opened`` was opened as it was stored, first of its chat's pending
        messages, and is still claimed by this process (the caller checked): nobody
        else can have touched it, so it is taken as it is."""
        items: list[InboxItem] = []
        turn = [*item_ids, *dropped]
        for item_id in item_ids:
            if item_id in opened:
                items.append(opened[item_id])
                continue
            claim = self.claims.token(item_id) if self.storage.shared else None
            try:
                item = await self.storage.inbox_open(item_id, claim, turn)
            except EarlierPending:
                self.claims.forget(item_id)
                log.info("inbox-%d waits for an earlier message of its chat", item_id)
                break
            if item is not None:
                items.append(item)
        return items

    async def _retry_later(self, item_ids: list[int]) -> None:
        """Let go of items whose turn failed: the sweeper (this process's or another's)
        claims them again on its next pass, which spaces out the attempts."""
        for item_id in item_ids:
            with contextlib.suppress(Exception):  # unreachable store: the claim lapses
                await self.claims.release(item_id)

    async def _answer(self, session_id: str, items: list[InboxItem], lost: list[InboxItem]) -> None:
        last = items[-1]
        message = InboundMessage.from_dict(last.data)
        sink = self.sinks[message.channel]
        if last.reply is not None:  # answered before; its delivery was cut short
            for item in items[:-1]:
                await self._done(item)
            await self._deliver(sink, message, last, last.reply)
            return
        texts: list[str] = []
        images: list[Attachment] = []
        for item in items:  # (each one's attempt counted when it was opened)
            inbound = InboundMessage.from_dict(item.data)
            answer = await handle_command(self.runtime, session_id, inbound.text, message=inbound)
            text = inbound.text
            if answer is None and inbound.attachments:  # photos, voice notes, files
                prepared = await self.media.prepare(inbound, sink)
                answer, text = prepared.answer, prepared.text
                images.extend(prepared.images)
            if answer is not None:
                parts = sink.render(Reply(answer, kind=ReplyKind.COMMAND))
                await self._deliver(sink, inbound, item, parts)
                continue
            texts.append(text)
        if not texts:
            return
        if lost:
            dropped = "\n".join(f"- {InboundMessage.from_dict(i.data).text}" for i in lost)
            texts.insert(0, f"[These earlier messages arrived while I was busy:]\n{dropped}")
        options = self._stream_options(sink, message, resumed=last.attempts > 1)
        text = "\n\n".join(texts)
        meter = self.metrics.turn(message.channel, arrived=message.timestamp, streams=options.live)
        pending = [i for i in items if i.reply is None]
        target = pending[-1] if pending else last
        turn = _Turn(sink, message, session_id, text, options, images, meter, target.id)
        reply = await self._timed_turn(turn)
        if turn.write.stored and turn.write.reply is not None:
            parts = turn.write.reply[1]  # stored with the turn's transcript
        else:  # (a turn stopped by its deadline, before its reply was made)
            parts = sink.render(reply) if reply else []
            await self.storage.inbox_set_reply(target.id, parts)
        # The reply is stored with the last message: the others it answers are done now,
        # before it goes out, so a restart never answers them again.
        for item in [*pending[:-1], *lost]:
            await self._done(item)
        await self._deliver(sink, message, target, parts, meter)
        if options.memory is not None:
            await options.memory.forget()

    def _stream_options(
        self, sink: ReplySink, message: InboundMessage, *, resumed: bool
    ) -> StreamOptions:
        config, traits = self.config.channel(message.channel), sink.traits
        live = traits.streams and config.streaming is not False
        return StreamOptions(
            show_reasoning=self._shows_reasoning(message),
            live=live,
            every=config.stream_every or traits.stream_every,
            memory=(
                LiveMemory(self.runtime.storage, message.dedupe_key, earlier=resumed)
                if live
                else None
            ),
            resumed=resumed,
        )

    async def _timed_turn(self, turn: _Turn) -> Reply:
        started = time.monotonic()
        limit = self.config.agent.queuing.turn_timeout
        outcome = "failed"
        try:
            async with self._deadline(turn.message, limit):
                reply = await self._run_turn(turn)
            outcome = "error" if reply.kind is ReplyKind.ERROR else "answered"
        except TimeoutError:
            outcome = "timeout"
            log.warning("turn for %s took longer than %ss; stopped", turn.session_id, limit)
            reply = Reply(
                "Sorry, that took too long and I had to stop. Please try again.",
                kind=ReplyKind.ERROR,
            )
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            turn.meter.finish(outcome)
        self._turn_seconds += (time.monotonic() - started - self._turn_seconds) / 10
        return reply

    async def _run_turn(self, turn: _Turn) -> Reply:
        """Run the turn, its events fed to the channel's stream as they come; the
        finished reply as the channel is to show it."""
        sink, message = turn.sink, turn.message
        stream = sink.open_stream(message, turn.options)
        typing: list[asyncio.Task[None]] = []

        def start_typing() -> None:  # once the turn holds its lanes: not while it waits
            typing.append(asyncio.ensure_future(self._keep_typing(sink, message)))

        try:
            # Closed here, not by the garbage collector: the turn's transcript write
            # (in the generator's finally) is done, or has failed, before we go on.
            run = self.runtime.run(
                turn.session_id,
                turn.text,
                channel=message.channel,
                tool_format=sink.traits.tool_format,
                on_start=start_typing,
                attachments=turn.images,
                resumed=turn.options.resumed,
                write=turn.write,
            )
            async with contextlib.aclosing(run) as events:
                reply = await _collect(events, stream, turn.options.show_reasoning, turn.meter)
                # Rendered before the turn's events close: the reply is then stored with
                # the transcript, in one write.
                turn.write.reply = (turn.target, sink.render(reply) if reply else [])
                return reply
        finally:
            for task in typing:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _shows_reasoning(self, message: InboundMessage) -> bool:
        configured = self.config.channel(message.channel).show_reasoning
        return self._traits(message).shows_reasoning if configured is None else configured

    async def _keep_typing(self, sink: ReplySink, message: InboundMessage) -> None:
        while True:
            try:
                await sink.typing(message)
            except Exception:
                log.debug("typing signal failed on %s", message.channel, exc_info=True)
            await asyncio.sleep(TYPING_EVERY)

    async def _deliver(
        self,
        sink: ReplySink,
        message: InboundMessage,
        item: InboxItem,
        parts: list[JSONPart],
        meter: TurnMeter | None = None,
    ) -> None:
        """Send the parts not sent yet, each only while this process still holds the
        message's claim; the last part's record is the message being marked done."""
        for index in range(item.sent, len(parts)):
            if not await self.claims.check([item.id]):
                raise ClaimLost(item.id)
            try:
                await sink.send_part(message, parts[index])
            except Exception as error:
                self.metrics.send_failed(message.channel, error)
                raise
            self.metrics.sent(message.channel)
            if meter is not None:
                meter.visible()
            if index + 1 < len(parts):
                await self.storage.inbox_mark_sent(item.id, index + 1)
        await self._done(item, message)

    async def drain(self, grace: float) -> None:
        """Stop taking turns; give the running ones ``grace`` seconds; leave the rest stored."""
        self.draining = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.mailbox.close(grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.claims.release_all()


@dataclass(frozen=True, slots=True)
class _Turn:
    """What one model turn answers, and where its reply goes."""

    sink: ReplySink
    message: InboundMessage
    session_id: str
    text: str
    options: StreamOptions
    images: list[Attachment]
    meter: TurnMeter
    target: int  # the inbox item the reply is stored with
    write: TurnWrite = field(default_factory=TurnWrite)


async def _collect(
    events: AsyncIterator[AgentEvent],
    stream: ReplyStream,
    shows_reasoning: bool,
    meter: TurnMeter | None = None,
) -> Reply:
    """Feed a turn's events to the channel's stream; the reply they make up, with what
    the stream left on the platform (``Reply.live``)."""
    tools: list[str] = []
    reply = Reply()
    unseen = meter is not None and meter.streams  # the first streamed text is seen at once
    try:
        async for event in events:
            await stream.feed(event)
            kind = event.type
            if kind is EventType.TEXT:
                if unseen and meter is not None:
                    unseen = False
                    meter.visible()
            elif kind is EventType.TOOL_RESULT and event.data.get("display"):
                tools.append(event.data["display"])
            elif kind is EventType.FAILOVER and meter is not None:
                meter.failover(event.data["reason"])
            elif event.type is EventType.ERROR:
                reply = Reply(event.data["message"], kind=ReplyKind.ERROR)
                break
            elif event.type is EventType.DONE:
                if meter is not None:
                    meter.usage(event.data["model"], event.data["usage"])
                reasoning = event.data.get("thinking") or None
                reply = Reply(event.data["text"], reasoning=reasoning if shows_reasoning else None)
                break
    finally:
        live = await stream.close()
    shown = tuple(tools) if reply.kind is ReplyKind.ANSWER else ()
    return replace(reply, tools=shown, live=live)
