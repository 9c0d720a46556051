"""Waits that say what they waited for.

A test that times out should fail with the thing it was waiting for, not with a bare
``TimeoutError`` from somewhere inside the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable

POLL_FIRST = 0.001
POLL_MOST = 0.05


async def _holds(condition: Callable[[], object]) -> bool:
    result = condition()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


async def wait_for(
    condition: Callable[[], object],
    what: str,
    timeout: float = 5.0,  # noqa: ASYNC109 (the point of the helper: a timeout that says what)
    *,
    changed: asyncio.Event | None = None,
) -> None:
    """Return once ``condition()`` is true (it may return an awaitable, e.g. a storage
    call); fail with ``what`` after ``timeout`` seconds.

    Without ``changed`` it polls, first often then less (up to every 50 ms), so a quick
    condition costs little and a slow one little CPU. With ``changed``, an event that
    whatever the condition reads sets on every change, it checks only when woken.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = POLL_FIRST
    while not await _holds(condition):
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"waited {timeout}s for {what}")
        if changed is None:
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, POLL_MOST)
            continue
        changed.clear()  # checked just above, with no await in between: no set is lost
        with contextlib.suppress(TimeoutError):  # checked once more, then failed with ``what``
            await asyncio.wait_for(changed.wait(), left)


async def wait_for_event(
    event: asyncio.Event,
    what: str,
    timeout: float = 5.0,  # noqa: ASYNC109 (as above)
) -> None:
    """Return once ``event`` is set; fail with ``what`` after ``timeout`` seconds."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"waited {timeout}s for {what}") from None
