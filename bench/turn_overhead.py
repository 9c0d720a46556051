"""Turn overhead: one ``AgentRuntime`` turn vs a bare SDK call, against the same zero-latency fake.

Both stream the same reply from a local fake Anthropic server in the same
process and run, and both send the same requests: the bare SDK replays,
verbatim, the request bodies the runtime sent (system prompt, tools, history),
on the SDK's aiohttp transport, as the runtime's provider does.
The ratio is (runtime turn time) / (bare SDK call time).
The runtime's turn stores the user message and the answer in SQLite, picks
a key, counts tokens, filters reasoning and yields events. Target: at most
1.10x.

A full run pools the rounds of several fresh processes (as pyperf does): one
process's figure moves by several hundredths from run to run (memory layout,
hash seeds), which alternating rounds inside it cannot cancel.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import json_from_child
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


Round = tuple[float, float, float]  # (bare call s, runtime turn s, ratio)


async def measure(turns: int, rounds: int, *, sqlite: bool) -> list[Round]:
    """Alternating rounds of ``turns`` runtime turns and the same requests sent bare."""
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
            client = anthropic.AsyncAnthropic(  # on the transport the runtime's provider uses
                api_key="sk-ant-bench-0000",
                base_url=fake.base_url,
                max_retries=0,
                http_client=anthropic.DefaultAioHttpClient(),
            )
            await runtime.ask("warm-up", "hello")
            await _bare(client, [fake.requests[0].json])
            measured: list[Round] = []
            for _ in range(rounds):  # short alternating rounds: the machine's drift cancels
                fake.requests.clear()
                turn = await _runtime(runtime, turns)
                bodies = [r.json for r in fake.requests]
                fake.requests.clear()
                bare = await _bare(client, bodies)
                measured.append((bare, turn, turn / bare))
            await client.close()
            await runtime.close()
    return measured


def worker(turns: int, rounds: int) -> dict[str, list[Round]]:
    return {
        "sqlite": asyncio.run(measure(turns, rounds, sqlite=True)),
        "memory": asyncio.run(measure(turns, rounds, sqlite=False)),
    }


def _in_a_fresh_process(turns: int, rounds: int) -> dict[str, list[Round]]:
    result: dict[str, list[Round]] = json_from_child(
        [__file__, "--worker", str(turns), str(rounds)]
    )
    return result


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    results = [worker(30, 3)] if quick else [_in_a_fresh_process(40, 9) for _ in range(5)]
    pooled = {key: [r for result in results for r in result[key]] for key in results[0]}

    def median(key: str, column: int) -> float:
        return statistics.median(r[column] for r in pooled[key])

    return [
        ("bare SDK call (ms)", median("sqlite", 0) * 1000, "baseline, same fake, same requests"),
        ("runtime turn, SQLite (ms)", median("sqlite", 1) * 1000, "transcript stored"),
        (
            "turn overhead ratio, SQLite",
            median("sqlite", 2),
            f"target <= 1.10; median of {len(pooled['sqlite'])} rounds' ratios, "
            f"{len(results)} process(es)",
        ),
        ("turn overhead ratio, in memory", median("memory", 2), "storage excluded"),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        for name, value, note in run(quick="--quick" in sys.argv):
            print(f"{name:30} {value:10.3f}  {note}")
