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
        ("ok <think>rest is reasoning", "rest is reasoning", "ok"),
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


# Issue 21 item 17: a peer project's published vectors, and the defects they found.
@pytest.mark.parametrize(
    ("text", "thinking", "content"),
    [
        ("Hello <think>internal reasoning</think> world!", "internal reasoning", "Hello  world!"),
        ("Before <thinking>some thought</thinking> after", "some thought", "Before  after"),
        ("X <antthinking>internal</antthinking> Y", "internal", "X  Y"),
        ("你好 <think>思考 🤔</think> 世界", "思考 🤔", "你好  世界"),
        ("Plan: <think>x</think>Answer", "x", "Answer"),  # a lead-in ends with a colon
        ("Note: see below <think>x</think>Answer", "x", "Note: see below Answer"),
        # nested tags: the outer block's tail is reasoning too
        (
            "<think>outer <think>inner</think> still outer</think>visible",
            "outer inner still outer",
            "visible",
        ),
        # an unclosed backtick protects nothing
        ("Start `unclosed <think>hidden</think> end", "hidden", "Start `unclosed  end"),
        ("Use ``code`` with <think>hidden</think> text", "hidden", "Use ``code`` with  text"),
        ("a `b\n\n<think>hidden</think>c` d", "hidden", "a `b\n\nc` d"),
        # self-closing tags are empty blocks: dropped, hiding nothing
        ("A <think/> B", "", "A  B"),
        ("A <thinking /> B", "", "A  B"),
        ("A <thinking id='1' /> B and <THINK/>C", "", "A  B and C"),
        ("<think/>answer", "", "answer"),
    ],
)
def test_peer_vectors(text: str, thinking: str, content: str) -> None:
    assert extractor.extract(text) == (thinking, content)


@pytest.mark.parametrize(
    "text",
    [
        "Example:\n~~~\n<think>reasoning</think>\n~~~\nDone!",
        "Example:\n~~~js\n<think>code</think>\n~~~",
        "```\n<think>not protected\n~~~\n</think>text",  # ~~~ does not close ```
        "~~~\n<think>a</think>\n```\n<think>b</think>",  # nor ``` a ~~~ fence
        "   ~~~\n<think>indented fence</think>\n   ~~~",
        "The `<think>` tag is used for reasoning. Don't forget the closing `</think>` tag.",
    ],
)
def test_tags_in_fences_of_either_kind_are_text(text: str) -> None:
    assert extractor.extract(text) == ("", text.strip())


def test_a_tilde_fence_closes_on_a_run_as_long_as_its_own() -> None:
    text = "~~~~\n<think>kept</think>\n~~~\n<think>still kept</think>\n~~~~\n<think>y</think>z"
    assert extractor.extract(text) == ("y", text.removesuffix("<think>y</think>z").strip() + "\nz")


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
    "Hello <think>x</think> world!",
    "<think>a <think>b</think> c</think>d <thinking />e <think/>f",
    "Start `unclosed <think>hidden</think> end `closed <think>` x",
    "Example:\n~~~\n<think>kept</think>\n~~~~\n  ~~~\nDone <think>y</think>",
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
        "~~~",
        "~",
        "\n~~~\n",
        "<think/>",
        "<thinking />",
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
    if "`" not in content and "~" not in content:
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
