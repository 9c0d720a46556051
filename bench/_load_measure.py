"""One measurement of the load benchmark: a system started afresh, loaded, drained, read, killed.

The two fakes live for the whole benchmark (``Fakes``) and are reset before
each run; everything else (the system's processes, a redis-server of its
own, the generator) lives for one run. A run starts once one warm-up
message per process is answered, so a first turn's set-up is not counted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from bench._load_gen import update
from bench._load_procs import Child, Children, machine_busy_seconds

SECRET = "load-s3cret"
BOT_TOKEN = "123456:LOAD-TOKEN"
PER_CHAT = 3
WARM_UP = 10_000_000  # tokens, chats and update ids of the warm-up messages (the run's are small)


@dataclass(frozen=True)
class Scale:
    cap: int  # concurrent model calls, in both systems
    delay: float  # the fake model's seconds per reply
    messages: int  # per run (chats x 3)
    loads: tuple[float, ...]  # offered, in multiples of saturation
    drain: float  # seconds allowed past a perfect system's finish
    quiet: float  # a run also ends when no message was answered for this long
    settle: float  # once all are answered, how long to wait for second answers
    budget: float  # the whole benchmark's deadline

    @property
    def saturation(self) -> float:
        return self.cap / self.delay


@dataclass(frozen=True)
class System:
    name: str
    serves: int = 0  # chatlane processes; 0 is the relay
    redis: bool = False
    relay_http: str = "httpx"  # the relay's SDK transport: its default, or "aiohttp"


@dataclass
class Run:
    system: System
    load: float
    rate: float
    messages: int
    acknowledged: int
    refusals: int  # non-2xx answers and failed connections, retries included
    answered: int  # acknowledged messages with an answer
    lost: int  # acknowledged messages without one when the run ended
    twice: int  # messages answered more than once
    out_of_order: int  # messages first answered after a later message of their chat
    per_second: float  # messages answered, from the first send to the last first answer
    p50: float  # seconds from send to first answer
    p99: float
    cpu_ms: float  # the system's CPU per answered message
    redis_cpu_ms: float  # the part of it redis-server took
    rss_mb: list[float]  # each chatlane or relay process's peak
    sends: int  # sendMessage calls
    chat_actions: int  # sendChatAction calls
    model_calls: int
    peak_model_calls: int  # at once
    lag_p99_ms: float  # the generator's, behind its schedule
    lag_max_ms: float
    ack_p99_ms: float  # webhook answer time
    environment_cpu: dict[str, float]  # percent of one core
    others_cpu: float  # percent of one core used by processes not of this benchmark
    ended: str
    startup: float  # seconds until the system answered /healthz
    seconds: float
    log: Counter[str]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Fakes:
    """The fake Anthropic and Telegram servers."""

    def __init__(self, children: Children, http: ClientSession) -> None:
        self.children, self.http = children, http
        self.all: list[Child] = []

    @property
    def model(self) -> Child:
        return self.all[0]

    @property
    def telegram(self) -> Child:
        return self.all[1]

    async def start(self, delay: float) -> None:
        self.all = [
            await self.children.helper(
                "fake-anthropic", "bench._load_fakes", "anthropic", str(delay), first_served=True
            ),
            await self.children.helper(
                "fake-telegram", "bench._load_fakes", "telegram", first_served=True
            ),
        ]
        for child in self.all:
            await child.ready(self.http, "/stats")

    async def get(self, child: Child, path: str) -> Any:
        async with self.http.get(child.url + path) as response:
            return await response.json()

    async def reset(self) -> None:
        for child in self.all:
            async with self.http.post(child.url + "/reset") as response:
                await response.read()


async def start_system(
    system: System,
    scale: Scale,
    fakes: Fakes,
    children: Children,
    http: ClientSession,
    ready_in: float,
) -> tuple[list[Child], list[str]]:
    """The system's processes, ready: those whose CPU counts, and the webhook URLs."""
    env = {
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_BASE_URL": fakes.telegram.url,
        "ANTHROPIC_API_KEY": "sk-ant-load-0000",
        "ANTHROPIC_BASE_URL": fakes.model.url,
    }
    if not system.serves:
        env["RELAY_HTTP"] = system.relay_http
        relay = await children.helper("relay", "bench._load_relay", str(scale.cap), env=env)
        await relay.ready(http, "/healthz", ready_in)
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
        await serve.ready(http, "/healthz", ready_in)
    return counted + serves, [serve.url + "/telegram/webhook" for serve in serves]


async def warm_up(fakes: Fakes, http: ClientSession, urls: list[str], seconds: float) -> None:
    """One message through each process, answered before the run: what a first turn
    loads (the tokenizer's vocabulary, connections) is not counted as load."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    for index, url in enumerate(urls):
        body = update(WARM_UP + index, chat_id=WARM_UP + index, update_id=WARM_UP + index)
        async with http.post(url, data=body, headers=headers) as response:
            await response.read()
    deadline = time.monotonic() + seconds
    while (await fakes.get(fakes.telegram, "/stats"))["answered"] < len(urls):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm-up message was not answered in {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def drain(fakes: Fakes, target: int, deadline: float, scale: Scale) -> str:
    """Wait for the answers: until ``target`` messages are answered (and ``settle`` more
    seconds, for second answers), nothing new comes for ``quiet`` seconds, or the deadline."""
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
            return "deadline, still answering"
        await asyncio.sleep(0.25)


async def measure(
    system: System,
    load: float,
    scale: Scale,
    fakes: Fakes,
    http: ClientSession,
    *,
    until: float,
    keep_logs: Path | None = None,
) -> Run:
    """One run, over by ``until`` (``time.monotonic()``) whatever the system does."""
    rate = load * scale.saturation
    await fakes.reset()
    started = time.monotonic()
    prefix = f"load-{load:g}x-{system.name.replace(' ', '')}-"
    async with Children(prefix, keep_logs=keep_logs) as children:
        ready_in = min(30.0, until - started)
        counted, urls = await start_system(system, scale, fakes, children, http, ready_in)
        startup = time.monotonic() - started
        await warm_up(fakes, http, urls, min(30.0, until - time.monotonic()))
        await fakes.reset()
        ours = counted + fakes.all
        cpu_before = {c.name: c.cpu() for c in ours}
        busy_before, measured_from = machine_busy_seconds(), time.monotonic()
        driver_before = time.process_time()
        window = scale.messages / rate
        ideal_end = measured_from + max(window, scale.messages / scale.saturation) + scale.delay
        deadline = min(ideal_end + scale.drain, until)
        plan = {
            "stop_at": deadline,
            "urls": urls,
            "secret": SECRET,
            "rate": rate,
            "chats": scale.messages // PER_CHAT,
            "per_chat": PER_CHAT,
            "connections": 200,
            "retries": 3,
            "timeout": 60,
        }
        generator = await children.helper(
            "generator", "bench._load_gen", json.dumps(plan), stdout=True, first_served=True
        )
        report = json.loads(await generator.output(deadline - time.monotonic() + 10))
        sent: list[list[float]] = report["sent"]  # due, sent, answered, status, attempts
        acknowledged = [k for k, row in enumerate(sent) if 200 <= row[3] < 300]
        ended = await drain(fakes, len(acknowledged), deadline, scale)
        since = time.monotonic() - measured_from
        cpu = {c.name: c.cpu() - cpu_before[c.name] for c in ours}
        ours_seconds = sum(cpu.values()) + report["cpu"] + time.process_time() - driver_before
        others = machine_busy_seconds() - busy_before - ours_seconds
        rss = [c.peak_rss_mb() for c in counted if c.name != "redis"]
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
    lag = [row[1] - row[0] for row in sent if row[1]] or [0.0]
    environment_cpu = {c.name: 100 * cpu[c.name] / since for c in fakes.all}
    environment_cpu["generator"] = 100 * report["cpu"] / report["wall"]
    return Run(
        system=system,
        load=load,
        rate=rate,
        messages=len(sent),
        acknowledged=len(acknowledged),
        refusals=int(sum(row[4] - (200 <= row[3] < 300) for row in sent)),
        answered=len(answered),
        lost=len(acknowledged) - len(answered),
        twice=sum(1 for count in times.values() if count > 1),
        out_of_order=out_of_order(replies, scale.messages // PER_CHAT),
        per_second=len(first) / max(end - sent[0][1], 1e-9),
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        cpu_ms=1000 * sum(cpu[c.name] for c in counted) / max(len(answered), 1),
        redis_cpu_ms=1000 * cpu.get("redis", 0.0) / max(len(answered), 1),
        rss_mb=rss,
        sends=len(replies),
        chat_actions=calls.get("sendChatAction", 0),
        model_calls=model.get("requests", 0),
        peak_model_calls=model.get("peak_in_flight", 0),
        lag_p99_ms=1000 * percentile(lag, 99),
        lag_max_ms=1000 * max(lag),
        ack_p99_ms=1000 * percentile([sent[k][2] - sent[k][1] for k in acknowledged], 99),
        environment_cpu=environment_cpu,
        others_cpu=max(0.0, 100 * others / since),
        ended=ended,
        startup=startup,
        seconds=time.monotonic() - started,
        log=log,
    )


def out_of_order(replies: list[tuple[float, list[int]]], chats: int) -> int:
    """Messages first answered after a later message of their chat was (message ``k`` is
    chat ``k % chats``'s ``k // chats``-th): a chat's replies must follow its messages."""
    latest: dict[int, int] = {}  # by chat, the latest message answered so far
    seen: set[int] = set()
    late = 0
    for _, tokens in sorted(replies, key=lambda reply: reply[0]):
        fresh = [k for k in tokens if k not in seen and k < WARM_UP]
        seen.update(fresh)
        for k in fresh:
            late += k < latest.get(k % chats, -1)
        for k in fresh:
            latest[k % chats] = max(latest.get(k % chats, -1), k)
    return late


def describe(run: Run) -> str:
    """The line a run leaves on stderr as it ends, to follow a long benchmark."""
    environment = ", ".join(f"{name} {value:.0f}%" for name, value in run.environment_cpu.items())
    return (
        f"{run.load:g}x {run.system.name}: {run.per_second:.1f}/s answered "
        f"({run.answered} of {run.acknowledged} acknowledged, {run.lost} lost, "
        f"{run.twice} twice, {run.out_of_order} out of order), "
        f"p50 {run.p50:.2f} s, p99 {run.p99:.2f} s, "
        f"{run.cpu_ms:.1f} ms CPU each; {run.sends} sendMessage, {run.chat_actions} "
        f"sendChatAction, {run.model_calls} model calls ({run.peak_model_calls} at once); "
        f"generator lag p99 {run.lag_p99_ms:.1f} ms, webhook ack p99 {run.ack_p99_ms:.0f} ms; "
        f"CPU of a core: {environment}, others {run.others_cpu:.0f}%; "
        f"ready in {run.startup:.1f} s, {run.ended} after {run.seconds:.0f} s"
    )
