"""What a turn sends: sized by the provider's own count, and held in bounded memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import context
from bot.compaction import CompactionStrategy
from bot.config import load_config
from bot.context import Budget, ContextBuilder
from bot.messages import Message, Role
from bot.runtime import AgentRuntime
from bot.storage import MemoryStorage
from tests.fakes.models import FakeAnthropic, Reply


@pytest.fixture
async def anthropic(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-main-1111")
        yield fake


def small_context(strategy: str = "recent") -> object:
    return load_config(
        data={
            "agent": {
                "context": {
                    "max_tokens": 10_000,
                    "reserve_tokens": 0,
                    "compaction_strategy": strategy,
                },
                "max_output_tokens": 100,
            }
        }
    )


async def test_the_provider_count_decides_when_to_compact(anthropic: FakeAnthropic) -> None:
    # Short messages the estimate puts far below the budget (7,900 tokens), but the
    # provider counts 9,000 (a long system prompt and tools, a heavier tokenizer): the
    # next turn must be compacted before it is sent, not fail with an overflow.
    config = small_context()
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config, storage=MemoryStorage())
    anthropic.script(Reply(text="first answer"), Reply(text="second answer", input_tokens=9_000))
    await runtime.ask("s", "first question")
    await runtime.ask("s", "second question")
    seen = [event async for event in runtime.run("s", "third question")]
    compaction = [e for e in seen if e.type.value == "compaction"]
    assert compaction and compaction[0].data["before_tokens"] >= 9_000
    sent = anthropic.requests[-1].json["messages"]
    assert len(sent) < 5 and sent[-1]["content"][0]["text"] == "third question"
    await runtime.close()


async def test_a_count_far_below_the_estimate_is_not_believed(anthropic: FakeAnthropic) -> None:
    # A server that reports a token or two (or counts a cache apart) must not hide a long
    # conversation: the estimate still compacts it.
    config = small_context()
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config, storage=MemoryStorage())
    anthropic.default = lambda request: Reply(text="ok", input_tokens=1)
    seen = []
    for index in range(8):
        seen += [event async for event in runtime.run("s", f"{index} " + "word " * 900)]
    assert "compaction" in [e.type.value for e in seen]
    await runtime.close()


async def test_status_shows_the_provider_count_plus_what_came_after(
    anthropic: FakeAnthropic,
) -> None:
    runtime = AgentRuntime("anthropic/claude-sonnet-4", storage=MemoryStorage())
    anthropic.script(Reply(text="an answer of a few words", input_tokens=5_000))
    await runtime.ask("s", "hello")
    tokens = (await runtime.status("s"))["session"]["tokens"]
    assert 5_000 < tokens < 5_030  # the count, plus the answer's estimate
    await runtime.close()


async def test_sessions_held_in_memory_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "MAX_CACHED_SESSIONS", 10)
    runtime = AgentRuntime(demo_when_unconfigured=True, storage=MemoryStorage())
    for n in range(40):
        await runtime.ask(f"chat-{n}", f"my name is number {n}")
    assert runtime._context is not None
    assert len(runtime._context._sessions) == 10
    # an evicted session is read from storage again: nothing it said is lost
    await runtime.ask("chat-0", "who am I?")
    window = await runtime._context.window("chat-0", runtime.model)
    assert window.messages[0].content == "my name is number 0"
    await runtime.close()


async def test_long_windows_held_in_memory_are_bounded_by_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(context, "MAX_CACHED_TOKENS", 20_000)
    runtime = AgentRuntime(demo_when_unconfigured=True, storage=MemoryStorage())
    for n in range(30):
        await runtime.ask(f"chat-{n}", "word " * 2_000)  # about 3,000 tokens each
    builder = runtime._context
    assert builder is not None
    held = sum(s.total + s.extra for s in builder._sessions.values())
    assert held == builder._held  # the running figure is the real one
    assert held <= 20_000 + 6_000 and len(builder._sessions) < 10
    await runtime.close()


async def test_a_context_builder_needs_no_runtime() -> None:
    # Storage, a budget, a strategy and a way to ask for a summary: nothing more.
    asked: list[tuple[tuple[Message, ...], int]] = []

    async def summarize(messages: tuple[Message, ...], max_tokens: int) -> str:
        asked.append((messages, max_tokens))
        return "  the user counted to five  "

    storage = MemoryStorage()
    await storage.open()
    builder = ContextBuilder(
        storage,
        budget=Budget(max_tokens=2_000, threshold=1.0, reserve=500),
        strategy=CompactionStrategy.SUMMARIZE,
        summarize=summarize,
    )
    assert builder.budget.target == 1_500
    for n in range(5):
        await builder.append("s", [Message(Role.USER, f"{n} " + "word " * 300)])
    window = await builder.window("s", "anthropic/claude-sonnet-4")
    [event] = window.events
    assert event.data["strategy"] == "summarize" and event.data["dropped"] >= 1
    assert event.data["after_tokens"] <= 1_500 < event.data["before_tokens"]
    ((request, max_tokens),) = asked
    assert request[0].role is Role.SYSTEM and request[0].content == context.SUMMARY_PROMPT
    assert "0 word word" in request[1].content and max_tokens == context.SUMMARY_MAX_TOKENS
    assert window.messages[0].content.endswith("\nthe user counted to five")
    assert window.messages[-1].content.startswith("4 word")
    assert len(await storage.load_messages("s")) == 5  # the transcript keeps everything
    await storage.close()


def test_context_and_runtime_do_not_import_each_other() -> None:
    source = Path(context.__file__).read_text()
    assert "bot.runtime" not in source and "AgentRuntime" not in source


async def test_a_turn_cut_short_after_its_tool_round_goes_on_from_there(
    anthropic: FakeAnthropic,
) -> None:
    """``resumed``: the transcript ends with the question and a finished tool round (the
    process stopped before the answer): the model gets them once, and the answer follows."""
    from bot.messages import ToolCall

    storage = MemoryStorage()
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=small_context(), storage=storage)
    call = ToolCall("toolu_1", "clock", {})
    await storage.append_messages(
        "s",
        [
            Message(Role.USER, "what time is it?"),
            Message(Role.ASSISTANT, "", tool_calls=(call,)),
            Message(Role.TOOL, "12:00", tool_call_id="toolu_1", name="clock"),
        ],
    )
    anthropic.script(Reply(text="It is noon."))
    seen = [e async for e in runtime.run("s", "what time is it?", resumed=True)]
    assert seen[-1].data["text"] == "It is noon."
    sent = anthropic.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]  # (the tool result)
    stored = [(m.role, m.content) for m in await storage.load_messages("s")]
    assert stored[0] == (Role.USER, "what time is it?") and stored[-1][1] == "It is noon."
    assert [r for r, _ in stored].count(Role.USER) == 1
    # Answered: the same words later are a new question, stored again.
    anthropic.script(Reply(text="Still noon."))
    [e async for e in runtime.run("s", "what time is it?", resumed=True)]
    users = [m for m in await storage.load_messages("s") if m.role is Role.USER]
    assert [m.content for m in users] == ["what time is it?", "what time is it?"]
    await runtime.close()
