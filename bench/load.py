"""Load: whole systems under an open-loop load, chatlane against a bare relay in the same run.

Every part is a process of its own on 127.0.0.1: a fake Anthropic API that
thinks for a fixed delay, a fake Telegram Bot API that notes every reply,
the system under test, and an open-loop generator (``bench/_load_gen.py``)
that sends signed webhook updates at a fixed rate, N chats x 3 messages,
each message holding a token its reply echoes. The systems:

- relay: ``bench/_load_relay.py``, a hand-written aiohttp relay with the
  same webhook, a lock per chat, the same cap on model calls, the bare SDK
  and no storage: the best one can do;
- SQLite: one ``chatlane serve`` in Telegram webhook mode;
- Redis xN: N ``chatlane serve`` on a private redis-server, the generator
  spreading updates over them at random (a load balancer).

Offered loads are multiples of saturation (cap / model delay answers a
second). Per run: answered messages a second (from the first send to the
last first answer), latency from send to first answer, messages
acknowledged but never answered within the drain (lost), messages answered
more than once, CPU per answered message (the system's processes, its
redis-server included), peak RSS, and sendChatAction calls per reply. Runs
of the relay and of chatlane alternate, since the machine is noisy. The
generator's own lag and the environment's CPU are reported, so a reader can
tell that neither the generator nor the fakes were the bottleneck.

Every run has a deadline; every process is killed at the end of its run
(SIGKILL: what it would still do is not measured), and with the benchmark
if it dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load_procs import Child, Children, machine_times

SECRET = "load-s3cret"
BOT_TOKEN = "123456:LOAD-TOKEN"
PER_CHAT = 3


@dataclass(frozen=True)
class Scale:
    cap: int  # concurrent model calls, in both systems
    delay: float  # the fake model's seconds per reply
    messages: int  # per run (chats x 3)
    loads: tuple[float, ...]  # offered, in multiples of saturation
    drain: float  # seconds allowed past a perfect system's finish
    quiet: float  # a run also ends when no message was answered for this long
    settle: float  # once all are answered, how long to wait for a second answer
    budget: float  # the whole benchmark's deadline

    @property
    def saturation(self) -> float:
        return self.cap / self.delay


FULL = Scale(100, 1.0, 1200, (0.5, 1, 2, 4), drain=60, quiet=45, settle=10, budget=2400)
QUICK = Scale(50, 0.5, 450, (2,), drain=6, quiet=6, settle=1, budget=58)


@dataclass(frozen=True)
class System:
    name: str
    serves: int = 0  # chatlane processes; 0 is the relay
    redis: bool = False


RELAY = System("relay")
SQLITE = System("SQLite", 1)
REDIS2 = System("Redis x2", 2, redis=True)
REDIS3 = System("Redis x3", 3, redis=True)


def schedule(quick: bool) -> list[tuple[float, System]]:
    """Which system runs at which load, in order: the relay before each chatlane run."""
    if quick:
        return [(2, RELAY), (2, SQLITE), (2, REDIS2)]
    runs: list[tuple[float, System]] = []
    for load in FULL.loads:
        runs += [(load, RELAY), (load, SQLITE), (load, RELAY), (load, REDIS2)]
        if load == 2:
            runs += [(load, REDIS3)]
    return runs


@dataclass
class Run:
    system: System
    load: float
    rate: float
    messages: int
    acknowledged: int
    refusals: int  # non-2xx answers and failed connections, retries included
    answered: int
    lost: int
    twice: int
    per_second: float
    p50: float
    p99: float
    cpu_ms: float  # per answered message
    rss_mb: list[float]  # each system process's peak
    sends: int
    chat_actions: int
    model_calls: int
    peak_model_calls: int
    lag_p99_ms: float
    lag_max_ms: float
    ack_p99_ms: float
    environment_cpu: dict[str, float]  # percent of one core
    machine_busy: float  # percent of all cores
    ended: str
    seconds: float
    log: Counter[str] = field(default_factory=Counter)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Fakes:
    """The fake Anthropic and Telegram servers, kept for the whole benchmark, reset per run."""

    def __init__(self, children: Children, http: ClientSession) -> None:
        self.children, self.http = children, http
        self.model: Child | None = None
        self.telegram: Child | None = None

    @property
    def model_url(self) -> str:
        assert self.model is not None
        return self.model.url

    @property
    def telegram_url(self) -> str:
        assert self.telegram is not None
        return self.telegram.url

    async def start(self, delay: float) -> None:
        self.model = await self.children.helper(
            "fake-anthropic", "bench._load_fakes", "anthropic", str(delay)
        )
        self.telegram = await self.children.helper("fake-telegram", "bench._load_fakes", "telegram")
        for child in (self.model, self.telegram):
            await child.ready(self.http, "/stats")

    async def get(self, child: Child, path: str) -> Any:
        async with self.http.get(child.url + path) as response:
            return await response.json()

    async def reset(self) -> None:
        for child in (self.model, self.telegram):
            assert child is not None
            async with self.http.post(child.url + "/reset") as response:
                await response.read()


async def start_system(
    system: System, scale: Scale, fakes: Fakes, children: Children, http: ClientSession
) -> tuple[list[Child], list[str]]:
    """The system's processes, ready: those whose CPU counts, and the webhook URLs."""
    env = {
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_BASE_URL": fakes.telegram_url,
        "ANTHROPIC_API_KEY": "sk-ant-load-0000",
        "ANTHROPIC_BASE_URL": fakes.model_url,
    }
    if not system.serves:
        relay = await children.helper("relay", "bench._load_relay", str(scale.cap), env=env)
        await relay.ready(http, "/healthz")
        return [relay], [relay.url + "/telegram/webhook"]
    env |= {
        "PUBLIC_URL": "https://load.example.com",
        "CHATLANE__AGENT__MODEL": "anthropic/claude-sonnet-4-6",
        "CHATLANE__AGENT__QUEUING__MAX_CONCURRENT_GLOBAL": str(scale.cap),
        "CHATLANE__CHANNELS__TELEGRAM__RATE_LIMIT_PER_MINUTE": "0",
        "LOG_FORMAT": "json",
    }
    counted: list[Child] = []
    if system.redis:
        redis = await children.redis()
        counted.append(redis)
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/0"
    serves = []
    for index in range(system.serves):
        data = children.directory / f"data{index}"
        data.mkdir()
        serves.append(
            await children.serve(f"serve{index}", {**env, "CHATLANE_DATA_DIR": str(data)})
        )
    for serve in serves:
        await serve.ready(http, "/healthz")
    return counted + serves, [serve.url + "/telegram/webhook" for serve in serves]


async def drain(fakes: Fakes, target: int, deadline: float, scale: Scale) -> str:
    """Wait for the answers: until ``target`` messages are answered (and ``settle`` more
    seconds, for second answers), nothing new comes for ``quiet`` seconds, or the deadline."""
    assert fakes.telegram is not None
    count, changed = -1, time.monotonic()
    while True:
        answered = (await fakes.get(fakes.telegram, "/stats"))["answered"]
        now = time.monotonic()
        if answered != count:
            count, changed = answered, now
        if answered >= target and (now - changed >= scale.settle or now >= deadline):
            return "all answered"
        if now - changed >= scale.quiet:
            return f"nothing answered for {scale.quiet:.0f} s"
        if now >= deadline:
            return "deadline"
        await asyncio.sleep(0.25)


async def measure(
    system: System, load: float, scale: Scale, fakes: Fakes, http: ClientSession
) -> Run:
    rate = load * scale.saturation
    await fakes.reset()
    started = time.monotonic()
    async with Children(f"load-{system.name.replace(' ', '')}-") as children:
        counted, urls = await start_system(system, scale, fakes, children, http)
        environment = [c for c in (fakes.model, fakes.telegram) if c is not None]
        cpu_before = {c.name: c.cpu() for c in counted + environment}
        busy_before, total_before = machine_times()
        measured_from = time.monotonic()
        plan = {
            "urls": urls,
            "secret": SECRET,
            "rate": rate,
            "chats": scale.messages // PER_CHAT,
            "per_chat": PER_CHAT,
            "connections": 200,
            "retries": 3,
            "timeout": 60,
        }
        window = scale.messages / rate
        ideal_end = time.monotonic() + max(window, scale.messages / scale.saturation) + scale.delay
        generator = await children.helper(
            "generator", "bench._load_gen", json.dumps(plan), stdout=True
        )
        output = await generator.output(window + 90)
        report = json.loads(output)
        sent = report["sent"]
        acknowledged = [k for k, row in enumerate(sent) if 200 <= row[3] < 300]
        target = len(acknowledged) if len(acknowledged) < len(sent) else len(sent)
        ended = await drain(fakes, target, ideal_end + scale.drain, scale)
        wall = time.monotonic() - started
        since = time.monotonic() - measured_from
        cpu = {c.name: c.cpu() - cpu_before[c.name] for c in counted + environment}
        busy_after, total_after = machine_times()
        busy = 100 * (busy_after - busy_before) / max(total_after - total_before, 1)
        rss = [c.peak_rss_mb() for c in counted if c.name != "redis"]
        assert fakes.telegram is not None and fakes.model is not None
        replies: list[tuple[float, list[int]]] = await fakes.get(fakes.telegram, "/sends")
        calls = (await fakes.get(fakes.telegram, "/stats"))["calls"]
        model = await fakes.get(fakes.model, "/stats")
        log = children.log_summary()
    first: dict[int, float] = {}
    times: Counter[int] = Counter()
    for at, tokens in replies:
        for token in tokens:
            times[token] += 1
            first.setdefault(token, at)
    answered = [k for k in acknowledged if k in first]
    latencies = [first[k] - sent[k][1] for k in answered]
    end = max(first.values(), default=sent[0][1])
    lag = [row[1] - row[0] for row in sent]
    environment_cpu = {
        name: 100 * cpu[name] / since for name in ("fake-anthropic", "fake-telegram")
    }
    environment_cpu["generator"] = 100 * report["cpu"] / report["wall"]
    return Run(
        system=system,
        load=load,
        rate=rate,
        messages=len(sent),
        acknowledged=len(acknowledged),
        refusals=sum(row[4] - (200 <= row[3] < 300) for row in sent),
        answered=len(answered),
        lost=len(acknowledged) - len(answered),
        twice=sum(1 for count in times.values() if count > 1),
        per_second=len(first) / max(end - sent[0][1], 1e-9),
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        cpu_ms=1000 * sum(cpu[c.name] for c in counted) / max(len(answered), 1),
        rss_mb=rss,
        sends=len(replies),
        chat_actions=calls.get("sendChatAction", 0),
        model_calls=model.get("requests", 0),
        peak_model_calls=model.get("peak_in_flight", 0),
        lag_p99_ms=1000 * percentile(lag, 99),
        lag_max_ms=1000 * max(lag),
        ack_p99_ms=1000 * percentile([row[2] - row[1] for row in sent], 99),
        environment_cpu=environment_cpu,
        machine_busy=busy,
        ended=ended,
        seconds=wall,
        log=log,
    )


def describe(run: Run) -> str:
    """One line a run leaves on stderr as it ends, to watch a long benchmark."""
    return (
        f"{run.load:g}x {run.system.name}: {run.per_second:.1f}/s answered "
        f"({run.answered}/{run.acknowledged} acknowledged, {run.lost} lost, {run.twice} twice), "
        f"p50 {run.p50:.2f} s, p99 {run.p99:.2f} s, {run.cpu_ms:.1f} ms CPU each, "
        f"{run.sends} sendMessage, {run.chat_actions} sendChatAction, {run.model_calls} model "
        f"calls (peak {run.peak_model_calls} at once), lag p99 {run.lag_p99_ms:.1f} ms, "
        f"ack p99 {run.ack_p99_ms:.0f} ms, CPU % of a core "
        + ", ".join(f"{name} {value:.0f}" for name, value in run.environment_cpu.items())
        + f", machine {run.machine_busy:.0f}% busy; ended: {run.ended} after {run.seconds:.0f} s"
    )


async def benchmark(quick: bool) -> list[Run]:
    scale = QUICK if quick else FULL
    runs: list[Run] = []
    async with (
        asyncio.timeout(scale.budget),
        Children("load-fakes-") as children,
        ClientSession() as http,
    ):
        fakes = Fakes(children, http)
        await fakes.start(scale.delay)
        for load, system in schedule(quick):
            if system.redis and shutil.which("redis-server") is None:
                continue
            run = await measure(system, load, scale, fakes, http)
            print(describe(run), file=sys.stderr)
            runs.append(run)
    return runs


def rows(runs: list[Run], scale: Scale) -> list[tuple[str, float, str]]:
    out: list[tuple[str, float, str]] = []
    for load in sorted({run.load for run in runs}):
        here = [run for run in runs if run.load == load]
        relays = [run for run in here if not run.system.serves]
        relay_rate = statistics.median(r.per_second for r in relays)
        relay_cpu = statistics.median(r.cpu_ms for r in relays)
        relay_p99 = statistics.median(r.p99 for r in relays)
        rate = here[0].rate
        prefix = f"{load:g}x"
        out.append(
            (
                f"{prefix} relay: answered/s",
                relay_rate,
                f"offered {rate:.0f}/s, {here[0].messages} msgs; p99 {relay_p99:.2f} s, "
                f"{relay_cpu:.1f} ms CPU each, lost {max(r.lost for r in relays)}",
            )
        )
        for run in here:
            if not run.system.serves:
                continue
            name = f"{prefix} {run.system.name}"
            out += [
                (
                    f"{name}: answered/s",
                    run.per_second,
                    f"p50 {run.p50:.2f} s, p99 {run.p99:.2f} s (relay {relay_p99:.2f} s); "
                    f"run {run.ended}",
                ),
                (f"{name} / relay: answered/s", run.per_second / relay_rate, "1.0 = the relay"),
                (
                    f"{name}: lost",
                    run.lost,
                    f"of {run.acknowledged} acknowledged ({run.refusals} refusals); "
                    f"{run.answered} answered",
                ),
                (f"{name}: answered twice", run.twice, f"{run.sends} sendMessage calls"),
                (
                    f"{name} / relay: CPU per answer",
                    run.cpu_ms / relay_cpu,
                    f"{run.cpu_ms:.1f} vs {relay_cpu:.1f} ms"
                    + (" (redis-server's included)" if run.system.redis else ""),
                ),
                (
                    f"{name}: sendChatAction per reply",
                    run.chat_actions / max(run.sends, 1),
                    f"{run.model_calls} model calls for {run.messages} msgs, "
                    f"at most {run.peak_model_calls} at once",
                ),
            ]
    for system in dict.fromkeys(run.system for run in runs):
        mine = [run for run in runs if run.system == system]
        peak = max(max(run.rss_mb) for run in mine)
        log: Counter[str] = sum((run.log for run in mine), Counter())
        note = f"{len(mine[0].rss_mb)} process(es)"
        if system.serves:
            top = log.most_common(1)
            note += f"; {sum(log.values())} warning/error lines" + (
                f", most: {top[0][1]}x {top[0][0][:90]!r}" if top else ""
            )
        out.append((f"{system.name}: peak RSS (MB)", peak, note))
    worst = max(runs, key=lambda run: run.lag_p99_ms)
    out.append(
        (
            "generator: schedule lag p99 (ms)",
            worst.lag_p99_ms,
            f"worst run; max {max(run.lag_max_ms for run in runs):.0f} ms; "
            f"webhook ack p99 up to {max(run.ack_p99_ms for run in runs):.0f} ms",
        )
    )
    busiest = max(runs, key=lambda run: max(run.environment_cpu.values()))
    name, value = max(busiest.environment_cpu.items(), key=lambda item: item[1])
    out.append(
        (
            "environment: busiest process (% of a core)",
            value,
            f"{name}, {busiest.load:g}x {busiest.system.name}; machine up to "
            f"{max(run.machine_busy for run in runs):.0f}% busy ({os.cpu_count()} cores)",
        )
    )
    return out


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    return rows(asyncio.run(benchmark(quick)), QUICK if quick else FULL)


if __name__ == "__main__":
    for figure, value, note in run(quick="--quick" in sys.argv):
        print(f"{figure:44} {value:10.3f}  {note}")
