"""Streaming: how soon a slow model's reply shows on the platform, and how it ends.

Every part is a process of its own on 127.0.0.1 (``bench/_load_procs.py``):
one real ``chatlane serve`` with Discord (gateway + REST) and Telegram
(webhook mode) on; a fake Anthropic API that writes each reply one delta at
a time, 20-50 ms apart, for a few seconds (``bench/_stream_model.py``); and
the test suite's Discord and Telegram fakes, which note when every message
call arrives and also send the chats' messages (``bench/_stream_platforms.py``).
Times are ``time.monotonic()``, one clock for every process on the machine.

A run starts N chats at once (spread over half a second) on one channel:
Discord DMs (send, then edit), Telegram private chats (drafts, then one
``sendMessage``) or Telegram groups (a message, then ``editMessageText``, at
3x ``stream_every``). Per reply:

- first update: from the model's first delta to the first visible call
  (send, edit or draft) at the platform, also as a ratio of the channel's
  ``stream_every``. Target: p99 <= stream_every + 50 ms;
- final: from the model's last delta to the call that leaves the complete
  reply (Telegram private: the ``sendMessage``; elsewhere the last send or
  edit). Target: p99 <= 100 ms;
- calls: message calls (sends, edits, drafts, deletes, refused ones too)
  against what the pace allows: the first text at once, one update per
  stream interval over the reply's duration, and the final one. Live updates
  closer together than the interval, Discord channels with more than 5
  message calls in 5 s, replies whose last call is not complete and replies
  sent twice are counted.

Full: 200 chats, 3 s replies, each channel twice (alternating, the machine
is noisy), after a 10-chat run of each as the baseline the 200-chat figures
are compared with. Quick (CI): 20 chats, 1 s replies, once each, about 15 s.
The environment is reported too: the generator's lag behind its schedule,
the fakes' event-loop lag, the model's lag behind its own delta schedule,
the fakes' CPU and other processes' CPU, so a bench that is itself the
bottleneck shows.

``python -m bench.streaming [--quick]`` runs it alone.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load_measure import percentile
from bench._load_procs import Child, Children, machine_busy_seconds
from bench._stream_platforms import FINAL, TELEGRAM_TOKEN, VISIBLE, WRITES
from bot.thinking.extractor import LEAD_IN_MAX
from channels.discord_sink import TRAITS as DISCORD_TRAITS
from channels.telegram import TRAITS as TELEGRAM_TRAITS
from channels.telegram_stream import GROUP_SLOWER
from tests.fakes.discord import TOKEN as DISCORD_TOKEN

SECRET = "stream-s3cret"
WARM_UP = 900_000  # chat numbers of the warm-up (a run's start at 0)
DISCORD_WINDOW, DISCORD_EDITS = 5.0, 5  # Discord: 5 message edits per 5 s per channel


@dataclass(frozen=True)
class Scale:
    chats: int
    seconds: float  # how long each reply streams
    spread: float  # the chats' messages go out over this many seconds
    rounds: int  # runs of each channel at full size
    baseline: int  # chats in one run of each channel first, the baseline (0: none)


FULL = Scale(chats=200, seconds=3.0, spread=0.5, rounds=2, baseline=10)
QUICK = Scale(chats=20, seconds=1.0, spread=0.1, rounds=1, baseline=0)


@dataclass(frozen=True)
class Case:
    name: str
    platform: str  # which fake: "discord" or "telegram"
    kind: str  # what the generator sends: "dm", "private", "group"
    every: float  # the channel's stream_every (its default)
    pace: float  # seconds between live updates it keeps to


CASES = (
    Case("Discord DM", "discord", "dm", DISCORD_TRAITS.stream_every, DISCORD_TRAITS.stream_every),
    Case(
        "Telegram private",
        "telegram",
        "private",
        TELEGRAM_TRAITS.stream_every,
        TELEGRAM_TRAITS.stream_every,
    ),
    Case(
        "Telegram group",
        "telegram",
        "group",
        TELEGRAM_TRAITS.stream_every,
        TELEGRAM_TRAITS.stream_every * GROUP_SLOWER,
    ),
)


@dataclass
class Run:
    case: Case
    chats: int
    first: list[float] = field(default_factory=list)  # s, per reply
    held: list[float] = field(default_factory=list)  # s, first update after the lead-in hold
    final: list[float] = field(default_factory=list)  # s
    calls: list[float] = field(default_factory=list)
    allowed: list[float] = field(default_factory=list)
    typing: int = 0
    too_fast: int = 0  # live updates closer than the pace
    crowded: int = 0  # Discord channels over 5 message calls in 5 s
    incomplete: int = 0  # replies whose last call is not the complete text (or none came)
    twice: int = 0  # replies sent complete as a new message more than once
    refused: int = 0  # message calls the fake answered with an error
    generator_lag: list[float] = field(default_factory=list)
    loop_lag: dict[str, list[float]] = field(default_factory=dict)
    model_lag: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # % of a core
    others: float = 0.0  # % of a core, processes not of this bench
    loop_busy: float = 0.0  # % of the run serve's event loop ran
    loop_waiting: float = 0.0  # % of the run it was ready to run but waited for a CPU
    seconds: float = 0.0


class Bench:
    def __init__(self, children: Children, http: ClientSession) -> None:
        self.children, self.http = children, http
        self.model: Child | None = None
        self.platforms: dict[str, Child] = {}
        self.serve: Child | None = None

    async def start(self, scale: Scale) -> None:
        helper = self.children.helper
        self.model = await helper("fake-model", "bench._stream_model", first_served=True)
        for name in ("discord", "telegram"):
            self.platforms[name] = await helper(
                f"fake-{name}", "bench._stream_platforms", name, first_served=True
            )
        await self.model.ready(self.http, "/stats")
        for child in self.platforms.values():
            await child.ready(self.http, "/bench/stats")
        discord, telegram = self.platforms["discord"], self.platforms["telegram"]
        env = {
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "TELEGRAM_WEBHOOK_SECRET": SECRET,
            "TELEGRAM_API_BASE_URL": telegram.url,
            "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
            "DISCORD_API_BASE_URL": f"{discord.url}/api/v10",
            "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{discord.port}/gateway",
            "ANTHROPIC_API_KEY": "sk-ant-stream-0000",
            "ANTHROPIC_BASE_URL": self.model.url,
            "PUBLIC_URL": "https://stream.example.com",
            "CHATLANE__AGENT__MODEL": "anthropic/claude-sonnet-4-6",
            "CHATLANE__AGENT__QUEUING__MAX_CONCURRENT_GLOBAL": str(scale.chats + 16),
            "CHATLANE__CHANNELS__TELEGRAM__RATE_LIMIT_PER_MINUTE": "0",
            "CHATLANE__CHANNELS__DISCORD__RATE_LIMIT_PER_MINUTE": "0",
            "LOG_FORMAT": "json",
            "CHATLANE_DATA_DIR": str(self.children.directory / "data"),
        }
        self.serve = await self.children.serve("serve", env)
        await self.serve.ready(self.http, "/healthz", 60)
        await discord.ready(self.http, "/bench/ready", 30)  # the gateway is connected

    async def post(self, child: Child, path: str, body: Any = None) -> Any:
        async with self.http.post(child.url + path, json=body or {}) as response:
            if response.status >= 300:
                raise RuntimeError(f"{child.name} {path}: {response.status}")
            return await response.json()

    async def get(self, child: Child, path: str) -> Any:
        async with self.http.get(child.url + path) as response:
            return await response.json()

    async def go(self, case: Case, first: int, count: int, spread: float) -> None:
        assert self.serve is not None
        plan = {
            "first": first,
            "count": count,
            "spread": spread,
            "kind": case.kind,
            "url": f"{self.serve.url}/telegram/webhook",
            "secret": SECRET,
        }
        await self.post(self.platforms[case.platform], "/bench/go", plan)

    async def wait_complete(self, counts: dict[str, int], seconds: float) -> None:
        """Until each platform saw its count of complete replies, then no call for 0.5 s."""
        deadline = time.monotonic() + seconds
        last, quiet_since = -1, time.monotonic()
        while True:
            stats = {name: await self.get(self.platforms[name], "/bench/stats") for name in counts}
            done = all(stats[name]["complete"] >= n for name, n in counts.items())
            calls = sum(s["calls"] for s in stats.values())
            now = time.monotonic()
            if calls != last:
                last, quiet_since = calls, now
            if (done and now - quiet_since >= 0.5) or now > deadline:
                return
            await asyncio.sleep(0.05)

    async def reset(self) -> None:
        assert self.model is not None
        await self.post(self.model, "/reset")
        for child in self.platforms.values():
            await self.post(child, "/bench/reset")

    async def warm_up(self) -> None:
        """One short reply per case: what a first turn loads is not measured."""
        assert self.model is not None
        await self.post(self.model, "/plan", {"seconds": 0.3})
        counts: dict[str, int] = {}
        for index, case in enumerate(CASES):
            await self.go(case, WARM_UP + index, 1, 0)
            counts[case.platform] = counts.get(case.platform, 0) + 1
        await self.wait_complete(counts, 60)
        await self.reset()

    async def measure(self, case: Case, chats: int, first: int, scale: Scale) -> Run:
        assert self.model is not None and self.serve is not None
        await self.reset()
        await self.post(self.model, "/plan", {"seconds": scale.seconds})
        ours = [self.serve, self.model, *self.platforms.values()]
        cpu_before = {c.name: c.cpu() for c in ours}
        busy_before, began, mine = machine_busy_seconds(), time.monotonic(), time.process_time()
        loop_before = schedstat(self.serve.proc.pid)
        await self.go(case, first, chats, scale.spread)
        await self.wait_complete({case.platform: chats}, scale.spread + scale.seconds + 30)
        since = time.monotonic() - began
        loop = [b - a for a, b in zip(loop_before, schedstat(self.serve.proc.pid), strict=True)]
        cpu = {c.name: c.cpu() - cpu_before[c.name] for c in ours}
        others = machine_busy_seconds() - busy_before - sum(cpu.values())
        others -= time.process_time() - mine
        model = await self.get(self.model, "/records")
        platform = await self.get(self.platforms[case.platform], "/bench/records")
        run = Run(case, chats, seconds=since)
        run.cpu = {name: 100 * seconds / since for name, seconds in cpu.items()}
        run.others = max(0.0, 100 * others / since)
        run.loop_busy, run.loop_waiting = (100 * seconds / since for seconds in loop)
        run.generator_lag = platform["lag"]
        run.loop_lag = {"model": model["loop_lag"], case.platform: platform["loop_lag"]}
        tally(run, {int(k): v for k, v in model["records"].items()}, platform["calls"], first)
        return run


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds a process's main thread (its event loop) ran, and waited for a CPU."""
    ran, waited, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(ran) / 1e9, int(waited) / 1e9


def tally(run: Run, model: dict[int, list[float]], calls: list[list[Any]], first: int) -> None:
    """Per reply: the figures, from the model's deltas and the platform's calls."""
    by_chat: dict[int, list[list[Any]]] = {}
    for call in sorted(calls):
        by_chat.setdefault(call[1], []).append(call)
    case = run.case
    for k in range(first, first + run.chats):
        began, ended, _, lag, released = model.get(k, [math.nan, math.nan, 0, 0.0, math.nan])
        run.model_lag.append(lag)
        mine = by_chat.get(k, [])
        run.typing += sum(1 for c in mine if c[2] in ("typing", "sendChatAction"))
        writes = [c for c in mine if c[2] in WRITES]
        run.refused += sum(1 for c in writes if c[3] >= 300)
        ok = [c for c in writes if c[3] < 300]
        shown = [c for c in ok if c[2] in VISIBLE and c[5] > 0]
        finals = [c for c in ok if c[2] in FINAL]
        if case.kind == "private":
            finals = [c for c in finals if c[2] == "sendMessage"]
        if not shown or not finals or not finals[-1][4] or math.isnan(began):
            run.incomplete += 1
            continue
        run.first.append(shown[0][0] - began)
        run.held.append(shown[0][0] - released)
        run.final.append(finals[-1][0] - ended)
        run.calls.append(len(writes))
        run.allowed.append(2 + int((ended - began) / case.pace))
        sends = [c for c in ok if c[2] in ("send", "sendMessage") and c[4]]
        run.twice += len(sends) > 1
        live = [c[0] for c in shown if c is not finals[-1]]
        run.too_fast += sum(1 for a, b in itertools.pairwise(live) if b - a < 0.95 * case.pace)
        if case.platform == "discord":
            times = [c[0] for c in writes]
            run.crowded += any(
                sum(1 for t in times if s <= t < s + DISCORD_WINDOW) > DISCORD_EDITS for s in times
            )


async def benchmark(scale: Scale) -> list[Run]:
    runs: list[Run] = []
    async with Children("stream-") as children, ClientSession() as http:
        bench = Bench(children, http)
        await bench.start(scale)
        await bench.warm_up()
        plan = [(case, scale.baseline) for case in CASES] if scale.baseline else []
        plan += [(case, scale.chats) for _ in range(scale.rounds) for case in CASES]
        first = 0
        for case, chats in plan:
            run = await bench.measure(case, chats, first, scale)
            first += chats
            print(describe(run), file=sys.stderr)
            runs.append(run)
        log = children.log_summary()
    if log:
        text, count = log.most_common(1)[0]
        print(f"serve logged {sum(log.values())} warnings, e.g. {count}x {text}", file=sys.stderr)
    return runs


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms"


def describe(run: Run) -> str:
    return (
        f"{run.case.name} x{run.chats}: first p50 {ms(percentile(run.first, 50))} "
        f"p99 {ms(percentile(run.first, 99))}; final p50 {ms(percentile(run.final, 50))} "
        f"p99 {ms(percentile(run.final, 99))}; calls p50 {percentile(run.calls, 50):.0f} "
        f"(allowed {percentile(run.allowed, 50):.0f}); incomplete {run.incomplete}, "
        f"too fast {run.too_fast}, twice {run.twice}, refused {run.refused}; "
        f"generator lag p99 {ms(percentile(run.generator_lag, 99))}; CPU "
        + ", ".join(f"{name} {share:.0f}%" for name, share in run.cpu.items())
        + f", others {run.others:.0f}%; serve's loop ran {run.loop_busy:.0f}%, waited for a "
        f"CPU {run.loop_waiting:.0f}%; {run.seconds:.1f} s"
    )


def pooled(runs: list[Run]) -> Run:
    """The runs of one case and size as one: their replies together."""
    out = Run(runs[0].case, sum(r.chats for r in runs))
    for run in runs:
        for name in ("first", "held", "final", "calls", "allowed", "generator_lag", "model_lag"):
            getattr(out, name).extend(getattr(run, name))
        for name in ("typing", "too_fast", "crowded", "incomplete", "twice", "refused"):
            setattr(out, name, getattr(out, name) + getattr(run, name))
    return out


def case_rows(run: Run, chats: int, base: Run | None) -> list[tuple[str, float, str]]:
    case, n = run.case, len(run.first)
    every = case.every
    first99, final99 = percentile(run.first, 99), percentile(run.final, 99)
    ratios = [c / a for c, a in zip(run.calls, run.allowed, strict=True)]
    than = f"; {base.chats} chats: p99 {ms(percentile(base.first, 99))}" if base is not None else ""
    final_than = (
        f"; {base.chats} chats: p99 {ms(percentile(base.final, 99))}" if base is not None else ""
    )
    name = f"{case.name} x{chats}"
    faults = (
        f"{run.incomplete} incomplete, {run.twice} sent twice, {run.refused} refused, "
        f"{run.too_fast} live updates closer than {case.pace:g} s"
        + (f", {run.crowded} channels over 5 calls in 5 s" if case.platform == "discord" else "")
    )
    return [
        (
            f"{name}: first update p99 / stream_every",
            first99 / every,
            f"p50 {ms(percentile(run.first, 50))}, p99 {ms(first99)}, stream_every {every:g} s; "
            f"target <= {ms(every + 0.05)} ({1 + 0.05 / every:.2f}x){than}; after the first "
            f"line's {LEAD_IN_MAX} characters: p50 {ms(percentile(run.held, 50))}, "
            f"p99 {ms(percentile(run.held, 99))}",
        ),
        (
            f"{name}: final after the model's end p99 (ms)",
            1000 * final99,
            f"p50 {ms(percentile(run.final, 50))}; target <= 100 ms{final_than}",
        ),
        (
            f"{name}: message calls per reply / allowed, p99",
            percentile(ratios, 99),
            f"p50 {percentile(ratios, 50):.2f}; calls p50 {percentile(run.calls, 50):.0f}, "
            f"p99 {percentile(run.calls, 99):.0f} (allowed p50 {percentile(run.allowed, 50):.0f}: "
            f"first, one per {case.pace:g} s, final); {run.typing / max(n, 1):.1f} typing each",
        ),
        (f"{name}: faults", run.incomplete + run.twice + run.too_fast + run.crowded, faults),
    ]


def environment_rows(runs: list[Run]) -> list[tuple[str, float, str]]:
    lag = [x for r in runs for x in r.generator_lag]
    loops: dict[str, list[float]] = {}
    for run in runs:
        for name, samples in run.loop_lag.items():
            loops.setdefault(name, []).extend(samples)
    model_lag = [x for r in runs for x in r.model_lag]
    busiest = max(runs, key=lambda r: r.cpu.get("serve", 0.0))
    fakes = {
        name: max(r.cpu.get(name, 0.0) for r in runs)
        for name in ("fake-model", "fake-discord", "fake-telegram")
    }
    crowded = max(runs, key=lambda r: r.others)
    return [
        (
            "generator: lag behind schedule p99 (ms)",
            1000 * percentile(lag, 99),
            f"max {ms(max(lag, default=0))}, {len(lag)} messages",
        ),
        (
            "fakes: event-loop lag p99 (ms)",
            1000 * max(percentile(s, 99) for s in loops.values()),
            ", ".join(f"{name} p99 {ms(percentile(s, 99))}" for name, s in loops.items())
            + f"; model's deltas behind schedule p99 {ms(percentile(model_lag, 99))}",
        ),
        (
            "serve: CPU (% of a core)",
            busiest.cpu.get("serve", 0.0),
            f"busiest run ({busiest.case.name} x{busiest.chats}); fakes at most "
            + ", ".join(f"{name} {share:.0f}%" for name, share in fakes.items()),
        ),
        (
            "serve: event loop waiting for a CPU (% of the run)",
            busiest.loop_waiting,
            f"same run; it ran {busiest.loop_busy:.0f}% (100% in all: the loop was never idle); "
            + ", ".join(
                f"{r.case.name} x{r.chats} {r.loop_busy:.0f}+{r.loop_waiting:.0f}%" for r in runs
            ),
        ),
        (
            "machine: other processes' CPU (% of a core)",
            crowded.others,
            f"worst run ({crowded.case.name} x{crowded.chats}); median "
            f"{statistics.median(r.others for r in runs):.0f}%; 0 on a quiet machine",
        ),
    ]


def rows(runs: list[Run], scale: Scale) -> list[tuple[str, float, str]]:
    out: list[tuple[str, float, str]] = []
    for case in CASES:
        full = [r for r in runs if r.case == case and r.chats == scale.chats]
        base = [r for r in runs if r.case == case and r.chats == scale.baseline]
        if full:
            out += case_rows(pooled(full), scale.chats, pooled(base) if base else None)
    return out + environment_rows(runs)


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    scale = QUICK if quick else FULL
    return rows(asyncio.run(benchmark(scale)), scale)


if __name__ == "__main__":
    for figure, value, note in run(quick="--quick" in sys.argv):
        print(f"{figure:58} {value:10.3f}  {note}")
