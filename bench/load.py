"""Load: whole systems under an open-loop load, chatlane against a bare relay in the same run.

Every part is a process of its own on 127.0.0.1: a fake Anthropic API that
thinks for a fixed delay, a fake Telegram Bot API that notes every reply
(``bench/_load_fakes.py``), the system under test, and an open-loop
generator (``bench/_load_gen.py``) that sends signed webhook updates at a
fixed rate, N chats x 3 messages, each message holding a token its answer
echoes. The systems:

- relay: ``bench/_load_relay.py``, a hand-written aiohttp relay with the
  same webhook, a lock per chat, the same cap on model calls, the bare SDK
  and no storage: the best one can do. Its SDK runs on its default
  transport (httpx); ``--relay-http aiohttp`` puts it on the SDK's aiohttp
  transport, the one chatlane's providers use;
- SQLite: one ``chatlane serve`` in Telegram webhook mode, default settings
  but the cap and no per-chat rate limit;
- Redis xN: N ``chatlane serve`` on a private redis-server, the generator
  spreading updates over them at random (a load balancer).

Offered loads are multiples of saturation, cap / model delay answers a
second (100/s in a full run: 100 calls at once, a 1 s model). Per run:
messages answered a second, from the first send to the last first answer
(chatlane answers a chat's waiting messages in one reply, the relay one by
one); latency from send to first answer; messages acknowledged (2xx) but
not answered when the run ended (lost); messages answered more than once;
CPU per answered message (the system's processes, its redis-server
included); peak RSS; sendChatAction calls per reply; warnings in serve's
log. A run ends when every acknowledged message is answered (then waits
``settle`` seconds for second answers), when nothing was answered for
``quiet`` seconds, or ``drain`` seconds after a perfect system would have
finished. Relay and chatlane runs alternate (the machine is noisy), and the
generator's lag behind its schedule, the fakes' CPU and the CPU that other
processes on the machine took are reported, so a reader can tell whether
the environment or a neighbour was the bottleneck. The environment runs at
a higher priority than the systems when allowed (nice -5).

``python -m bench.load [--quick] [--only "4x SQLite" ...] [--repeat N] [--relay-http aiohttp]
[--keep-logs DIR]``
runs it alone (``--only`` adds a relay run before each named one; ``--repeat``
runs the plan N times over and reports medians, with each run's ratio, since
CPU per answer moves by 0.2-0.3 between single runs on a noisy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from aiohttp import ClientSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load_measure import PER_CHAT, Fakes, Run, Scale, System, describe, measure
from bench._load_procs import Children

FULL = Scale(100, 1.0, 1200, (0.5, 1, 2, 4), drain=60, quiet=45, settle=10, budget=2400)
QUICK = Scale(50, 0.5, 300, (2,), drain=6, quiet=6, settle=1, budget=52)
STARTUP = 3.0  # seconds a process takes to be ready, at least (more once seen): what to skip
TEARDOWN = 3.0  # seconds left at the end of the budget to kill processes

RELAY = System("relay")
RELAY_AIOHTTP = System("relay on aiohttp", relay_http="aiohttp")  # the SDK's aiohttp transport
SQLITE = System("SQLite", 1)
REDIS2 = System("Redis x2", 2, redis=True)
REDIS3 = System("Redis x3", 3, redis=True)
SYSTEMS = {system.name.lower(): system for system in (RELAY, SQLITE, REDIS2, REDIS3)}


def schedule(
    quick: bool, only: list[str] | None = None, repeat: int = 1, relay: System = RELAY
) -> list[tuple[float, System]]:
    """Which system runs at which load, in order: a relay run before chatlane's; with
    ``repeat``, the whole plan that many times over (the figures are then medians)."""
    return schedule_once(quick, only, relay) * repeat


def schedule_once(
    quick: bool, only: list[str] | None = None, relay: System = RELAY
) -> list[tuple[float, System]]:
    if only:
        runs: list[tuple[float, System]] = []
        for name in only:
            load, _, system = name.strip().partition("x ")
            chosen = SYSTEMS[system.lower()]
            runs += [(float(load), relay)] + ([(float(load), chosen)] if chosen.serves else [])
        return runs
    if quick:
        return [(2, relay), (2, SQLITE), (2, REDIS2)]
    runs = []
    for load in FULL.loads:
        runs += [(load, relay), (load, SQLITE), (load, relay), (load, REDIS2)]
        if load == 2:  # a third process: more chances to answer a message twice
            runs += [(load, relay), (load, REDIS3)]
    return runs


async def benchmark(
    scale: Scale, plan: list[tuple[float, System]], keep: Path | None
) -> tuple[list[Run], list[str]]:
    """The runs made, and those skipped because the budget could not hold them."""
    runs: list[Run] = []
    skipped: list[str] = []
    end = time.monotonic() + scale.budget
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (a CI timeout) cancels: the children are killed and their files removed
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with (
        asyncio.timeout_at(end + TEARDOWN),  # a safety net: each run ends by itself before
        Children("load-fakes-", keep_logs=keep) as children,
        ClientSession() as http,
    ):
        fakes = Fakes(children, http)
        await fakes.start(scale.delay)
        for load, system in plan:
            name = f"{load:g}x {system.name}"
            if system.redis and shutil.which("redis-server") is None:
                skipped.append(f"{name} (no redis-server)")
                continue
            starting = max([STARTUP] + [r.startup / max(r.system.serves, 1) for r in runs])
            sending = scale.messages / (load * scale.saturation)
            shortest = starting * max(system.serves, 1) + sending + scale.delay + scale.settle
            if end - TEARDOWN - time.monotonic() < shortest:
                skipped.append(f"{name} (out of time)")
                continue
            until = end - TEARDOWN
            run = await measure(system, load, scale, fakes, http, until=until, keep_logs=keep)
            print(describe(run), file=sys.stderr)
            runs.append(run)
    return runs, skipped


def perfect(scale: Scale, rate: float) -> float:
    """Answers a second of a perfect relay: each message answered one model delay after it
    can start (sent, a slot of the cap free, its chat's previous answer out), nothing else."""
    chats = scale.messages // PER_CHAT
    slots = [0.0] * scale.cap  # when each slot is next free, a heap
    chat_free = [0.0] * chats
    last = 0.0
    for k in range(scale.messages):
        start = max(k / rate, slots[0], chat_free[k % chats])
        chat_free[k % chats] = start + scale.delay
        heapq.heapreplace(slots, start + scale.delay)
        last = max(last, start + scale.delay)
    return scale.messages / last


def rows(runs: list[Run], skipped: list[str], scale: Scale) -> list[tuple[str, float, str]]:
    out: list[tuple[str, float, str]] = []
    for load in sorted({run.load for run in runs}):
        here = [run for run in runs if run.load == load]
        relays = [run for run in here if not run.system.serves]
        if not relays:
            continue  # no baseline (--only without one): nothing to compare with
        relay = {
            "rate": statistics.median(r.per_second for r in relays),
            "p50": statistics.median(r.p50 for r in relays),
            "p99": statistics.median(r.p99 for r in relays),
            "cpu": statistics.median(r.cpu_ms for r in relays),
        }
        lost = max(r.lost + r.twice for r in relays)
        rate, messages = here[0].rate, here[0].messages
        out.append(
            (
                f"{load:g}x {relays[0].system.name}: answered/s",
                relay["rate"],
                f"offered {rate:.0f}/s, {messages} msgs, perfect {perfect(scale, rate):.0f}/s; "
                f"p50 {relay['p50']:.2f} s, p99 {relay['p99']:.2f} s; "
                f"{relay['cpu']:.1f} ms CPU each"
                + (
                    f" (median of {', '.join(f'{r.cpu_ms:.1f}' for r in relays)})"
                    if len(relays) > 1
                    else ""
                )
                + (f"; LOST OR TWICE: {lost}" if lost else ""),
            )
        )
        for system in dict.fromkeys(run.system for run in here if run.system.serves):
            out += chatlane_rows(
                [run for run in here if run.system == system], relay, relays[0].system.name
            )
    for system in dict.fromkeys(run.system for run in runs):
        out += system_rows(system, [run for run in runs if run.system == system])
    if skipped:
        out.append(("runs skipped", len(skipped), "; ".join(skipped)))
    return out + (environment_rows(runs) if runs else [])


def chatlane_rows(
    runs: list[Run], relay: dict[str, float], versus: str = "relay"
) -> list[tuple[str, float, str]]:
    """One system's figures at one load: medians over its runs (``--repeat``), with the
    range when there are several; what was lost, twice or out of order, summed."""
    run = runs[0]
    name = f"{run.load:g}x {run.system.name}"
    # cut short while answers still came: not answered yet, not known to be lost
    ended = [r.ended for r in runs]
    cut_short = any(e.startswith("deadline") for e in ended)
    unanswered = "unanswered at the deadline" if cut_short else "lost"

    median = statistics.median

    def spread(values: list[float], digits: int = 2) -> str:
        return f" (runs: {', '.join(f'{v:.{digits}f}' for v in values)})" if len(values) > 1 else ""

    rates = [r.per_second / relay["rate"] for r in runs]
    cpus = [r.cpu_ms / relay["cpu"] for r in runs]
    cpu_ms = median([r.cpu_ms for r in runs])
    per_reply = median([r.cpu_ms * r.answered / max(r.sends, 1) for r in runs])
    redis_ms = median([r.redis_cpu_ms for r in runs])
    return [
        (
            f"{name} / {versus}: answered/s",
            median(rates),
            f"{median([r.per_second for r in runs]):.1f} vs {relay['rate']:.1f}/s; "
            f"{median([r.model_calls for r in runs]):.0f} turns for {run.messages} msgs"
            + spread(rates),
        ),
        (
            f"{name}: p99 latency (s)",
            median([r.p99 for r in runs]),
            f"p50 {median([r.p50 for r in runs]):.2f} s; relay p99 {relay['p99']:.2f} s",
        ),
        (
            f"{name}: {unanswered}",
            sum(r.lost for r in runs),
            f"of {sum(r.acknowledged for r in runs)} acknowledged "
            f"({sum(r.refusals for r in runs)} refusals); run ended: "
            + "; ".join(dict.fromkeys(ended)),
        ),
        (
            f"{name}: answered twice",
            sum(r.twice for r in runs),
            f"{sum(r.sends for r in runs)} sendMessage calls",
        ),
        (
            f"{name}: answered out of order",
            sum(r.out_of_order for r in runs),
            "messages answered after a later message of their chat",
        ),
        (
            f"{name} / {versus}: CPU per answer",
            median(cpus),
            f"{cpu_ms:.1f} vs {relay['cpu']:.1f} ms; {per_reply:.1f} ms per reply"
            + (f"; redis-server's {redis_ms:.1f} ms included" if run.system.redis else "")
            + spread(cpus),
        ),
    ]


def system_rows(system: System, runs: list[Run]) -> list[tuple[str, float, str]]:
    largest = max(runs, key=lambda run: max(run.rss_mb))
    out = [
        (
            f"{system.name}: peak RSS (MB)",
            max(largest.rss_mb),
            f"each process at {largest.load:g}x: "
            + ", ".join(f"{mb:.0f}" for mb in largest.rss_mb),
        )
    ]
    if not system.serves:
        return out
    out.append(
        (
            f"{system.name}: sendChatAction per reply",
            sum(run.chat_actions for run in runs) / max(sum(run.sends for run in runs), 1),
            ", ".join(f"{run.load:g}x {run.chat_actions / max(run.sends, 1):.2f}" for run in runs),
        )
    )
    log: Counter[str] = sum((run.log for run in runs), Counter())
    top = log.most_common(2)
    out.append(
        (
            f"{system.name}: warnings and errors logged",
            sum(log.values()),
            "; ".join(f"{count}x {text[:80]!r}" for text, count in top) or "none",
        )
    )
    return out


def environment_rows(runs: list[Run]) -> list[tuple[str, float, str]]:
    lagging = max(runs, key=lambda run: run.lag_p99_ms)
    busiest = max(runs, key=lambda run: max(run.environment_cpu.values()))
    process, share = max(busiest.environment_cpu.items(), key=lambda item: item[1])
    crowded = max(runs, key=lambda run: run.others_cpu)
    return [
        (
            "generator: schedule lag p99 (ms)",
            lagging.lag_p99_ms,
            f"worst run ({lagging.load:g}x {lagging.system.name}); "
            f"max {max(run.lag_max_ms for run in runs):.0f} ms over all runs",
        ),
        (
            "environment: busiest process (% of a core)",
            share,
            f"{process} in {busiest.load:g}x {busiest.system.name}",
        ),
        (
            "machine: other processes' CPU (% of a core)",
            crowded.others_cpu,
            f"worst run ({crowded.load:g}x {crowded.system.name}); median "
            f"{statistics.median(run.others_cpu for run in runs):.0f}%; 0 on a quiet machine",
        ),
    ]


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    scale = QUICK if quick else FULL
    return rows(*asyncio.run(benchmark(scale, schedule(quick), None)), scale)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--quick", action="store_true", help="the CI size (under a minute)")
    parser.add_argument("--only", nargs="+", metavar="RUN", help='runs such as "4x SQLite"')
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy every log to DIR")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="the plan N times over, each figure the median (CPU per answer is noisy)",
    )
    parser.add_argument(
        "--relay-http",
        choices=("httpx", "aiohttp"),
        default="httpx",
        help="the relay's SDK transport: its default (httpx), or aiohttp as chatlane's",
    )
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    if args.only:  # a budget for the runs asked for, not for a whole run
        scale = dataclasses.replace(scale, budget=600 * len(args.only) * args.repeat)
    elif args.repeat > 1:
        scale = dataclasses.replace(scale, budget=scale.budget * args.repeat)
    relay = RELAY_AIOHTTP if args.relay_http == "aiohttp" else RELAY
    plan = schedule(args.quick, args.only, args.repeat, relay)
    for figure, value, note in rows(*asyncio.run(benchmark(scale, plan, args.keep_logs)), scale):
        print(f"{figure:46} {value:10.3f}  {note}")


if __name__ == "__main__":
    main()
