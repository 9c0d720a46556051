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

At most ``max_running`` turns run at once (admission control). A chat that
has messages but no free turn waits in a first-come, first-served line with
no task of its own, so the work done for waiting messages is a list entry,
not a task that wakes up, signals typing or polls. Each running task takes
the next chat in line when its turn ends; a chat with more messages goes to
the back of the line when others are waiting, so no chat starves another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
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
    position: int  # 0: runs now; n: n-th waiting in its chat (or its chat waits for a turn)


@dataclass
class _Box:
    mode: QueueMode
    pending: list[Any] = field(default_factory=list)
    dropped: list[Any] = field(default_factory=list)
    running: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    in_line: bool = False  # waiting for a free turn


class Mailbox:
    def __init__(
        self,
        handler: Handler,
        *,
        mode: QueueMode = QueueMode.COLLECT,
        max_pending: int = 20,
        max_running: int | None = None,
    ) -> None:
        self.handler = handler
        self.mode = mode
        self.max_pending = max_pending
        self.max_running = max_running
        self.waiting = 0  # messages accepted and not yet in a running turn
        self._boxes: dict[str, _Box] = {}
        self._line: deque[str] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._boxes)

    @property
    def running(self) -> int:
        return len(self._workers)

    def submit(self, session_id: str, item: Any, *, mode: QueueMode | None = None) -> SubmitResult:
        mode = mode or self.mode
        box = self._boxes.get(session_id)
        if box is None:
            box = self._boxes[session_id] = _Box(mode)
        box.mode = mode
        if box.task is None and not box.in_line:
            if self.max_running is None or len(self._workers) < self.max_running:
                box.running = [item]
                self._spawn(session_id, box)
                return SubmitResult(True, 0)
            box.in_line = True
            self._line.append(session_id)
        elif box.task is not None and mode is QueueMode.INTERRUPT:
            box.dropped.extend(box.running)
            box.running = []
            box.pending.append(item)
            self.waiting += 1
            box.task.cancel()
            return SubmitResult(True, 0)
        if len(box.pending) >= self.max_pending:
            box.dropped.append(item)
            return SubmitResult(False, len(box.pending))
        box.pending.append(item)
        self.waiting += 1
        return SubmitResult(True, len(box.pending))

    def _spawn(self, session_id: str, box: _Box) -> None:
        task = asyncio.ensure_future(self._work(session_id, box))
        box.task = task
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    async def _work(self, session_id: str, box: _Box) -> None:
        """Run turns, a chat at a time, while chats are waiting in line."""
        current: tuple[str, _Box] | None = (session_id, box)
        while current is not None:
            session_id, box = current
            dropped, box.dropped = box.dropped, []
            try:
                await self.handler(session_id, box.running, dropped)
            except asyncio.CancelledError:
                if self._closing:
                    raise
                # interrupted: what was running is in ``dropped`` now. This task goes on
                # (with other chats' turns too), so it must not stay marked as cancelling.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except Exception:
                log.exception("turn for %s failed", session_id)
            box.task = None
            box.running = []
            if self._closing:
                return
            if box.pending:
                box.in_line = True
                self._line.append(session_id)
            elif not box.dropped:
                self._boxes.pop(session_id, None)
            current = self._next()
            if current is not None:
                current[1].task = asyncio.current_task()

    def _next(self) -> tuple[str, _Box] | None:
        """The chat first in line, its messages taken for a turn (per its queue mode)."""
        while self._line:
            session_id = self._line.popleft()
            box = self._boxes.get(session_id)
            if box is None or not box.in_line:
                continue
            box.in_line = False
            if box.mode is QueueMode.FOLLOWUP:
                box.running = [box.pending.pop(0)]
            else:
                box.running, box.pending = box.pending, []
            self.waiting -= len(box.running)
            return session_id, box
        return None

    async def close(self, grace: float) -> None:
        """Let running turns finish within ``grace`` seconds, then cancel the rest;
        chats still in line are left as they are (their messages stay stored)."""
        self._closing = True
        tasks = list(self._workers)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            if late:  # bounded: a task inside a redis-py command may lose the cancel
                await asyncio.wait(late, timeout=5.0)
        self._boxes.clear()
        self._line.clear()
        self.waiting = 0
