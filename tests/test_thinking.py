"""Thinking extraction: the plan's example, tags, code, lead-ins, streaming at every split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.thinking import StreamingThinkingExtractor, ThinkingExtractor, ThinkingMode
from bot.thinking.extractor import join
from bot.thinking.modes import parse_thinking_mode

extractor = ThinkingExtractor()


def test_thinking_extraction() -> None:
    text = "Here's my thought: <thinking>analyze problem</thinking>The answer is 42"
    thinking, content = extractor.extract(text)
    assert thinking == "analyze problem"
    assert content == "The answer is 42"


@pytest.mark.parametrize(
    ("text", "thinking", "content"),
    [
        ("<think>a</think>b", "a", "b"),
        ("<THINKING>a</Thinking>\nb", "a", "b"),
        ("< think >a</think >b", "a", "b"),
        ('<thinking type="plan">a</thinking>b', "a", "b"),
        ("<thought>a</thought><antthinking>c</antthinking>b", "a\n\nc", "b"),
        ("Answer first.\n<think>late</think>\nmore", "late", "Answer first.\n\nmore"),
        ("<think>never closed", "never closed", ""),
        ("ok <think>rest is reasoning", "rest is reasoning", ""),
        ("mid-thought</think>The answer", "mid-thought", "The answer"),
        ("A long answer.\nThen </think> stray", "", "A long answer.\nThen  stray"),
        ("no tags at all", "", "no tags at all"),
        ("a < b and c > d", "", "a < b and c > d"),
        ("<thinkers>x</thinkers>", "", "<thinkers>x</thinkers>"),
    ],
)
def test_rules(text: str, thinking: str, content: str) -> None:
    assert extractor.extract(text) == (thinking, content)


@pytest.mark.parametrize(
    "text",
    [
        "Use `<think>` to mark reasoning.",
        "```xml\n<thinking>kept</thinking>\n```\nDone",
        "Inline ``<think>`` double ticks",
    ],
)
def test_tags_in_code_are_text(text: str) -> None:
    assert extractor.extract(text) == ("", text.strip())


def test_paragraph_before_tag_stays_answer() -> None:
    long_intro = "This is a long introduction that goes on " * 4
    thinking, content = extractor.extract(f"{long_intro}<think>x</think>end")
    assert thinking == "x"
    assert content == f"{long_intro}end".strip()


FIXED = [
    "Here's my thought: <thinking>analyze problem</thinking>The answer is 42",
    "Intro line\n<Think attr='1'>deep\n\nthoughts</Think>\nAnswer with `code` and <b>html</b>",
    "```\n<think>in code</think>\n```\n<think>real</think>tail `x` <thought>two</thought>",
    "starts</think>then answer <think>unclosed",
]


@pytest.mark.parametrize("text", FIXED)
def test_stream_equals_batch_at_every_split(text: str) -> None:
    expected = extractor.extract(text)
    for cut in range(len(text) + 1):
        stream = StreamingThinkingExtractor()
        pieces = stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.finish()
        assert join(pieces) == expected, cut


@pytest.mark.parametrize("text", FIXED)
def test_stream_one_character_at_a_time(text: str) -> None:
    stream = StreamingThinkingExtractor()
    pieces = [p for ch in text for p in stream.feed(ch)] + stream.finish()
    assert join(pieces) == extractor.extract(text)


def test_stream_emits_early_and_holds_only_partial_tags() -> None:
    stream = StreamingThinkingExtractor()
    assert stream.feed("First line\nSecond <thi") == [("text", "First line\nSecond ")]
    assert stream.feed("nking>why") == [("thinking", "why")]
    assert stream.feed("</thinking>done") == [("text", "done")]
    assert stream.finish() == []


ALPHABET = st.sampled_from(
    [
        "a",
        " ",
        "\n",
        "`",
        "```",
        "<",
        ">",
        "/",
        "<think>",
        "</think>",
        "<thought x>",
        "</THOUGHT>",
        "< think",
        "ing>",
        "Here: ",
        "é",
        "👋",
    ]
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(ALPHABET, max_size=30), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_any_chunking_gives_the_batch_result(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    stream = StreamingThinkingExtractor()
    pieces = [p for chunk in chunks for p in stream.feed(chunk)] + stream.finish()
    assert join(pieces) == extractor.extract(text)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(ALPHABET, max_size=30))
def test_no_tag_leaks_outside_code(parts: list[str]) -> None:
    text = "".join(parts)
    _, content = extractor.extract(text)
    if "`" not in content:
        lowered = content.lower()
        assert "<think>" not in lowered and "</think>" not in lowered
        assert "</thought>" not in lowered


def test_modes() -> None:
    assert ThinkingMode("stream") is ThinkingMode.STREAM
    assert parse_thinking_mode("ON") is ThinkingMode.ON
    assert parse_thinking_mode(False) is ThinkingMode.OFF
    assert not ThinkingMode.OFF.shows_reasoning
    with pytest.raises(ValueError, match="off, on or stream"):
        parse_thinking_mode("loud")
