"""Replies shown while they are written, for channels that can edit what they sent.

``LiveStream`` is a ``ReplyStream`` that keeps a snapshot of the reply (the
answer so far, reasoning streamed apart from it, what tool is running) and
hands it to the channel's ``show`` at most once every ``StreamOptions.every``
seconds: the first text at once, then at the platform's pace. A channel
subclasses it and writes ``show`` (send a message or a draft, then edit it)
and ``handover`` (what it left on the platform, e.g. that message's id).

Updates never hold the turn up: they run in one background task, at most one
at a time, each showing the newest snapshot (intermediate ones are skipped).
A platform that says "slow down" (``RetryLater``) gets fewer updates; an
update that fails is logged and the next one tries again. The final text
never depends on them: it is rendered, stored and sent by the dispatcher
after the turn (``Reply.live`` tells the channel's ``render`` which message
to finish).

``LiveMemory`` keeps what a stream left on the platform in storage while the
turn runs, so when a process dies mid-stream the next attempt finishes that
message instead of leaving a half reply beside a whole one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from bot.channel import StreamOptions
from bot.events import AgentEvent, EventType
from bot.storage.base import KeyValue

log = logging.getLogger(__name__)

NAMESPACE = "live"


class RetryLater(Exception):
    """Raised by ``LiveStream.show`` when the platform asks to slow down."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry in {seconds:.1f}s")
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The reply so far: ``text`` (Markdown, may end mid-sentence or mid-code-block),
    ``reasoning`` streamed apart from it (thinking mode ``stream``, where shown), and
    ``status``: what is running just now ("Running current_time…"), or ""."""

    text: str
    reasoning: str = ""
    status: str = ""


class LiveMemory:
    """What a stream left on the platform, kept in storage while its turn runs.

    ``earlier``: an earlier attempt at this turn may have left a record. When it did
    not, and this one remembered nothing (a draft, shown without a message), ``forget``
    has nothing to delete and costs no trip to storage."""

    def __init__(self, storage: KeyValue, key: str, *, earlier: bool = True) -> None:
        self.storage = storage
        self.key = key
        self._stored = earlier

    async def recall(self) -> dict[str, Any] | None:
        found = await self.storage.kv_get(NAMESPACE, self.key)
        return found if isinstance(found, dict) else None

    async def remember(self, value: dict[str, Any]) -> None:
        self._stored = True  # (before the write: one that fails may still have landed)
        await self.storage.kv_set(NAMESPACE, self.key, value)

    async def forget(self) -> None:
        if self._stored:
            await self.storage.kv_delete(NAMESPACE, self.key)
            self._stored = False


class LiveStream:
    """The base of a channel's live reply; subclasses write ``show`` and ``handover``."""

    def __init__(self, options: StreamOptions) -> None:
        self.options = options
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.status = ""
        self._round = 0  # where the text of the model round under way starts
        self.updates = 0  # snapshots shown
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._next = 0.0  # monotonic time before which no update is shown

    # -- what a channel writes -------------------------------------------------

    async def show(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` visible (send, then edit). Raise ``RetryLater`` on a 429."""
        raise NotImplementedError

    async def handover(self) -> dict[str, Any] | None:
        """What the stream left on the platform, for ``Reply.live`` (None: nothing)."""
        return None

    # -- ReplyStream -------------------------------------------------------------

    async def feed(self, event: AgentEvent) -> None:
        if not self.options.live or not self._take(event):
            return
        self._dirty.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> dict[str, Any] | None:
        """Stop updating (an update under way is let finish, so what it sent is
        known); then what the stream left on the platform."""
        task, self._task = self._task, None
        if task is not None:
            await self._idle.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return await self.handover()

    # -- the rest ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot("".join(self.text), "".join(self.reasoning), self.status)

    def _take(self, event: AgentEvent) -> bool:
        data = event.data
        if event.type is EventType.TEXT:
            self.text.append(data["delta"])
            self.status = ""
        elif event.type is EventType.THINKING:
            if data.get("mode") != "stream" or not self.options.show_reasoning:
                return False
            self.reasoning.append(data["content"])
        elif event.type is EventType.TOOL_CALL:
            self.status = f"Running {data['name']}…"
            self._round = len(self.text)
        elif event.type is EventType.TOOL_RESULT:
            self.status = data.get("display") or ""
            self._round = len(self.text)
        elif event.type is EventType.FAILOVER:  # the round starts again on another model:
            del self.text[self._round :]  # what the failed one wrote is not the answer
            self.status = ""
        else:
            return False
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            wait = self._next - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            self._idle.clear()
            try:
                await self.show(self.snapshot())
                self.updates += 1
                self._next = loop.time() + self.options.every
            except RetryLater as slow:
                self._next = loop.time() + max(slow.seconds, self.options.every)
                self._dirty.set()  # what was not shown is shown later
            except Exception:
                log.warning("a live update failed; it is tried again", exc_info=True)
                self._next = loop.time() + self.options.every
                self._dirty.set()
            finally:
                self._idle.set()
