"""A lane: a FIFO with at most ``max_concurrent`` holders.

Waiters queue in arrival order; a release hands the slot straight to the
next waiter, so nobody can overtake. A waiter cancelled while queued leaves
the queue; one cancelled just after being handed the slot gives it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class LaneFull(Exception):
    """The lane's queue is at its bound; the caller must tell the sender."""


class Lane:
    def __init__(self, name: str, max_concurrent: int = 1, max_pending: int | None = None) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_pending = max_pending
        self.active = 0
        self.queue: deque[asyncio.Future[None]] = deque()  # the waiters, in order

    @property
    def idle(self) -> bool:
        return self.active == 0 and not self.queue

    def try_acquire(self) -> bool:
        if self.active < self.max_concurrent and not self.queue:
            self.active += 1
            return True
        return False

    async def acquire(self) -> AsyncGenerator[int, None]:
        """Take a slot; while waiting, yield the position in the queue (1 = next) once."""
        if self.try_acquire():
            return
        waiter = self.join()
        try:
            yield len(self.queue)
            await waiter
        except BaseException:
            self.abandon(waiter)
            raise

    def join(self) -> asyncio.Future[None]:
        """Queue up (after ``try_acquire`` failed): the future is done when the slot is
        ours. Whoever awaits it must call ``abandon`` if interrupted."""
        if self.max_pending is not None and len(self.queue) >= self.max_pending:
            raise LaneFull(self.name)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(waiter)
        return waiter

    def abandon(self, waiter: asyncio.Future[None]) -> None:
        """Leave the queue, or pass on the slot if it arrived as we were interrupted."""
        if waiter.done() and not waiter.cancelled():
            self.release()
        else:
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self.queue.remove(waiter)

    def release(self) -> None:
        while self.queue:
            waiter = self.queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; active is unchanged
                return
        self.active -= 1
        if self.active < 0:
            raise RuntimeError(f"lane {self.name} released more often than acquired")

    async def enqueue(self, task: Callable[[], Awaitable[T]] | Awaitable[T]) -> T:
        """Run ``task`` when a slot is free (FIFO) and return its result."""
        async for _ in self.acquire():
            pass
        try:
            if callable(task):
                return await task()
            return await task
        finally:
            self.release()

    def __repr__(self) -> str:
        return f"Lane({self.name!r}, active={self.active}, waiting={len(self.queue)})"
