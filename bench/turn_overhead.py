"""Turn overhead: one ``AgentRuntime`` turn vs a bare SDK call, against the same zero-latency fake.

Both stream the same reply from a local fake Anthropic server in the same
process and run, and both send the same requests: the bare SDK replays,
verbatim, the request bodies the runtime sent (system prompt, tools, history).
The ratio is (runtime turn time) / (bare SDK call time).
The runtime's turn stores the user message and the answer in SQLite, picks
a key, counts tokens, filters reasoning and yields events. Target: at most
1.10x.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.storage import MemoryStorage, SQLiteStorage
from tests.fakes.models import FakeAnthropic, Reply

ANSWER = "The answer, in a few streamed pieces, is forty-two. " * 3


async def _bare(client: anthropic.AsyncAnthropic, bodies: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for body in bodies:
        stream = await client.messages.create(**body)
        async with stream:
            async for _ in stream:
                pass
    return (time.perf_counter() - started) / len(bodies)


async def _runtime(runtime: AgentRuntime, turns: int) -> float:
    started = time.perf_counter()
    for index in range(turns):
        await runtime.ask(f"chat-{index % 50}", f"question {index}")
    return (time.perf_counter() - started) / turns


async def measure(turns: int, rounds: int, *, sqlite: bool) -> tuple[float, float, float]:
    async with FakeAnthropic() as fake:
        fake.default = lambda request: Reply(text=ANSWER, chunks=6)
        os.environ["ANTHROPIC_BASE_URL"] = fake.base_url
        os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-0000"
        with tempfile.TemporaryDirectory() as data:
            runtime = AgentRuntime(
                "anthropic/claude-sonnet-4-6",
                config=load_config(data={}),
                storage=SQLiteStorage(Path(data) / "bench.sqlite") if sqlite else MemoryStorage(),
            )
            client = anthropic.AsyncAnthropic(
                api_key="sk-ant-bench-0000", base_url=fake.base_url, max_retries=0
            )
            await runtime.ask("warm-up", "hello")
            await _bare(client, [fake.requests[0].json])
            bare_times, runtime_times, ratios = [], [], []
            for _ in range(rounds):  # short alternating rounds: the machine's drift cancels
                fake.requests.clear()
                runtime_times.append(await _runtime(runtime, turns))
                bodies = [r.json for r in fake.requests]
                fake.requests.clear()
                bare_times.append(await _bare(client, bodies))
                ratios.append(runtime_times[-1] / bare_times[-1])
            await client.close()
            await runtime.close()
    return (
        statistics.median(bare_times),
        statistics.median(runtime_times),
        statistics.median(ratios),
    )


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    turns, rounds = (30, 3) if quick else (40, 31)
    bare, turn, ratio = asyncio.run(measure(turns, rounds, sqlite=True))
    _, _, ratio_memory = asyncio.run(measure(turns, rounds, sqlite=False))
    return [
        ("bare SDK call (ms)", bare * 1000, "baseline, same fake, same requests"),
        ("runtime turn, SQLite (ms)", turn * 1000, "transcript stored"),
        ("turn overhead ratio, SQLite", ratio, "target <= 1.10; median of per-round ratios"),
        ("turn overhead ratio, in memory", ratio_memory, "storage excluded"),
    ]


if __name__ == "__main__":
    for name, value, note in run(quick="--quick" in sys.argv):
        print(f"{name:28} {value:10.3f}  {note}")
