"""Who may talk to the bot: per-channel ``allow_from`` lists and a per-sender rate limit.

Both run before anything reaches the model. The rate limit is a sliding
window of one minute per (channel, sender); ``0`` turns it off.

Memory does not grow with the number of senders ever seen: a sender's
window is kept only while it has a message in the last minute (the least
recently active go first, so dropping the quiet ones costs O(1) a check),
and at most ``MAX_SENDERS`` at once; refused senders are remembered (to be
told once) up to ``MAX_REFUSED``, the longest-quiet forgotten first.

With a shared counter (``RedisRateCounter``, set when ``REDIS_URL`` is), the
rate limit is counted in Redis, so it holds across every process; the
dispatcher checks it after deduplication, so a platform's redelivery does
not count twice.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from bot.config import Config
from bot.inbound import InboundMessage

WINDOW = 60.0
MAX_SENDERS = 10_000
MAX_REFUSED = 10_000


class Verdict(str, Enum):
    ALLOWED = "allowed"
    NOT_ALLOWED = "not_allowed"
    RATE_LIMITED = "rate_limited"


PRIVATE = "Sorry, this bot is private."


def too_fast(wait: float) -> str:
    return f"You're sending messages too quickly. Please wait about {max(1, round(wait))} seconds."


@dataclass(frozen=True, slots=True)
class AccessResult:
    verdict: Verdict
    notice: str | None = None  # what to tell the sender, once; None: stay silent
    reason: str | None = None  # the same sentence every time, for a sender waiting on a request


class RateCounter(Protocol):
    """A per-sender message count shared by every process."""

    async def hit(self, key: str, limit: int) -> tuple[bool, float, bool]:
        """Count a message of ``key``: (allowed, seconds until one is, first refusal)."""
        ...


class RedisRateCounter:
    """A sliding-window estimate from two fixed one-minute buckets (the current one and
    the previous one, weighted by how much of it still falls in the window): two keys a
    sender, each expiring on its own."""

    def __init__(
        self, client: Any, *, prefix: str = "chatlane:rate:", clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock

    async def hit(self, key: str, limit: int) -> tuple[bool, float, bool]:
        now = self.clock()
        bucket = int(now // WINDOW)
        elapsed = now - bucket * WINDOW
        current, previous = f"{self.prefix}{key}:{bucket}", f"{self.prefix}{key}:{bucket - 1}"
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(current)
            pipe.get(previous)
            got_current, got_previous = await pipe.execute()
        weight = (WINDOW - elapsed) / WINDOW
        estimate = int(got_current or 0) + int(got_previous or 0) * weight
        if estimate >= limit:
            first = await self.client.set(f"{self.prefix}{key}:told", "1", nx=True, ex=int(WINDOW))
            return False, WINDOW - elapsed, bool(first)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(current)
            pipe.expire(current, int(2 * WINDOW) + 1)
            await pipe.execute()
        return True, 0.0, False


@dataclass(slots=True)
class _Sender:
    times: list[float] = field(default_factory=list)  # a few floats; a deque costs 600 bytes
    told: float | None = None  # when the sender was last told it is limited


class AccessPolicy:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        counter: RateCounter | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.counter = counter
        self._senders: OrderedDict[tuple[str, str], _Sender] = OrderedDict()  # quietest first
        self._refused: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def tracked(self) -> int:
        """Senders held in memory: rate windows plus refused senders remembered."""
        return len(self._senders) + len(self._refused)

    async def admit(self, message: InboundMessage) -> AccessResult:
        """``check``, with the rate limit counted by the shared counter when there is one."""
        limit = self.config.channel(message.channel).rate_limit_per_minute
        if self.counter is None or limit <= 0:
            return self.check(message)
        refused = self._refusal(message)
        if refused is not None:
            return refused
        allowed, wait, first = await self.counter.hit(
            f"{message.channel}:{message.sender_id}", limit
        )
        if allowed:
            return AccessResult(Verdict.ALLOWED)
        text = too_fast(wait)
        return AccessResult(Verdict.RATE_LIMITED, text if first else None, text)

    def _refusal(self, message: InboundMessage) -> AccessResult | None:
        allow_from = self.config.channel(message.channel).allow_from
        if not allow_from or _allowed(message, allow_from):
            return None
        key = (message.channel, message.sender_id)
        if key in self._refused:
            self._refused.move_to_end(key)
            return AccessResult(Verdict.NOT_ALLOWED, reason=PRIVATE)
        self._refused[key] = None
        if len(self._refused) > MAX_REFUSED:
            self._refused.popitem(last=False)
        return AccessResult(Verdict.NOT_ALLOWED, PRIVATE, PRIVATE)

    def check(self, message: InboundMessage) -> AccessResult:
        refused = self._refusal(message)
        if refused is not None:
            return refused
        key = (message.channel, message.sender_id)
        limit = self.config.channel(message.channel).rate_limit_per_minute
        if limit <= 0:
            return AccessResult(Verdict.ALLOWED)
        now = self.clock()
        sender = self._senders.pop(key, None) or _Sender()
        self._evict(now)
        self._senders[key] = sender  # now the most recently active
        times = sender.times
        while times and now - times[0] >= WINDOW:
            del times[0]
        if len(times) >= limit:
            text = too_fast(WINDOW - (now - times[0]))
            if sender.told is not None and now - sender.told < WINDOW:
                return AccessResult(Verdict.RATE_LIMITED, reason=text)
            sender.told = now
            return AccessResult(Verdict.RATE_LIMITED, text, text)
        times.append(now)
        return AccessResult(Verdict.ALLOWED)

    def _evict(self, now: float) -> None:
        senders = self._senders
        while senders:
            key, oldest = next(iter(senders.items()))
            quiet = not oldest.times or now - oldest.times[-1] >= WINDOW
            if not quiet and len(senders) < MAX_SENDERS:
                return
            del senders[key]


def _allowed(message: InboundMessage, allow_from: tuple[str, ...]) -> bool:
    candidates = {message.sender_id, message.chat_id}
    if message.sender_name:
        candidates.add(message.sender_name)
        candidates.add("@" + message.sender_name.lstrip("@"))
    return any(entry in candidates for entry in allow_from)
