"""Compaction cost: a turn in a 10,000-message session vs a 100-message one.

Both sessions are far over the context budget, so both are compacted and
send a window of the same size; what differs is the history behind it. The
first turn of each (loading and counting the history once, as after a
restart) is not timed; the turns after it are. Target: at most 1.5x.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import load_config
from bot.messages import Message, Role
from bot.runtime import AgentRuntime
from bot.storage import SQLiteStorage

WORDS = "the quarterly report shows steady growth in every region we track " * 20


async def history(storage: SQLiteStorage, session: str, count: int) -> None:
    batch = []
    for index in range(count):
        role = Role.USER if index % 2 == 0 else Role.ASSISTANT
        batch.append(Message(role, f"{index} {WORDS}"))
        if len(batch) == 500:
            await storage.append_messages(session, batch)
            batch = []
    if batch:
        await storage.append_messages(session, batch)


async def per_turn(runtime: AgentRuntime, session: str, turns: int) -> float:
    await runtime.ask(session, "warm up")
    started = time.perf_counter()
    for index in range(turns):
        await runtime.ask(session, f"question {index}")
    return (time.perf_counter() - started) / turns


async def measure(big: int, turns: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as data:
        storage = SQLiteStorage(Path(data) / "bench.sqlite")
        await storage.open()
        await history(storage, "small", 100)
        await history(storage, "big", big)
        config = load_config(
            data={"agent": {"context": {"max_tokens": 24000, "compaction_strategy": "recent"}}}
        )
        runtime = AgentRuntime("demo/chatlane-demo", config=config, storage=storage)
        small = await per_turn(runtime, "small", turns)
        large = await per_turn(runtime, "big", turns)
        await runtime.close()
    return small, large


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    big, turns = (10_000, 20) if quick else (10_000, 100)
    small, large = asyncio.run(measure(big, turns))
    return [
        ("turn, 100 messages (ms)", small * 1000, "window compacted to the same budget"),
        (f"turn, {big:,} messages (ms)", large * 1000, ""),
        ("10,000 vs 100 messages", large / small, "target <= 1.5"),
    ]


if __name__ == "__main__":
    for name, value, note in run(quick="--quick" in sys.argv):
        print(f"{name:28} {value:10.3f}  {note}")
