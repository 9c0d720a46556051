"""Side by side with LiteLLM's Router: the same turns, the same fallback chain, the same fakes.

Both systems answer the same single-message turns through the chain
``anthropic/claude-sonnet-4-6`` then ``openai/gpt-4o``, against one local
fake Anthropic server and one fake OpenAI server, in the same process and
run. Two cases: the primary answers (healthy), and the primary fails with
529 overloaded so the fallback answers (failover).

What is compared is each system's overhead per turn: its turn time minus
the time the bare SDKs take to send, verbatim, the requests that system
sent (recorded by the fakes and replayed: chatlane's on the SDKs' aiohttp
transport, which its providers use, LiteLLM's on the SDKs' default). Each system is charged only for
what it adds to its own wire calls, so neither is penalised for a request
the other did not make (chatlane, for one, skips a primary in cooldown
after a 529; LiteLLM's Router retries a model group with one deployment).
chatlane's turn here keeps its transcript in memory (LiteLLM stores
nothing); ``turn_overhead`` measures the SQLite-backed turn.

Needs the ``bench`` extra (``pip install -e '.[bench]'``); without it the
benchmark reports that it was skipped. Target: chatlane's overhead at most
0.5x LiteLLM's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import openai

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM offline, before import
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.storage import MemoryStorage
from tests.fakes.models import Fail, FakeAnthropic, FakeOpenAI, Recorded, Reply

PRIMARY, FALLBACK = "anthropic/claude-sonnet-4-6", "openai/gpt-4o"
ANSWER = "The answer, in a few streamed pieces, is forty-two. " * 3
KEY_A, KEY_O = "sk-ant-bench-0000", "sk-openai-bench-0000"


def answering(request: Recorded) -> Reply:
    return Reply(text=ANSWER, chunks=6)


def overloaded(request: Recorded) -> Fail:
    return Fail(529, "overloaded_error", "Overloaded")


class Fakes:
    def __init__(self, anthropic_fake: FakeAnthropic, openai_fake: FakeOpenAI) -> None:
        self.anthropic = anthropic_fake
        self.openai = openai_fake

    def answer(self, primary_fails: bool) -> None:
        self.anthropic.default = overloaded if primary_fails else answering
        self.openai.default = answering

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        sent = [r.json for r in self.anthropic.requests], [r.json for r in self.openai.requests]
        self.anthropic.requests.clear()
        self.openai.requests.clear()
        return sent


async def bare(
    clients: tuple[anthropic.AsyncAnthropic, openai.AsyncOpenAI],
    sent: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> float:
    """The wire alone: the recorded requests, replayed with the bare SDKs."""
    claude, gpt = clients
    started = time.perf_counter()
    await _replay(claude, gpt, sent)
    return time.perf_counter() - started


async def _replay(
    claude: anthropic.AsyncAnthropic,
    gpt: openai.AsyncOpenAI,
    sent: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    for body in sent[0]:
        with contextlib.suppress(anthropic.APIStatusError):
            stream = await claude.messages.create(**body)
            async with stream:
                async for _ in stream:
                    pass
    for body in sent[1]:
        chunks = await gpt.chat.completions.create(**body)
        async for _ in chunks:
            pass


async def ours(runtime: AgentRuntime, turns: int, tag: str) -> float:
    started = time.perf_counter()
    for index in range(turns):
        answer = await runtime.ask(f"{tag}-{index}", f"question {index}")
        assert answer, "chatlane gave no answer"
    return time.perf_counter() - started


async def theirs(router: Any, turns: int) -> float:
    started = time.perf_counter()
    for index in range(turns):
        stream = await router.acompletion(
            model="primary",
            messages=[{"role": "user", "content": f"question {index}"}],
            stream=True,
            max_tokens=1024,
        )
        text = [chunk.choices[0].delta.content or "" async for chunk in stream]
        assert "".join(text), "LiteLLM gave no answer"
    return time.perf_counter() - started


def make_router(fakes: Fakes) -> Any:
    import litellm
    from litellm import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)
    return Router(
        model_list=[
            {
                "model_name": "primary",
                "litellm_params": {
                    "model": PRIMARY,
                    "api_base": fakes.anthropic.base_url,
                    "api_key": KEY_A,
                },
            },
            {
                "model_name": "fallback",
                "litellm_params": {
                    "model": FALLBACK,
                    "api_base": fakes.openai.api_base,
                    "api_key": KEY_O,
                },
            },
        ],
        fallbacks=[{"primary": ["fallback"]}],
        num_retries=0,
    )


async def measure(turns: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median overhead per turn (seconds) of chatlane and of LiteLLM, per case."""
    async with FakeAnthropic() as fake_a, FakeOpenAI() as fake_o:
        fakes = Fakes(fake_a, fake_o)
        os.environ.update(
            ANTHROPIC_BASE_URL=fake_a.base_url,
            ANTHROPIC_API_KEY=KEY_A,
            OPENAI_BASE_URL=fake_o.api_base,
            OPENAI_API_KEY=KEY_O,
        )
        clients = (
            anthropic.AsyncAnthropic(api_key=KEY_A, base_url=fake_a.base_url, max_retries=0),
            openai.AsyncOpenAI(api_key=KEY_O, base_url=fake_o.api_base, max_retries=0),
        )
        # chatlane's calls replayed on the transport its providers use (the SDKs' aiohttp one)
        on_aiohttp = (
            anthropic.AsyncAnthropic(
                api_key=KEY_A,
                base_url=fake_a.base_url,
                max_retries=0,
                http_client=anthropic.DefaultAioHttpClient(),
            ),
            openai.AsyncOpenAI(
                api_key=KEY_O,
                base_url=fake_o.api_base,
                max_retries=0,
                http_client=openai.DefaultAioHttpClient(),
            ),
        )
        router = make_router(fakes)
        results: dict[str, tuple[float, float]] = {}
        for case, primary_fails in (("healthy", False), ("failover", True)):
            fakes.answer(primary_fails)
            runtime = AgentRuntime(
                PRIMARY,
                fallback_models=[FALLBACK],
                config=load_config(data={}),
                storage=MemoryStorage(),
            )
            # Warm both up (imports, connection pools, the tokenizer), then measure.
            await ours(runtime, 3, f"warm-{case}")
            await bare(on_aiohttp, fakes.take())
            fakes.take()
            await theirs(router, 3)
            await bare(clients, fakes.take())
            fakes.take()
            mine, other = [], []
            for round_index in range(rounds):
                elapsed = await ours(runtime, turns, f"{case}-{round_index}")
                wire = await bare(on_aiohttp, fakes.take())
                fakes.take()  # the replay's own requests
                mine.append((elapsed - wire) / turns)
                elapsed = await theirs(router, turns)
                wire = await bare(clients, fakes.take())
                fakes.take()  # the replay's own requests
                other.append((elapsed - wire) / turns)
            await runtime.close()
            results[case] = (statistics.median(mine), statistics.median(other))
        for client in (*clients, *on_aiohttp):
            await client.close()
    return results


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    try:
        import litellm  # noqa: F401
    except ImportError:
        return [("skipped: LiteLLM not installed", float("nan"), "pip install -e '.[bench]'")]
    turns, rounds = (10, 3) if quick else (60, 7)
    results = asyncio.run(measure(turns, rounds))
    rows = []
    for case, (mine, other) in results.items():
        rows += [
            (f"{case}: chatlane overhead (ms/turn)", mine * 1000, "beyond its own wire calls"),
            (f"{case}: LiteLLM Router overhead (ms/turn)", other * 1000, "same"),
            (f"{case}: overhead ratio chatlane/LiteLLM", mine / other, "target <= 0.5"),
        ]
    return rows


if __name__ == "__main__":
    for name, value, note in run(quick="--quick" in sys.argv):
        print(f"{name:45} {value:10.3f}  {note}")
