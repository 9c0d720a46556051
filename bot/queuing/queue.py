"""Lanes per session and one global lane: a turn holds its session's lane, then a global slot.

::

    async with manager.slot(session_id) as slot:
        if not slot.take_now():                   # both lanes free: nothing to wait for
            async for position in slot.wait():    # yields only while queued
                ...                               # e.g. yield AgentEvent("queue", ...)
        ...                                       # the turn runs here

Leaving the block (normally, by an exception, a cancel or the generator
being closed) releases whatever was taken. A session lane is dropped as soon
as it is idle, so memory follows the number of chats in flight, not the
number ever seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bot.queuing.lane import Lane

if TYPE_CHECKING:
    from bot.queuing.redis_backend import RedisLanes, Ticket
    from bot.storage.redis_client import ScriptCall

GLOBAL = "global"


class Slot:
    def __init__(self, manager: QueueManager, session_id: str) -> None:
        self.manager = manager
        self.session_id = session_id
        self.lane = f"session:{session_id}"
        self._session: Lane | None = None
        self._held: list[Lane] = []  # the lanes taken so far, released in reverse
        self._tickets: list[Ticket] = []
        self.preload: ScriptCall | None = None
        """A script to run in the trip that joins the Redis lanes, when both are granted
        at once (the turn's read of its transcript); its result is then ``preloaded``."""
        self.preloaded: Any = None

    def take_now(self) -> bool:
        """Take both lanes at once if both are free and local (no Redis): the common case,
        with no generator to run. False: ``wait()`` is needed, and goes on from here."""
        if self.manager.redis is not None:
            return False
        self._session = self.manager.get_session_lane(self.session_id)
        for lane in (self._session, self.manager.get_global_lane()):
            if not lane.try_acquire():
                return False
            self._held.append(lane)
        return True

    async def wait(self) -> AsyncIterator[int]:
        """Acquire the session lane then a global slot; yield queue positions meanwhile."""
        session = self.manager.get_session_lane(self.session_id)
        self._session = session
        glob = self.manager.get_global_lane()
        redis = self.manager.redis
        tickets = (
            (redis.session(self.session_id).ticket(), redis.global_lane().ticket())
            if redis
            else (None, None)
        )
        for lane, ticket in ((session, tickets[0]), (glob, tickets[1])):
            if lane in self._held:  # taken by take_now(), or with the Redis lanes below
                pass
            elif not lane.try_acquire():  # (the common case waits for nothing)
                waiter = lane.join()
                try:
                    self.lane = lane.name
                    yield len(lane.queue)
                    await waiter
                except BaseException:
                    lane.abandon(waiter)
                    raise
                self._held.append(lane)
            else:
                self._held.append(lane)
            if redis is None or ticket is None:
                continue
            if lane is session and tickets[1] is not None and glob.try_acquire():
                # Both local lanes free (the common case): both Redis lanes in one trip.
                self._held.append(glob)
                self._tickets += tickets
                self.preloaded = await redis.join_pair(*tickets, then=self.preload)
                if tickets[1].token is None:  # the chat's turn waits: so does the global
                    self._held.remove(glob)
                    glob.release()
            async for position in self._remote(ticket):
                yield position

    async def _remote(self, ticket: Ticket) -> AsyncIterator[int]:
        if ticket not in self._tickets:
            self._tickets.append(ticket)
        self.lane = ticket.lane.name
        async with contextlib.aclosing(ticket.acquire()) as positions:
            async for position in positions:
                yield position

    def leave_call(self) -> ScriptCall | None:
        """The script that leaves this slot's Redis lanes, for the caller to run in the
        same trip as its own last write (``RedisStorage.append_messages(then=)``); then
        ``left()``, or leaving the block leaves them as usual. None: nothing in Redis."""
        if not self._tickets:
            return None
        assert self.manager.redis is not None
        return self.manager.redis.leave_call(self._tickets[::-1])

    def left(self) -> None:
        """``leave_call``'s script ran: the Redis lanes are left (local ones at exit)."""
        if self.manager.redis is not None:
            self.manager.redis.left(self._tickets)
        self._tickets = []

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tickets:
            tickets, self._tickets = self._tickets[::-1], []
            assert self.manager.redis is not None
            await self.manager.redis.release(tickets)
        while self._held:
            self._held.pop().release()
        if self._session is not None:
            self.manager._evict(self.session_id, self._session)


class Hold:
    """``QueueManager.hold``: a slot, waited for on entry, released on exit."""

    __slots__ = ("slot",)

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    async def __aenter__(self) -> Slot:
        try:
            if not self.slot.take_now():
                async for _ in self.slot.wait():
                    pass
        except BaseException:
            await self.slot.__aexit__(None, None, None)
            raise
        return self.slot

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.slot.__aexit__(exc_type, exc, tb)


class QueueManager:
    def __init__(
        self,
        max_concurrent_per_session: int = 1,
        max_concurrent_global: int = 10,
        *,
        max_pending: int | None = None,
        redis: RedisLanes | None = None,
    ) -> None:
        self.max_concurrent_per_session = max_concurrent_per_session
        self.max_concurrent_global = max_concurrent_global
        self.max_pending = max_pending
        self.redis = redis
        self._sessions: dict[str, Lane] = {}
        self._global = Lane(GLOBAL, max_concurrent_global)

    def get_session_lane(self, session_id: str) -> Lane:
        lane = self._sessions.get(session_id)
        if lane is None:
            lane = Lane(f"session:{session_id}", self.max_concurrent_per_session, self.max_pending)
            self._sessions[session_id] = lane
        return lane

    def get_global_lane(self) -> Lane:
        return self._global

    def slot(self, session_id: str) -> Slot:
        return Slot(self, session_id)

    def hold(self, session_id: str) -> Hold:
        """Hold a turn's slots without reporting positions: ``async with manager.hold(s):``."""
        return Hold(self.slot(session_id))

    def _evict(self, session_id: str, lane: Lane) -> None:
        if lane.idle and self._sessions.get(session_id) is lane:
            del self._sessions[session_id]

    @property
    def session_count(self) -> int:
        return len(self._sessions)
