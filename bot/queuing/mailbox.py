"""What happens to a chat's messages that arrive while its turn runs.

- ``collect`` (default): they wait, and the next turn takes all of them
  together, in order.
- ``followup``: each gets its own turn, in order.
- ``interrupt``: the running turn is cancelled and the new message starts at
  once; the interrupted messages are handed to it as ``dropped`` so it knows.

At most ``max_pending`` messages wait per chat. Beyond that ``submit``
answers ``accepted=False`` (the sender must be told) and the next turn gets
the refused items as ``dropped``. A chat's mailbox disappears when it has
nothing running or waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[str, list[Any], list[Any]], Awaitable[None]]


class QueueMode(str, Enum):
    COLLECT = "collect"
    FOLLOWUP = "followup"
    INTERRUPT = "interrupt"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class SubmitResult:
    accepted: bool
    position: int  # 0: runs now; n: n-th waiting


@dataclass
class _Box:
    pending: list[Any] = field(default_factory=list)
    dropped: list[Any] = field(default_factory=list)
    running: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Mailbox:
    def __init__(
        self, handler: Handler, *, mode: QueueMode = QueueMode.COLLECT, max_pending: int = 20
    ) -> None:
        self.handler = handler
        self.mode = mode
        self.max_pending = max_pending
        self._boxes: dict[str, _Box] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._boxes)

    def submit(self, session_id: str, item: Any, *, mode: QueueMode | None = None) -> SubmitResult:
        mode = mode or self.mode
        box = self._boxes.get(session_id)
        if box is None or box.task is None:
            box = self._boxes.setdefault(session_id, _Box())
            self._start(session_id, box, [item])
            return SubmitResult(True, 0)
        if mode is QueueMode.INTERRUPT:
            box.dropped.extend(box.running)
            box.pending.append(item)
            box.task.cancel()
            return SubmitResult(True, 0)
        if len(box.pending) >= self.max_pending:
            box.dropped.append(item)
            return SubmitResult(False, len(box.pending))
        box.pending.append(item)
        return SubmitResult(True, len(box.pending))

    def _start(self, session_id: str, box: _Box, items: list[Any]) -> None:
        box.running = items
        box.task = asyncio.ensure_future(self._run(session_id, box))

    async def _run(self, session_id: str, box: _Box) -> None:
        while True:
            dropped, box.dropped = box.dropped, []
            try:
                await self.handler(session_id, box.running, dropped)
            except asyncio.CancelledError:
                if self._closing:
                    raise
                # interrupted: what was running is in ``dropped`` now
            except Exception:
                log.exception("turn for %s failed", session_id)
            if not box.pending or self._closing:
                box.task = None
                box.running = []
                if not box.pending and not box.dropped:
                    self._boxes.pop(session_id, None)
                return
            if self.mode is QueueMode.FOLLOWUP:
                box.running = [box.pending.pop(0)]
            else:
                box.running, box.pending = box.pending, []

    async def close(self, grace: float) -> None:
        """Let running turns finish within ``grace`` seconds, then cancel the rest."""
        self._closing = True
        tasks = [box.task for box in self._boxes.values() if box.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._boxes.clear()
