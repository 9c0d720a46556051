"""What every messaging adapter shares: outbound retries and webhook answers.

``send_with_retries`` waits out a platform's 429 (its ``retry_after``) and
retries 5xx and connection errors with exponential backoff; anything else is
raised at once. Each adapter says how to read its SDK's errors through a
``classify`` function returning a ``Retry`` or None.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from bot.dispatch import Outcome

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 5
MAX_WAIT = 120.0
# Jitter from a generator of our own: the random module's shared one is the host
# application's (and a test's seeded draws), not ours to advance.
_JITTER = random.Random()


def for_platforms(handler: Callable[..., Any]) -> Any:
    """Mark a webhook route only a platform calls, never a browser: its answers go
    without the web chat's browser headers (``channels.web_access``), which cost a
    webhook more than the rest of its answer (the policy alone is 230 bytes to check
    and send)."""
    handler.for_platforms = True  # type: ignore[attr-defined]
    return handler


@dataclass(frozen=True, slots=True)
class Retry:
    """How to retry a failed call: after ``after`` seconds (None: exponential backoff)."""

    after: float | None = None


async def send_with_retries(
    call: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], Retry | None],
    *,
    what: str,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retry = classify(exc)
            if retry is None or attempt == attempts:
                raise
            wait = retry.after if retry.after is not None else min(2.0 ** (attempt - 1), 30.0)
            wait = min(max(wait, 0.0), MAX_WAIT) + _JITTER.uniform(0, 0.25)
            log.warning(
                "%s failed (%s); retry %d/%d in %.1fs",
                what,
                type(exc).__name__,
                attempt,
                attempts - 1,
                wait,
            )
            await sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def webhook_answer(outcome: Outcome, *, retried_by_platform: bool = True) -> web.Response:
    """The HTTP answer to a platform once its message is stored (or refused, or a duplicate).

    While draining, a platform that redelivers gets 503 so the message comes
    back to a live process; one that does not (Twilio) was stored anyway.
    """
    if outcome is Outcome.DRAINING and retried_by_platform:
        return web.Response(status=503, text="restarting; deliver again shortly")
    return web.Response(status=200, text="ok")
