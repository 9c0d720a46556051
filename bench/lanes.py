"""Lanes under load: throughput against the ideal, and memory as chats come and go.

2,000 chats send 5 messages each at once; every turn holds its chat's lane
and a global slot (cap 100) around a 50 ms stand-in for the model. The ideal
is cap / latency = 2,000 turns per second; target at least 0.9x of it. Then
100,000 distinct chats run one turn each and the memory still held is
measured (target under 100 MB): idle lanes must not pile up.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.queuing import QueueManager

CAP = 100
LATENCY = 0.05


async def throughput(chats: int, messages: int) -> float:
    manager = QueueManager(max_concurrent_per_session=1, max_concurrent_global=CAP)

    async def turn(chat: int) -> None:
        async with manager.hold(f"chat-{chat}"):
            await asyncio.sleep(LATENCY)

    started = time.perf_counter()
    await asyncio.gather(*(turn(c) for _ in range(messages) for c in range(chats)))
    elapsed = time.perf_counter() - started
    return chats * messages / elapsed


async def semaphore_throughput(chats: int, messages: int) -> float:
    """The same load through a bare asyncio.Semaphore: what the event loop itself allows."""
    cap = asyncio.Semaphore(CAP)

    async def turn() -> None:
        async with cap:
            await asyncio.sleep(LATENCY)

    started = time.perf_counter()
    await asyncio.gather(*(turn() for _ in range(messages) for _ in range(chats)))
    return chats * messages / (time.perf_counter() - started)


async def memory(chats: int) -> float:
    manager = QueueManager(max_concurrent_per_session=1, max_concurrent_global=CAP)

    async def turn(chat: int) -> None:
        async with manager.hold(f"chat-{chat}"):
            await asyncio.sleep(0)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, chats, 5000):
        await asyncio.gather(*(turn(c) for c in range(start, min(start + 5000, chats))))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert manager.session_count == 0
    return (after - before) / 1e6


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    chats, distinct = (400, 10_000) if quick else (2_000, 100_000)
    rate = asyncio.run(throughput(chats, 5))
    bare = asyncio.run(semaphore_throughput(chats, 5))
    held = asyncio.run(memory(distinct))
    ideal = CAP / LATENCY
    return [
        ("turns per second", rate, f"{chats} chats x 5, cap {CAP}, 50 ms model"),
        ("throughput vs ideal", rate / ideal, "target >= 0.9"),
        ("bare asyncio.Semaphore vs ideal", bare / ideal, "what the event loop allows"),
        (f"memory held after {distinct:,} chats (MB)", held, "target < 100"),
    ]


if __name__ == "__main__":
    for name, value, note in run(quick="--quick" in sys.argv):
        print(f"{name:40} {value:10.3f}  {note}")
