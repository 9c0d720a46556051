"""The model named on a reply is the model that wrote it (issue 21, "Also"): when the
primary's keys rest, the reply, the done event and the log name the fallback, and a
failover event says why."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from bot.events import AgentEvent, EventType
from bot.runtime import AgentRuntime
from bot.storage import MemoryStorage
from tests.fakes.models import Fail, FakeAnthropic, FakeOpenAI, Reply


@pytest.fixture
async def fakes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeAnthropic, FakeOpenAI]]:
    async with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.base_url)
        monkeypatch.setenv("OPENAI_BASE_URL", openai.api_base)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-main-1111")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-2222")
        yield anthropic, openai


async def turn(runtime: AgentRuntime, text: str) -> list[AgentEvent]:
    return [event async for event in runtime.run("s", text)]


async def test_with_the_primary_resting_the_fallback_is_named(
    fakes: tuple[FakeAnthropic, FakeOpenAI], caplog: pytest.LogCaptureFixture
) -> None:
    anthropic, openai = fakes
    anthropic.script(Fail(429, "rate_limit_error", headers={"retry-after": "600"}))
    openai.default = lambda request: Reply(text="from openai")
    runtime = AgentRuntime(
        "anthropic/claude-sonnet-4", fallback_models=["openai/gpt-4o"], storage=MemoryStorage()
    )
    try:
        first = await turn(runtime, "one")
        assert [e.data["to"] for e in first if e.type is EventType.FAILOVER] == ["openai/gpt-4o"]
        assert first[-1].type is EventType.DONE and first[-1].data["model"] == "openai/gpt-4o"
        asked = len(anthropic.requests)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            second = await turn(runtime, "two")  # the anthropic key rests now
        assert len(anthropic.requests) == asked  # not asked while resting
        failovers = [e.data for e in second if e.type is EventType.FAILOVER]
        assert [(f["from"], f["to"]) for f in failovers] == [
            ("anthropic/claude-sonnet-4", "openai/gpt-4o")
        ]
        done = second[-1]
        assert done.type is EventType.DONE and done.data["model"] == "openai/gpt-4o", done.data
        turn_log = [r.getMessage() for r in caplog.records if "turn done" in r.getMessage()]
        assert turn_log and "model=openai/gpt-4o" in turn_log[-1], turn_log
    finally:
        await runtime.close()
