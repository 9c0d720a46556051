"""Compaction: token counts against known values, the cache, and each strategy's invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.compaction import (
    CompactionManager,
    CompactionStrategy,
    TokenAnalyzer,
    TokenEstimator,
    parse_strategy,
)
from bot.compaction.analyzer import CLAUDE_FACTOR, encoding_for
from bot.messages import Message, Role, ToolCall


def test_known_token_counts() -> None:
    assert TokenAnalyzer("gpt-4o").count_text("hello world") == 2
    assert TokenAnalyzer("gpt-4").count_text("tiktoken is great!") == 6
    assert encoding_for("openai/gpt-5") == ("o200k_base", 1.0)
    assert encoding_for("anthropic/claude-sonnet-4-6") == ("o200k_base", CLAUDE_FACTOR)
    claude = TokenAnalyzer("claude-sonnet-4-6").count_text("hello world")
    assert claude == 3  # 2 x 1.25, rounded up: never under-count


def test_message_overhead_matches_openai_format() -> None:
    analyzer = TokenAnalyzer("gpt-4o")
    messages = [Message(Role.USER, "hello world")]
    assert analyzer.count_messages(messages) == 3 + 3 + 2


def test_counts_are_cached() -> None:
    analyzer = TokenAnalyzer("gpt-4o")
    transcript = [Message(Role.USER, f"message number {i} " * 20) for i in range(200)]
    first = analyzer.count_messages(transcript)
    encoded = analyzer.encoded
    assert analyzer.count_messages(transcript) == first
    assert analyzer.encoded == encoded
    analyzer.count_messages([*transcript, Message(Role.USER, "one more")])
    assert analyzer.encoded == encoded + 1


def test_strategy_names() -> None:
    assert CompactionStrategy("keep_important") is CompactionStrategy.KEEP_IMPORTANT
    assert CompactionStrategy("important") is CompactionStrategy.KEEP_IMPORTANT
    assert parse_strategy("recent") is CompactionStrategy.KEEP_RECENT
    with pytest.raises(ValueError, match="keep_important"):
        parse_strategy("oldest")


def conversation() -> list[Message]:
    pad = " lorem ipsum dolor sit amet" * 30
    return [
        Message(Role.SYSTEM, "You are helpful."),
        Message(Role.USER, "I am planning a trip to Japan." + pad),
        Message(Role.ASSISTANT, "Great!" + pad),
        Message(Role.USER, "Remember that I am vegetarian." + pad),
        Message(Role.ASSISTANT, "Noted." + pad),
        Message(Role.ASSISTANT, "", tool_calls=(ToolCall("t1", "read_file", {"path": "x"}),)),
        Message(Role.TOOL, "No file x", tool_call_id="t1", name="read_file", is_error=True),
        Message(Role.USER, "Some chatter." + pad),
        Message(Role.ASSISTANT, "More chatter." + pad),
        Message(Role.USER, "Pinned fact." + pad, pinned=True),
        Message(Role.ASSISTANT, "Ok." + pad),
        Message(Role.USER, "What should I eat in Kyoto?"),
    ]


def test_keep_recent_keeps_system_and_newest() -> None:
    manager = CompactionManager(TokenAnalyzer("gpt-4o"))
    out = manager.compact(conversation(), 700, CompactionStrategy.KEEP_RECENT)
    assert out[0].content == "You are helpful."
    assert out[-1].content == "What should I eat in Kyoto?"
    assert out[1].role is Role.USER
    assert manager.analyzer.count_messages(out) <= 700
    assert not any("Japan" in m.content for m in out)


def test_keep_important_keeps_what_matters() -> None:
    manager = CompactionManager(TokenAnalyzer("gpt-4o"))
    out = manager.compact(conversation(), 900, CompactionStrategy.KEEP_IMPORTANT)
    contents = " ".join(m.content for m in out)
    assert "trip to Japan" in contents  # the first user message
    assert "vegetarian" in contents  # a decision
    assert "Pinned fact" in contents
    assert any(m.is_error for m in out)  # the tool failure, with its call
    assert "Some chatter" not in contents
    assert out[-1].content == "What should I eat in Kyoto?"
    assert manager.analyzer.count_messages(out) <= 900


def test_newest_user_message_is_never_dropped() -> None:
    manager = CompactionManager(TokenAnalyzer("gpt-4o"))
    out = manager.compact(conversation(), 10, CompactionStrategy.KEEP_IMPORTANT)
    assert [m.content for m in out] == ["You are helpful.", "What should I eat in Kyoto?"]


def test_should_compact() -> None:
    manager = CompactionManager(TokenAnalyzer("gpt-4o"))
    messages = conversation()
    used = manager.analyzer.count_messages(messages)
    assert manager.should_compact(messages, used, 0.8)
    assert not manager.should_compact(messages, used * 2, 0.8)


@st.composite
def transcripts(draw: st.DrawFn) -> list[Message]:
    messages = [Message(Role.SYSTEM, "sys")]
    for index in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["user", "assistant", "tools"]))
        text = draw(st.sampled_from(["short", "a bit longer text " * 5, "long " * 80]))
        if kind == "user":
            messages.append(Message(Role.USER, text, pinned=draw(st.booleans())))
        elif kind == "assistant":
            messages.append(Message(Role.ASSISTANT, text))
        else:
            calls = tuple(
                ToolCall(f"c{index}_{n}", "t", {}) for n in range(draw(st.integers(1, 3)))
            )
            messages.append(Message(Role.ASSISTANT, "", tool_calls=calls))
            for call in calls:
                messages.append(
                    Message(
                        Role.TOOL,
                        text,
                        tool_call_id=call.id,
                        name="t",
                        is_error=draw(st.booleans()),
                    )
                )
    messages.append(Message(Role.USER, "the newest question"))
    if draw(st.booleans()):
        call = ToolCall("live", "t", {})
        messages.append(Message(Role.ASSISTANT, "", tool_calls=(call,)))
        messages.append(Message(Role.TOOL, "live result", tool_call_id="live", name="t"))
    return messages


@settings(max_examples=150, deadline=None)
@given(
    messages=transcripts(),
    target=st.integers(20, 3000),
    strategy=st.sampled_from(list(CompactionStrategy)),
)
def test_invariants(messages: list[Message], target: int, strategy: CompactionStrategy) -> None:
    manager = CompactionManager(TokenAnalyzer("gpt-4o"))
    out = manager.compact(messages, target, strategy)
    assert out[0].role is Role.SYSTEM
    assert out[1].role is Role.USER
    assert any(m.content == "the newest question" for m in out)
    positions = [messages.index(m) for m in out]
    assert positions == sorted(positions)
    sent_calls = {c.id for m in out for c in m.tool_calls}
    for message in out:
        if message.role is Role.TOOL:
            assert message.tool_call_id in sent_calls  # no orphan result
    results = {m.tool_call_id for m in out if m.role is Role.TOOL}
    assert sent_calls <= results  # no call without its result
    newest = next(i for i, m in enumerate(messages) if m.content == "the newest question")
    assert messages[newest:] == out[len(out) - (len(messages) - newest) :]
    mandatory = manager.analyzer.count_messages([messages[0], *messages[newest:]])
    assert manager.analyzer.count_messages(out) <= max(target, mandatory)


ESTIMATE_SAMPLES = {
    "prose": (
        "The quarterly report shows steady growth in every region we track, and the "
        "board decided to postpone the vote until the auditors have finished. "
    )
    * 6,
    "code": "def window(self, session_id: str) -> Window:\n    return self._cache.get(session_id)\n"
    * 5,
    "json": '{"id": 12345, "name": "read_file", "arguments": {"path": "docs/a.md"}, "ok": true}'
    * 4,
    "german": "Wir haben uns entschieden, die Besprechung auf nächsten Dienstag zu verschieben. "
    * 4,
    "russian": "Завтра утром мне нужно отвезти машину в сервис, потому что она шумит. " * 4,
    "chinese": "明天早上我得把车送到修理厂，因为刹车的时候有奇怪的声音。" * 4,
    "emoji": "Thanks!! 🎉🎉 That worked perfectly 👍 see you tomorrow 😀🙏 " * 4,
}


@pytest.mark.parametrize("kind", sorted(ESTIMATE_SAMPLES))
@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "claude-sonnet-4-6"])
def test_the_estimate_errs_high_but_not_far(kind: str, model: str) -> None:
    text = ESTIMATE_SAMPLES[kind]
    exact = TokenAnalyzer(model).count_text(text)
    estimate = TokenEstimator(model).count_text(text)
    assert exact <= estimate <= 2.2 * exact, (exact, estimate)


def test_the_estimate_counts_messages_like_the_analyzer() -> None:
    call = ToolCall("c1", "read_file", {"path": "notes/today.md"})
    messages = [
        Message(Role.USER, "hello there"),
        Message(Role.ASSISTANT, "", tool_calls=(call,)),
        Message(Role.TOOL, "the file's text", tool_call_id="c1", name="read_file"),
    ]
    exact = TokenAnalyzer("gpt-4o").count_messages(messages)
    assert exact <= TokenEstimator("gpt-4o").count_messages(messages) <= 2 * exact
    assert TokenEstimator("gpt-4o").count_text("") == 0
