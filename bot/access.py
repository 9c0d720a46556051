"""Who may talk to the bot: per-channel ``allow_from`` lists and a per-sender rate limit.

Both run before anything reaches the model. The rate limit is a sliding
window of one minute per (channel, sender); ``0`` turns it off.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from bot.config import Config
from bot.inbound import InboundMessage


class Verdict(str, Enum):
    ALLOWED = "allowed"
    NOT_ALLOWED = "not_allowed"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class AccessResult:
    verdict: Verdict
    notice: str | None = None  # what to tell the sender, once; None: stay silent


class AccessPolicy:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._told: dict[tuple[str, str], float] = {}

    def check(self, message: InboundMessage) -> AccessResult:
        channel = self.config.channel(message.channel)
        if channel.allow_from and not _allowed(message, channel.allow_from):
            key = (message.channel, message.sender_id)
            if key in self._told:
                return AccessResult(Verdict.NOT_ALLOWED)
            self._told[key] = self.clock()
            return AccessResult(Verdict.NOT_ALLOWED, "Sorry, this bot is private.")
        limit = channel.rate_limit_per_minute
        if limit <= 0:
            return AccessResult(Verdict.ALLOWED)
        now = self.clock()
        key = (message.channel, message.sender_id)
        window = self._windows.setdefault(key, deque())
        while window and now - window[0] >= 60:
            window.popleft()
        if len(window) >= limit:
            told = self._told.get(key)
            if told is not None and now - told < 60:
                return AccessResult(Verdict.RATE_LIMITED)
            self._told[key] = now
            wait = max(1, round(60 - (now - window[0])))
            return AccessResult(
                Verdict.RATE_LIMITED,
                f"You're sending messages too quickly. Please wait about {wait} seconds.",
            )
        window.append(now)
        self._evict(now)
        return AccessResult(Verdict.ALLOWED)

    def _evict(self, now: float) -> None:
        if len(self._windows) < 10_000:
            return
        for key in [k for k, w in self._windows.items() if not w or now - w[-1] >= 60]:
            del self._windows[key]
        for key in [k for k, t in self._told.items() if now - t >= 60]:
            del self._told[key]


def _allowed(message: InboundMessage, allow_from: tuple[str, ...]) -> bool:
    candidates = {message.sender_id, message.chat_id}
    if message.sender_name:
        candidates.add(message.sender_name)
        candidates.add("@" + message.sender_name.lstrip("@"))
    return any(entry in candidates for entry in allow_from)
