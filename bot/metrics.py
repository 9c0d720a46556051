"""What ``GET /metrics`` serves: Prometheus text from a registry of this process's own.

Counted as things happen (by the dispatcher, one cached child per label set,
so a turn pays a dict lookup and an add per event it counts):

- ``chatlane_turns_total{channel, outcome}``: outcome ``answered``, ``error`` (the
  user was told it failed), ``timeout``, ``failed`` (an exception; retried later),
  ``cancelled``;
- ``chatlane_turn_seconds{channel}``: a turn, from its start to the reply ready;
- ``chatlane_first_text_seconds{channel}``: from the message's arrival to the first
  text its sender can see (the first streamed text, else the first part sent);
- ``chatlane_failovers_total{reason}``; ``chatlane_tokens_total{model, direction}``;
- ``chatlane_channel_sends_total{channel}`` and
  ``chatlane_channel_send_errors_total{channel, status}`` (the HTTP status the
  platform answered, else the error's class).

Read when scraped (``Metrics.snapshot``): ``chatlane_lane_waiting`` (messages
waiting for a turn), ``chatlane_turns_running``, ``chatlane_inbox_pending``,
``chatlane_storage_up``, ``chatlane_keys_resting{provider, state}``; and the
process's own (``process_resident_memory_bytes``, CPU, open files).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics", "TurnMeter", "error_status", "refusal", "scrape"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
TURN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
FIRST_TEXT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 300.0)


class _Channel:
    """The children of one channel's metrics, looked up once."""

    __slots__ = ("first_text", "name", "outcomes", "send_errors", "sends", "turn_seconds")

    def __init__(self, metrics: Metrics, channel: str) -> None:
        self.name = channel
        self.turn_seconds = metrics.turn_seconds.labels(channel)
        self.first_text = metrics.first_text_seconds.labels(channel)
        self.sends = metrics.sends.labels(channel)
        self.outcomes: dict[str, Any] = {}
        self.send_errors: dict[str, Any] = {}


class TurnMeter:
    """One turn's measurements; ``finish`` once."""

    __slots__ = ("_channel", "_metrics", "_seen", "arrived", "started", "streams")

    def __init__(self, metrics: Metrics, channel: _Channel, arrived: float, streams: bool) -> None:
        self._metrics = metrics
        self._channel = channel
        self.arrived = arrived  # wall clock: the message's timestamp
        self.started = time.perf_counter()
        self.streams = streams  # a streamed text is visible at once
        self._seen = False

    def visible(self) -> None:
        """The sender sees text of the reply now (counted once)."""
        if not self._seen:
            self._seen = True
            self._channel.first_text.observe(max(time.time() - self.arrived, 0.0))

    def failover(self, reason: str) -> None:
        self._metrics.count_failover(reason)

    def usage(self, model: str, usage: Mapping[str, int]) -> None:
        self._metrics.count_tokens(model, usage)

    def finish(self, outcome: str) -> None:
        channel = self._channel
        child = channel.outcomes.get(outcome)
        if child is None:
            child = channel.outcomes[outcome] = self._metrics.turns.labels(channel.name, outcome)
        child.inc()
        channel.turn_seconds.observe(time.perf_counter() - self.started)


class Metrics:
    """A process's metrics, in a registry of its own (tests build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns = Counter(
            "chatlane_turns",
            "Turns run, by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.turn_seconds = Histogram(
            "chatlane_turn_seconds",
            "A turn, from its start to the reply ready",
            ["channel"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.first_text_seconds = Histogram(
            "chatlane_first_text_seconds",
            "From a message's arrival to the first text of its reply its sender can see",
            ["channel"],
            buckets=FIRST_TEXT_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "chatlane_failovers", "Moves to the next model, by reason", ["reason"], registry=r
        )
        self.tokens = Counter(
            "chatlane_tokens", "Model tokens, in and out", ["model", "direction"], registry=r
        )
        self.sends = Counter(
            "chatlane_channel_sends", "Messages sent to a platform", ["channel"], registry=r
        )
        self.send_errors = Counter(
            "chatlane_channel_send_errors",
            "Sends a platform refused or that failed, by HTTP status or error",
            ["channel", "status"],
            registry=r,
        )
        self._state = _State()
        r.register(self._state)
        ProcessCollector(registry=r)
        self._channels: dict[str, _Channel] = {}
        self._failovers: dict[str, Any] = {}
        self._tokens: dict[str, tuple[Any, Any]] = {}

    def channel(self, name: str) -> _Channel:
        found = self._channels.get(name)
        if found is None:
            found = self._channels[name] = _Channel(self, name)
        return found

    def turn(self, channel: str, *, arrived: float, streams: bool) -> TurnMeter:
        return TurnMeter(self, self.channel(channel), arrived, streams)

    def sent(self, channel: str) -> None:
        self.channel(channel).sends.inc()

    def send_failed(self, channel: str, error: BaseException) -> None:
        meters = self.channel(channel)
        status = error_status(error)
        child = meters.send_errors.get(status)
        if child is None:
            child = meters.send_errors[status] = self.send_errors.labels(channel, status)
        child.inc()

    def count_failover(self, reason: str) -> None:
        child = self._failovers.get(reason)
        if child is None:
            child = self._failovers[reason] = self.failovers.labels(reason)
        child.inc()

    def count_tokens(self, model: str, usage: Mapping[str, int]) -> None:
        pair = self._tokens.get(model)
        if pair is None:
            pair = self._tokens[model] = (
                self.tokens.labels(model, "in"),
                self.tokens.labels(model, "out"),
            )
        pair[0].inc(usage.get("input_tokens", 0))
        pair[1].inc(usage.get("output_tokens", 0))

    def snapshot(
        self,
        *,
        waiting: int,
        running: int,
        inbox_pending: int | None,
        resting: Mapping[tuple[str, str], int],
    ) -> None:
        """What is read when scraped; ``inbox_pending`` None: storage unreachable."""
        self._state.values = (waiting, running, inbox_pending, dict(resting))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _State(Collector):
    def __init__(self) -> None:
        self.values: tuple[int, int, int | None, dict[tuple[str, str], int]] = (0, 0, 0, {})

    def collect(self) -> Iterable[Metric]:
        waiting, running, pending, resting = self.values
        yield GaugeMetricFamily(
            "chatlane_lane_waiting", "Messages waiting for a turn in this process", value=waiting
        )
        yield GaugeMetricFamily(
            "chatlane_turns_running", "Turns running in this process", value=running
        )
        yield GaugeMetricFamily(
            "chatlane_storage_up", "1 when storage answered the scrape", value=pending is not None
        )
        yield GaugeMetricFamily(
            "chatlane_inbox_pending",
            "Stored messages not answered yet (every process)",
            value=float("nan") if pending is None else pending,
        )
        keys = GaugeMetricFamily(
            "chatlane_keys_resting",
            "API keys not in use: cooling down or disabled",
            labels=["provider", "state"],
        )
        for (provider, state), count in sorted(resting.items()):
            keys.add_metric([provider, state], count)
        yield keys


def error_status(error: BaseException) -> str:
    """The HTTP status a platform answered, where the error carries one; else its class."""
    for holder in (error, getattr(error, "response", None)):
        for name in ("status", "status_code"):
            value = getattr(holder, name, None)
            if isinstance(value, int) and 100 <= value < 600:
                return str(value)
    return type(error).__name__


async def scrape(metrics: Metrics, *, mailbox: Any, storage: Any, rotation: Any) -> bytes:
    """Read the state gauges (storage gets two seconds to answer) and render the page."""
    pending: int | None
    try:
        async with asyncio.timeout(2.0):
            pending = len(await storage.inbox_pending_ids())
    except Exception:  # unreachable storage is reported, not raised: that is what a scrape is for
        pending = None
    resting: collections.Counter[tuple[str, str]] = collections.Counter()
    now = rotation.clock()
    for profile in rotation.store:
        if profile.disabled_reason:
            resting[(profile.provider, "disabled")] += 1
        elif profile.cooldown_until is not None and profile.cooldown_until > now:
            resting[(profile.provider, "cooling")] += 1
    metrics.snapshot(
        waiting=mailbox.waiting, running=mailbox.running, inbox_pending=pending, resting=resting
    )
    return metrics.render()


def refusal(authorization: str | None, *, token: str | None, public: bool) -> str | None:
    """Why a scrape is refused (None: served). With ``CHATLANE_METRICS_TOKEN`` set, its
    bearer token is needed; without it the page is off where the process is public
    (``PUBLIC_URL`` set), open otherwise (a private network, a laptop)."""
    if token:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        return "unauthorized"
    return "off" if public else None
