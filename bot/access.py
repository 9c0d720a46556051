"""Who may talk to the bot: per-channel ``allow_from`` lists and a per-sender rate limit.

Both run before anything reaches the model. The rate limit is a sliding
window of one minute per (channel, sender); ``0`` turns it off.

Memory does not grow with the number of senders ever seen: a sender's
window is kept only while it has a message in the last minute (the least
recently active go first, so dropping the quiet ones costs O(1) a check),
and at most ``MAX_SENDERS`` at once; refused senders are remembered (to be
told once) up to ``MAX_REFUSED``, the longest-quiet forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from bot.config import Config
from bot.inbound import InboundMessage

WINDOW = 60.0
MAX_SENDERS = 10_000
MAX_REFUSED = 10_000


class Verdict(str, Enum):
    ALLOWED = "allowed"
    NOT_ALLOWED = "not_allowed"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class AccessResult:
    verdict: Verdict
    notice: str | None = None  # what to tell the sender, once; None: stay silent


@dataclass(slots=True)
class _Sender:
    times: list[float] = field(default_factory=list)  # a few floats; a deque costs 600 bytes
    told: float | None = None  # when the sender was last told it is limited


class AccessPolicy:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._senders: OrderedDict[tuple[str, str], _Sender] = OrderedDict()  # quietest first
        self._refused: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def tracked(self) -> int:
        """Senders held in memory: rate windows plus refused senders remembered."""
        return len(self._senders) + len(self._refused)

    def check(self, message: InboundMessage) -> AccessResult:
        channel = self.config.channel(message.channel)
        key = (message.channel, message.sender_id)
        if channel.allow_from and not _allowed(message, channel.allow_from):
            if key in self._refused:
                self._refused.move_to_end(key)
                return AccessResult(Verdict.NOT_ALLOWED)
            self._refused[key] = None
            if len(self._refused) > MAX_REFUSED:
                self._refused.popitem(last=False)
            return AccessResult(Verdict.NOT_ALLOWED, "Sorry, this bot is private.")
        limit = channel.rate_limit_per_minute
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
            if sender.told is not None and now - sender.told < WINDOW:
                return AccessResult(Verdict.RATE_LIMITED)
            sender.told = now
            wait = max(1, round(WINDOW - (now - times[0])))
            return AccessResult(
                Verdict.RATE_LIMITED,
                f"You're sending messages too quickly. Please wait about {wait} seconds.",
            )
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
