"""Group commit: what concurrent callers write goes out together; each awaits its own result.

``Batcher(write)`` keeps one writer task at most. The first ``submit`` starts
it; everything submitted before it runs, or while it writes, goes into its
next batch, so under load batches grow by themselves, and a lone call is
written at once (one turn of the event loop later). ``write`` gets the items
in order and returns one result per item; if it raises, every caller in that
batch gets the error. A caller that is cancelled does not take its item back:
it may still be written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], *, limit: int = 256) -> None:
        self._write = write
        self._limit = limit
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._run())
        return await future

    async def close(self) -> None:
        """Wait until everything submitted is written (or has failed)."""
        while (writer := self._writer) is not None:
            await asyncio.wait([writer])

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                try:
                    results = await self._write([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} items")
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._writer = None
            for _, future in self._waiting:  # only when cancelled: nobody writes these now
                future.cancel()
            self._waiting.clear()
