"""AgentRuntime end to end: real SDKs against the fake model servers."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import AgentEvent, AgentRuntime, CompactionStrategy, FormatMode, ThinkingMode
from bot import events as event_types
from bot.auth import AuthProfile
from bot.config import load_config
from bot.events import EventType
from bot.failover import FallbackChain, FallbackManager
from bot.failover.errors import FailoverError, FailoverReason
from bot.messages import Message, Role
from bot.storage import MemoryStorage, SQLiteStorage
from bot.storage.redis import RedisStorage
from tests.fakes.models import Fail, FakeAnthropic, FakeOpenAI, Reply
from tests.helpers import wait_for, wait_for_event


@pytest.fixture
async def fakes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeAnthropic, FakeOpenAI]]:
    async with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.base_url)
        monkeypatch.setenv("OPENAI_BASE_URL", openai.api_base)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-main-1111")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-2222")
        yield anthropic, openai


def two_provider_config(anthropic: FakeAnthropic, openai: FakeOpenAI, **agent: Any) -> Any:
    return load_config(
        data={
            "agent": {"model": "provider-a/model-1", **agent},
            "providers": {
                "provider-a": {
                    "type": "openai",
                    "base_url": openai.api_base,
                    "api_key_env": "OPENAI_API_KEY",
                },
                "provider-b": {
                    "type": "anthropic",
                    "base_url": anthropic.base_url,
                    "api_key_env": "ANTHROPIC_API_KEY",
                },
            },
        }
    )


SHAPES: dict[EventType, Any] = {
    EventType.QUEUE: event_types.QueueData,
    EventType.THINKING: event_types.ThinkingData,
    EventType.TEXT: event_types.TextData,
    EventType.TOOL_CALL: event_types.ToolCallData,
    EventType.TOOL_RESULT: event_types.ToolResultData,
    EventType.FAILOVER: event_types.FailoverData,
    EventType.COMPACTION: event_types.CompactionData,
    EventType.DONE: event_types.DoneData,
    EventType.ERROR: event_types.ErrorData,
}


def documented(seen: list[AgentEvent]) -> list[AgentEvent]:
    """The events, each checked against its documented keys (bot.events)."""
    for event in seen:
        assert isinstance(event.data, dict)
        assert set(event.data) == set(SHAPES[event.type].__annotations__), event
    return seen


async def events(runtime: AgentRuntime, text: str, session: str = "s") -> list[AgentEvent]:
    return documented([event async for event in runtime.run(session, text)])


def kinds(items: list[AgentEvent]) -> list[str]:
    return [e.type.value for e in items]


async def test_minimal_constructor_streams_text(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    anthropic, _ = fakes
    answer = "Hello from Claude, streaming in several pieces as it is written."
    anthropic.script(Reply(text=answer, chunks=4))
    async with AgentRuntime("anthropic/claude-opus-4-5") as runtime:
        seen = await events(runtime, "hello")
    texts = [e.data["delta"] for e in seen if e.type.value == "text"]
    assert "".join(texts) == answer and len(texts) >= 2
    assert seen[-1].type.value == "done" and seen[-1].data["text"] == answer
    assert seen[-1].data["stop_reason"] == "end"
    assert anthropic.requests[0].json["model"] == "claude-opus-4-5"
    assert anthropic.requests[0].api_key == "sk-ant-main-1111"


async def test_plan_constructor_keywords(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    profile1 = AuthProfile("anthropic-main", "anthropic", "sk-ant-aaaa-1111")
    profile2 = AuthProfile("anthropic-backup", "anthropic", "sk-ant-bbbb-2222")
    runtime = AgentRuntime(
        "anthropic/claude-opus-4-5",
        thinking_mode=ThinkingMode.STREAM,
        fallback_models=["anthropic/claude-sonnet-4", "openai/gpt-4"],
        auth_profiles=[profile1, profile2],
        enable_queuing=True,
        tool_format=FormatMode.MARKDOWN,
        compaction_strategy=CompactionStrategy.KEEP_IMPORTANT,
    )
    assert runtime.models.chain == FallbackChain(
        "anthropic/claude-opus-4-5", ["anthropic/claude-sonnet-4", "openai/gpt-4"]
    )
    reply = await runtime.ask("s", "hi")
    assert reply == "echo: hi"
    await runtime.close()


async def test_fallback_chain(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    anthropic, openai = fakes
    runtime = AgentRuntime(
        model="provider-a/model-1",
        fallback_chain=["provider-b/model-2"],
        config=two_provider_config(anthropic, openai),
    )
    openai.script(Fail(503, "server_error"))
    anthropic.script(Reply(text="from provider b"))
    seen = await events(runtime, "hello")
    failover = [e for e in seen if e.type.value == "failover"]
    assert failover[0].data == {
        "from": "provider-a/model-1",
        "to": "provider-b/model-2",
        "reason": "overloaded",
    }
    assert seen[-1].data["text"] == "from provider b"
    assert (
        FallbackManager(FallbackChain("provider-a/model-1", ["provider-b/model-2"])).get_next_model(
            "provider-a/model-1"
        )
        == "provider-b/model-2"
    )
    await runtime.close()


@pytest.mark.parametrize(
    "fail",
    [
        Fail(429, "rate_limit_error", headers={"retry-after": "3"}),
        Fail(529, "overloaded_error"),
        Fail(500, "api_error"),
        Fail(401, "authentication_error"),
        Fail(402, "billing_error"),
        Fail(404, "not_found_error"),
    ],
)
async def test_every_failover_reason_reaches_the_next_model(
    fakes: tuple[FakeAnthropic, FakeOpenAI], fail: Fail
) -> None:
    anthropic, openai = fakes
    anthropic.script(fail)
    openai.script(Reply(text="openai answered"))
    runtime = AgentRuntime("anthropic/claude-sonnet-4", fallback_models=["openai/gpt-4o"])
    assert await runtime.ask("s", "hi") == "openai answered"
    await runtime.close()


async def test_bad_request_does_not_fail_over(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    anthropic, openai = fakes
    anthropic.script(Fail(400, "invalid_request_error", "bad temperature"))
    runtime = AgentRuntime("anthropic/claude-sonnet-4", fallback_models=["openai/gpt-4o"])
    seen = await events(runtime, "hi")
    assert seen[-1].type.value == "error" and seen[-1].data["reason"] == "bad_request"
    assert openai.requests == []
    await runtime.close()


async def test_two_keys_and_a_fallback_keep_answering(
    fakes: tuple[FakeAnthropic, FakeOpenAI], monkeypatch: pytest.MonkeyPatch
) -> None:
    anthropic, openai = fakes
    monkeypatch.setenv("ANTHROPIC_API_KEY_2", "sk-ant-backup-3333")
    config = load_config(
        data={
            "agent": {
                "model": "anthropic/claude-sonnet-4",
                "fallback_models": ["openai/gpt-4o"],
                "auth_profiles": [
                    {
                        "id": "anthropic-main",
                        "provider": "anthropic",
                        "api_key_env": "ANTHROPIC_API_KEY",
                    },
                    {
                        "id": "anthropic-backup",
                        "provider": "anthropic",
                        "api_key_env": "ANTHROPIC_API_KEY_2",
                    },
                    {"id": "openai", "provider": "openai", "api_key_env": "OPENAI_API_KEY"},
                ],
            }
        }
    )
    runtime = AgentRuntime(config=config)
    anthropic.script(
        Fail(429, "rate_limit_error", headers={"retry-after": "30"}), Fail(529, "overloaded_error")
    )
    first = await runtime.ask("a", "one")
    assert first == "echo: one"
    assert [r.api_key for r in anthropic.requests] == ["sk-ant-main-1111", "sk-ant-backup-3333"]
    assert len(openai.requests) == 1
    # both Anthropic keys now rest: the next turn goes straight to OpenAI, no request wasted
    second = await runtime.ask("b", "two")
    assert second == "echo: two"
    assert len(anthropic.requests) == 2 and len(openai.requests) == 2
    status = await runtime.status()
    states = {p["id"]: p["state"] for p in status["profiles"]}
    assert states["anthropic-main"].startswith("cooling until")
    assert states["openai"] == "ready"
    await runtime.close()


async def test_everything_failing_gives_one_plain_sentence(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    anthropic, openai = fakes
    anthropic.script(Fail(529, "overloaded_error"))
    openai.script(Fail(429, "rate_limit_error", headers={"retry-after": "40"}))
    storage = MemoryStorage()
    runtime = AgentRuntime(
        "anthropic/claude-sonnet-4", fallback_models=["openai/gpt-4o"], storage=storage
    )
    seen = await events(runtime, "are you there?")
    error = seen[-1]
    assert error.type.value == "error"
    assert error.data["message"] == (
        "The AI provider is rate-limiting this bot. Please try again in about 40 seconds."
    )
    assert "sk-" not in error.data["message"]
    transcript = await storage.load_messages("s")
    assert [m.content for m in transcript] == ["are you there?"]
    with pytest.raises(FailoverError) as info:
        await runtime.ask("s", "again?")
    assert info.value.reason is FailoverReason.NO_PROFILE  # both keys are resting
    assert [a.reason for a in info.value.attempts] == [FailoverReason.NO_PROFILE] * 2
    await runtime.close()


async def test_mid_stream_failure_is_not_silently_restarted(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    anthropic, openai = fakes
    anthropic.script(Reply(text="The answer is", fail_after=Fail(200, "overloaded_error")))
    runtime = AgentRuntime("anthropic/claude-sonnet-4", fallback_models=["openai/gpt-4o"])
    seen = await events(runtime, "q")
    text = "".join(e.data["delta"] for e in seen if e.type.value == "text")
    assert text.startswith("The answer is") and "cut off" in text
    assert seen[-1].type.value == "error"
    assert openai.requests == []
    await runtime.close()


async def test_tool_round_trip_and_display(
    fakes: tuple[FakeAnthropic, FakeOpenAI], tmp_path: Path
) -> None:
    anthropic, _ = fakes
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "config.py").write_text("DEBUG = True\n")
    config = load_config(data={"agent": {"workspace": str(workspace), "show_tool_results": "full"}})
    anthropic.script(
        Reply(tool_calls=[("toolu_1", "read_file", {"path": "config.py"})]),
        Reply(text="DEBUG is on."),
    )
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config)
    seen = await runtime_events(runtime, "what is in config.py?", channel="telegram")
    assert kinds(seen) == ["tool_call", "tool_result", "text", "done"]
    result = seen[1].data
    assert result["content"] == "DEBUG = True\n" and not result["is_error"]
    assert result["display"] == "### File Read: config.py\n```python\nDEBUG = True\n```"
    second = anthropic.requests[1].json["messages"]
    assert second[-1]["content"][0]["type"] == "tool_result"
    anthropic.script(
        Reply(tool_calls=[("toolu_2", "read_file", {"path": "config.py"})]), Reply(text="Still on.")
    )
    sms = await runtime_events(runtime, "again", channel="sms", tool_format="plain")
    assert sms[1].data["display"] == "File: config.py\nContent: DEBUG = True"
    await runtime.close()


async def runtime_events(runtime: AgentRuntime, text: str, **kwargs: Any) -> list[AgentEvent]:
    return documented([e async for e in runtime.run("tools", text, **kwargs)])


async def test_tool_rounds_are_bounded(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    anthropic, _ = fakes
    config = load_config(data={"agent": {"max_tool_rounds": 2}})
    anthropic.script(
        *[Reply(tool_calls=[(f"t{i}", "current_time", {})]) for i in range(2)],
        Reply(text="done now"),
    )
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config)
    seen = await events(runtime, "loop")
    assert kinds(seen).count("tool_call") == 2
    assert "tools" not in anthropic.requests[2].json
    assert seen[-1].data["text"] == "done now"
    await runtime.close()


@pytest.mark.parametrize("mode", ["off", "on", "stream"])
async def test_thinking_never_leaks(fakes: tuple[FakeAnthropic, FakeOpenAI], mode: str) -> None:
    anthropic, _ = fakes
    anthropic.script(
        Reply(text="Plan: <thinking>secret plan</thinking>The answer.", thinking="native reasoning")
    )
    runtime = AgentRuntime("anthropic/claude-sonnet-4", thinking_mode=mode)
    seen = await events(runtime, "q")
    text = "".join(e.data["delta"] for e in seen if e.type.value == "text")
    assert "secret" not in text and "native" not in text and "<thinking" not in text
    assert seen[-1].data["text"] == "The answer."
    thinking = [e.data for e in seen if e.type.value == "thinking"]
    if mode == "off":
        assert thinking == [] and seen[-1].data["thinking"] == ""
        assert "thinking" not in anthropic.requests[0].json
    elif mode == "stream":
        assert all(t["mode"] == "stream" for t in thinking)
        joined = "".join(t["content"] for t in thinking)
        assert "native reasoning" in joined and "secret plan" in joined
    else:
        assert len(thinking) == 1 and thinking[0]["mode"] == "on"
        assert "secret plan" in seen[-1].data["thinking"]
    await runtime.close()


async def test_think_command_overrides_per_session(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    anthropic, _ = fakes
    runtime = AgentRuntime("anthropic/claude-sonnet-4")
    await runtime.set_thinking_mode("s", "stream")
    anthropic.script(Reply(text="ok", thinking="hmm"))
    seen = await events(runtime, "q")
    assert "".join(e.data["content"] for e in seen if e.type.value == "thinking") == "hmm"
    assert anthropic.requests[0].json["thinking"]["type"] == "enabled"
    await runtime.close()


async def test_transcript_survives_restart(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    anthropic, _ = fakes
    first = AgentRuntime("anthropic/claude-sonnet-4")
    await first.ask("chat", "my name is Ada")
    await first.close()
    second = AgentRuntime("anthropic/claude-sonnet-4")
    await second.ask("chat", "who am I?")
    sent = anthropic.requests[-1].json["messages"]
    assert [m["content"][0]["text"] for m in sent if m["role"] == "user"] == [
        "my name is Ada",
        "who am I?",
    ]
    await second.reset("chat")
    await second.ask("chat", "fresh")
    assert len(anthropic.requests[-1].json["messages"]) == 1
    await second.close()


async def test_compaction_summarizes_and_keeps_the_transcript(
    fakes: tuple[FakeAnthropic, FakeOpenAI], tmp_path: Path
) -> None:
    anthropic, _ = fakes
    config = load_config(
        data={
            "agent": {
                "context": {"max_tokens": 5000, "reserve_tokens": 0},
                "max_output_tokens": 100,
            }
        }
    )
    storage = SQLiteStorage(tmp_path / "c.db")
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config, storage=storage)
    long_text = "word " * 600
    for index in range(6):
        await runtime.ask("long", f"{index} {long_text}")
    anthropic.script(
        lambda req: (
            Reply(text="SUMMARY: six long messages")
            if "running summary" in str(req.json.get("system"))
            else Reply(text="ok")
        )
    )
    seen = await events(runtime, "short question", session="long")
    compaction = [e for e in seen if e.type.value == "compaction"]
    assert compaction and compaction[0].data["strategy"] == "summarize"
    assert compaction[0].data["after_tokens"] < compaction[0].data["before_tokens"]
    last = anthropic.requests[-1].json["messages"]
    assert "SUMMARY: six long messages" in last[0]["content"][0]["text"]
    assert len(await storage.load_messages("long")) == 14
    await runtime.close()


async def test_summary_failure_falls_back_to_recent(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    anthropic, _ = fakes
    config = load_config(
        data={
            "agent": {
                "context": {"max_tokens": 3000, "reserve_tokens": 0},
                "max_output_tokens": 100,
            }
        }
    )
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config)
    for index in range(5):
        await runtime.ask("s", f"{index} " + "word " * 500)
    anthropic.script(Fail(400, "invalid_request_error", "nope"), Reply(text="still fine"))
    seen = await events(runtime, "go on")
    compaction = next(e for e in seen if e.type.value == "compaction")
    assert compaction.data["fallback"] is True
    assert seen[-1].data["text"] == "still fine"
    await runtime.close()


async def test_context_overflow_compacts_and_retries_once(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    anthropic, _ = fakes
    runtime = AgentRuntime("anthropic/claude-sonnet-4", compaction_strategy="recent")
    await runtime.ask("s", "first")
    anthropic.script(
        Fail(400, "invalid_request_error", "prompt is too long: 300000 tokens"),
        Reply(text="after compaction"),
    )
    seen = await events(runtime, "second")
    assert "compaction" in kinds(seen)
    assert seen[-1].data["text"] == "after compaction"
    await runtime.close()


async def test_queue_events_when_a_chat_is_busy(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    gate = asyncio.Event()
    runtime = AgentRuntime("anthropic/claude-sonnet-4")
    first = runtime.run("busy", "one")
    first_events: list[AgentEvent] = []

    async def consume_first() -> None:
        async for event in first:
            first_events.append(event)
            if event.type.value == "text":
                await gate.wait()

    task = asyncio.create_task(consume_first())
    await wait_for(
        lambda: any(e.type.value == "text" for e in first_events), "the first turn's text"
    )
    second = runtime.run("busy", "two")
    queued = await second.__anext__()
    assert queued.type.value == "queue"
    assert queued.data == {"position": 1, "lane": "session:busy"}
    gate.set()
    await task
    rest = [e async for e in second]
    assert rest[-1].data["text"] == "echo: two"
    await runtime.close()


@pytest.mark.parametrize(
    ("configured", "runtime_format", "run_format", "expected"),
    [
        ({}, None, None, "markdown"),  # nothing set: Markdown
        ({}, None, "plain", "plain"),  # the channel's own format
        ({"agent": {"tool_format": "markdown"}}, None, "plain", "markdown"),
        (
            {"agent": {"tool_format": "markdown"}, "channels": {"sms": {"tool_format": "plain"}}},
            None,
            "markdown",
            "plain",
        ),
        ({"channels": {"sms": {"tool_format": "markdown"}}}, "plain", "markdown", "plain"),
    ],
)
async def test_tool_format_resolution(
    configured: dict[str, Any], runtime_format: str | None, run_format: str | None, expected: str
) -> None:
    # AgentRuntime(tool_format=) > channels.<channel>.tool_format > agent.tool_format
    # > run(tool_format=) (the channel's own) > Markdown
    agent = {"show_tool_results": "full", **configured.get("agent", {})}
    config = load_config(data={**configured, "agent": agent})
    runtime = AgentRuntime(
        config=config,
        demo_when_unconfigured=True,
        storage=MemoryStorage(),
        tool_format=runtime_format,
    )
    seen = await runtime_events(runtime, "what time is it?", channel="sms", tool_format=run_format)
    display = next(e.data["display"] for e in seen if e.type is EventType.TOOL_RESULT)
    assert display.startswith("### Time" if expected == "markdown" else "Time\n"), display
    await runtime.close()


LENGTH_NOTICE = "(The reply was cut off: it reached the length limit.)"


async def test_a_reply_cut_off_at_max_tokens_says_so_anthropic(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    anthropic, _ = fakes
    anthropic.script(Reply(text="The three reasons are: first, the", stop="max_tokens"))
    storage = MemoryStorage()
    runtime = AgentRuntime("anthropic/claude-sonnet-4", storage=storage)
    seen = await events(runtime, "why?")
    text = "".join(e.data["delta"] for e in seen if e.type is EventType.TEXT)
    expected = "The three reasons are: first, the\n\n" + LENGTH_NOTICE
    assert text == expected
    assert seen[-1].data["text"] == expected and seen[-1].data["stop_reason"] == "max_tokens"
    transcript = await storage.load_messages("s")
    assert transcript[-1].content == expected  # the model sees later that it was cut
    await runtime.close()


@pytest.mark.parametrize(
    ("finish", "stop", "notice"),
    [
        ("length", "max_tokens", LENGTH_NOTICE),
        ("content_filter", "refusal", "(The reply was cut off: the AI provider stopped it.)"),
    ],
)
async def test_a_reply_cut_off_says_so_openai(
    fakes: tuple[FakeAnthropic, FakeOpenAI], finish: str, stop: str, notice: str
) -> None:
    _, openai = fakes
    openai.script(Reply(text="Step one: open the", stop=finish))
    runtime = AgentRuntime("openai/gpt-4o", storage=MemoryStorage())
    seen = await events(runtime, "how?")
    assert seen[-1].data["text"] == "Step one: open the\n\n" + notice
    assert seen[-1].data["stop_reason"] == stop
    await runtime.close()


async def test_an_empty_answer_says_the_model_gave_none(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
) -> None:
    anthropic, openai = fakes
    anthropic.script(Reply(text=""))
    runtime = AgentRuntime("anthropic/claude-sonnet-4", storage=MemoryStorage())
    seen = await events(runtime, "hello?")
    assert [e.data["delta"] for e in seen if e.type is EventType.TEXT] == [
        "(The model gave no answer.)"
    ]
    assert seen[-1].data["text"] == "(The model gave no answer.)"
    assert seen[-1].data["stop_reason"] == "end"
    # spent on reasoning and cut off: the length limit is the better explanation
    openai.script(Reply(thinking="long deliberation", stop="length"))
    other = AgentRuntime("openai/gpt-4o", storage=MemoryStorage(), thinking_mode="on")
    assert await other.ask("s", "hello?") == LENGTH_NOTICE
    await runtime.close()
    await other.close()


@pytest.mark.redis
async def test_settings_changed_in_one_process_hold_for_the_next_turn_in_another(
    fakes: tuple[FakeAnthropic, FakeOpenAI], redis_server: str, redis_prefix: str
) -> None:
    """Two processes on one Redis: ``/model`` and ``/think`` set in one apply to the chat's
    next turn in the other, which also sees the turns the first one answered; a turn
    starts with one read (settings and the transcript's news together), not three."""
    anthropic, _ = fakes
    one, two = (
        AgentRuntime(
            "anthropic/claude-sonnet-4", storage=RedisStorage(redis_server, prefix=redis_prefix)
        )
        for _ in "12"
    )
    commands: list[str] = []
    try:
        await two.ask("chat", "first")
        assert anthropic.requests[-1].json["model"] == "claude-sonnet-4"
        await one.set_model("chat", "anthropic/claude-haiku-4-5")
        await one.set_thinking_mode("chat", "stream")
        await one.ask("chat", "second, answered by the first process")
        storage = two.storage
        assert isinstance(storage, RedisStorage)
        original = storage.client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            commands.append(str(args[0]).upper())
            return await original(*args, **options)

        storage.client.execute_command = counted  # type: ignore[method-assign]
        await two.ask("chat", "third")
        sent = anthropic.requests[-1].json
        assert sent["model"] == "claude-haiku-4-5"
        assert sent["thinking"]["type"] == "enabled"
        assert "second, answered by the first process" in json.dumps(sent["messages"])
        assert commands == ["EVALSHA", "EVALSHA"]  # the turn's start, its transcript write
    finally:
        for runtime in (one, two):
            await runtime.close()


@pytest.mark.redis
async def test_on_redis_a_turn_leaves_its_lanes_in_the_trip_that_stores_its_transcript(
    fakes: tuple[FakeAnthropic, FakeOpenAI],
    redis_server: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Transcript and lanes on one Redis: a turn is two trips (join both lanes and, both
    granted, read the turn; store the transcript and leave both lanes). When that last
    trip fails, the turn fails and its lanes are still left, as before."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    import bot.storage.redis as redis_storage

    runtime = AgentRuntime(
        "anthropic/claude-sonnet-4",
        storage=RedisStorage(redis_server, prefix=redis_prefix),
        env={**os.environ, "REDIS_URL": redis_server},
    )
    lanes = runtime.queue.redis
    assert lanes is not None
    client = aioredis.Redis.from_url(redis_server, decode_responses=True)
    queues = ["chatlane:lane:global:queue", "chatlane:lane:session:chat:queue"]
    trips: list[str] = []
    try:
        await runtime.start()
        storage = runtime.storage
        assert isinstance(storage, RedisStorage)
        for who, redis_client in (("storage", storage.client), ("lanes", lanes.client)):
            original = redis_client.evalsha

            async def counted(sha: str, *args: Any, _o: Any = original, _w: str = who) -> Any:
                trips.append(_w)
                return await _o(sha, *args)

            monkeypatch.setattr(redis_client, "evalsha", counted)
        assert await runtime.ask("chat", "hello") == "echo: hello"
        assert trips == ["lanes", "storage"]  # the turn's read went with the lanes' join
        assert [await client.zcard(q) for q in queues] == [0, 0]
        stored = await storage.load_messages("chat")
        assert [m.content for m in stored] == ["hello", "echo: hello"]

        async def broken(*args: Any) -> Any:
            raise RedisConnectionError("the write's trip failed")

        monkeypatch.setattr(redis_storage, "run_scripts", broken)
        with pytest.raises(RedisConnectionError):
            await runtime.ask("chat", "again")
        assert [await client.zcard(q) for q in queues] == [0, 0]  # left on the way out
    finally:
        await runtime.close()
        keys = [k async for k in client.scan_iter(match="chatlane:lane:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.redis
async def test_on_redis_a_reset_after_the_lanes_read_the_turn_is_honoured(
    fakes: tuple[FakeAnthropic, FakeOpenAI], redis_server: str, redis_prefix: str
) -> None:
    """The turn's read goes with the trip that grants its lanes; a ``/new`` landing
    after it (here from a before_turn hook) must not leave the turn the old transcript,
    nor must a chat whose lane is busy go without a read of its own."""
    model = fakes[0]

    class ResetOnce:
        runtime: AgentRuntime | None = None
        armed = False

        async def before_turn(self, turn: Any) -> None:
            if self.armed and self.runtime is not None:
                self.armed = False
                await self.runtime.reset(turn.session_id)

    hook = ResetOnce()
    runtime = AgentRuntime(
        "anthropic/claude-sonnet-4",
        storage=RedisStorage(redis_server, prefix=redis_prefix),
        env={**os.environ, "REDIS_URL": redis_server},
        hooks=[hook],
    )
    hook.runtime = runtime

    def said(request: Any) -> list[str]:
        return [str(m["content"]) for m in request.json["messages"]]

    try:
        assert await runtime.ask("chat", "hello") == "echo: hello"
        assert await runtime.ask("chat", "again") == "echo: again"
        assert "hello" in " ".join(said(model.requests[-1]))  # the history, read with the join
        hook.armed = True
        assert await runtime.ask("chat", "fresh") == "echo: fresh"
        assert len(said(model.requests[-1])) == 1  # nothing from before the reset
        assert "fresh" in said(model.requests[-1])[0]
        # two turns of one chat at once: the second waits for the lane, then reads alone
        first, second = await asyncio.gather(runtime.ask("chat", "one"), runtime.ask("chat", "two"))
        assert (first, second) == ("echo: one", "echo: two")
        assert "one" in " ".join(said(model.requests[-1]))
    finally:
        await runtime.close()


@pytest.mark.redis
async def test_on_redis_a_turn_that_waits_for_its_chat_reads_what_the_other_process_wrote(
    fakes: tuple[FakeAnthropic, FakeOpenAI], redis_server: str, redis_prefix: str
) -> None:
    """Process B's turn joins the chat's lane while process A's turn holds it: B's read
    must wait for its grant (not go with its join), so B sees what A wrote."""
    import redis.asyncio as aioredis

    model = fakes[0]
    holding, go = asyncio.Event(), asyncio.Event()

    class Hold:
        async def before_turn(self, turn: Any) -> None:
            holding.set()
            await go.wait()

    def process(hooks: list[Any]) -> AgentRuntime:
        return AgentRuntime(
            "anthropic/claude-sonnet-4",
            storage=RedisStorage(redis_server, prefix=redis_prefix),
            env={**os.environ, "REDIS_URL": redis_server},
            hooks=hooks,
        )

    a, b = process([Hold()]), process([])
    client = aioredis.Redis.from_url(redis_server, decode_responses=True)
    queue = "chatlane:lane:session:chat:queue"
    try:
        await b.ask("other", "warm-up")  # B's caches and scripts ready
        first = asyncio.ensure_future(a.ask("chat", "from a"))
        await wait_for_event(holding, "A's turn to hold the chat's lane")
        second = asyncio.ensure_future(b.ask("chat", "from b"))
        await wait_for(lambda: _equals(client.zcard(queue), 2), "B's turn to queue behind A")
        go.set()
        assert await first == "echo: from a"
        assert await second == "echo: from b"
        texts = " ".join(str(m["content"]) for m in model.requests[-1].json["messages"])
        assert "from a" in texts and "from b" in texts
    finally:
        go.set()
        await a.close()
        await b.close()
        keys = [k async for k in client.scan_iter(match="chatlane:lane:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


@pytest.mark.redis
async def test_a_process_new_to_a_chat_starts_from_its_summary(
    fakes: tuple[FakeAnthropic, FakeOpenAI], redis_server: str, redis_prefix: str
) -> None:
    """A chat first seen by this process starts from its stored summary and the messages
    after the one it covers, read with the settings in the same trip."""
    anthropic, _ = fakes
    storage = RedisStorage(redis_server, prefix=redis_prefix)
    await storage.open()
    try:
        stored = await storage.append_messages(
            "chat", [Message(Role.USER, "old question"), Message(Role.ASSISTANT, "old answer")]
        )
        await storage.append_messages("chat", [Message(Role.USER, "newer question")])
        await storage.kv_set("summary", "chat", {"text": "they met", "upto": stored[-1].id})
    finally:
        await storage.close()
    runtime = AgentRuntime(
        "anthropic/claude-sonnet-4", storage=RedisStorage(redis_server, prefix=redis_prefix)
    )
    try:
        await runtime.ask("chat", "now")
    finally:
        await runtime.close()
    wire = json.dumps(anthropic.requests[-1].json)
    assert "they met" in wire and "newer question" in wire
    assert "old question" not in wire and "old answer" not in wire
