"""Formatting: the plan's tool-result examples, renderers on awkward Markdown, the splitters."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.formatting import (
    PLAIN,
    FormatMode,
    MarkdownStyle,
    ToolFormatter,
    render_html,
    render_plain,
    sms_segments,
    split_message,
    split_sms,
    utf16_len,
)
from bot.tools.result import ToolResult
from channels.discord_format import DISCORD, render_discord
from channels.slack_format import SLACK, render_slack
from channels.telegram_format import render_telegram

formatter = ToolFormatter()
READ = ToolResult("read_file", "DEBUG = True", {"path": "config.py"}, details={"path": "config.py"})


def test_plan_markdown_example() -> None:
    assert formatter.format_result(READ, FormatMode.MARKDOWN) == (
        "### File Read: config.py\n```python\nDEBUG = True\n```"
    )


def test_plan_plain_example() -> None:
    assert formatter.format_result(READ, FormatMode.PLAIN) == (
        "File: config.py\nContent: DEBUG = True"
    )


def test_user_tool_json_and_errors() -> None:
    weather = ToolResult("get_weather", '{"temp": 21}', {"city": "Oslo"})
    assert formatter.format_result(weather, "markdown") == (
        '### Tool: get_weather\n```json\n{"temp": 21}\n```'
    )
    assert formatter.format_result(weather, "plain") == ('Tool: get_weather\nContent: {"temp": 21}')
    failed = ToolResult(
        "read_file", "No file 'x.txt' in the workspace.", {"path": "x.txt"}, is_error=True
    )
    assert formatter.format_result(failed, "markdown").startswith("### Error: read_file\nNo file")
    assert formatter.format_result(failed, "plain") == (
        "Error (read_file): No file 'x.txt' in the workspace."
    )
    assert formatter.summarize(failed) == "read_file failed: No file 'x.txt' in the workspace."


def test_long_results_are_cut_with_a_note() -> None:
    big = ToolResult("read_file", "\n".join(f"line {i}" for i in range(1000)), {"path": "a.txt"})
    text = ToolFormatter(max_chars=200).format_result(big, "markdown")
    assert "more characters not shown" in text
    assert len(text) < 320
    assert text.count("```") == 2


def test_fence_longer_than_any_backtick_run_inside() -> None:
    tricky = ToolResult("read_file", "```\ninner\n```", {"path": "x.md"})
    text = formatter.format_result(tricky, "markdown")
    assert text.startswith("### File Read: x.md\n````markdown\n")


def test_summaries() -> None:
    assert formatter.summarize(READ) == "Read config.py (1 line)"
    listing = ToolResult("list_files", "a\nb/", {"path": "."}, details={"entries": ["a", "b/"]})
    assert formatter.summarize(listing) == "Listed 2 entries in ."


CORPUS = """# Heading *with* emphasis

Some ***nested*** and **bold _italic_** text, `code <a> & b`, and ~~strike~~.
A [link](https://en.wikipedia.org/wiki/Python_(language)) and <https://bare.example>.
Emoji 👋🏽 and right-to-left: مرحبا بالعالم — שלום.

```python
if a < b and c > d:
    print("&amp;")
```

| name | value |
|------|-------|
| a    | 1     |

> a quote

1. first
2. second
   - nested <tag>
"""


def test_slack_mrkdwn() -> None:
    out = render_slack(CORPUS)
    assert out.startswith("*Heading _with_ emphasis*")
    assert "*bold _italic_*" in out
    assert "`code &lt;a&gt; &amp; b`" in out
    assert "~strike~" in out
    assert "<https://en.wikipedia.org/wiki/Python_(language)|link>" in out
    assert "if a &lt; b and c &gt; d:" in out
    assert "• nested &lt;tag&gt;" in out
    assert "مرحبا بالعالم" in out and "👋🏽" in out
    assert "**" not in out and "#" not in out
    assert "> a quote" in out
    assert render_slack("ping <@U123ABC> in <#C42|general> <!here> & more") == (
        "ping <@U123ABC> in <#C42|general> @\u200bhere &amp; more"
    )  # broadcasts in model output are neutralised (issue 21 item 5)


def test_discord_markdown() -> None:
    out = render_discord(CORPUS)
    assert "**bold *italic***" in out
    assert "```python\nif a < b and c > d:" in out
    assert "[link](<https://en.wikipedia.org/wiki/Python_(language)>)" in out
    assert "name | value" in out and out.count("```") == 4


def test_plain_has_no_markup_left() -> None:
    out = render_plain(CORPUS)
    for mark in ("**", "__", "`", "~~", "](", "# "):
        assert mark not in out, mark
    assert "link (https://en.wikipedia.org/wiki/Python_(language))" in out
    assert "https://bare.example" in out and "(https://bare.example)" not in out
    assert "1. first" in out and "  - nested" in out
    assert 'print("&amp;")' in out
    assert "name | value" in out


def test_html_is_sanitized() -> None:
    html = render_html(
        "hi <script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1)) **b**"
    )
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html
    assert "<strong>b</strong>" in html
    link = render_html("[site](https://example.com)")
    assert 'rel="noopener noreferrer"' in link and 'target="_blank"' in link


def test_telegram_entities_in_utf16() -> None:
    parts = render_telegram("👋🏽 **bold** `x<y`")
    assert len(parts) == 1
    text, entities = parts[0]["text"], parts[0]["entities"]
    bold = next(e for e in entities if e["type"] == "bold")
    prefix = text[: text.index("bold")]
    assert bold["offset"] == utf16_len(prefix) and bold["length"] == 4
    assert any(e["type"] == "code" for e in entities)


def test_telegram_reasoning_is_a_collapsed_quote() -> None:
    parts = render_telegram("The answer.", reasoning="I thought 🤔 hard")
    first = parts[0]
    assert first["text"].startswith("Reasoning:\nI thought 🤔 hard\n\nThe answer.")
    quote = first["entities"][0]
    assert quote["type"] == "expandable_blockquote"
    assert quote["length"] == utf16_len("Reasoning:\nI thought 🤔 hard")


def test_telegram_parts_within_limit() -> None:
    long = "\n\n".join(f"Paragraph {i} " + "😀 word " * 60 for i in range(40))
    parts = render_telegram(long + "\n\n```\n" + "code line\n" * 800 + "```")
    assert len(parts) > 3
    assert all(utf16_len(p["text"]) <= 4096 for p in parts)
    assert any(e["type"] == "pre" for p in parts[-2:] for e in p["entities"])


def test_reasoning_styles() -> None:
    assert SLACK.reasoning("x **y**") == "> *Reasoning*\n> x *y*"
    assert PLAIN.reasoning("x") == "Reasoning:\nx"
    assert PLAIN.reasoning("   ") == ""
    assert DISCORD.reasoning("x\n\n**y**") == "> **Reasoning**\n> x\n> \n> **y**"
    assert SLACK.reasoning(" \n ") == "" and DISCORD.reasoning("") == ""


def test_compose_puts_reasoning_before_the_answer() -> None:
    assert PLAIN.compose("**The answer.**", "I thought") == "Reasoning:\nI thought\n\nThe answer."
    assert PLAIN.compose("", "I thought") == "Reasoning:\nI thought"
    assert PLAIN.compose("The answer.", "  ") == "The answer."
    assert SLACK.compose("ping <@U1>", None) == "ping <@U1>"
    assert DISCORD.compose("", None) == ""


class ForumStyle(MarkdownStyle):
    """A third-party channel's style: only what differs from plain text."""

    bullet = "*"

    def bold(self, text: str) -> str:
        return f"[b]{text}[/b]"

    def link(self, text: str, url: str) -> str:
        return f"[url={url}]{text}[/url]"


def test_a_channel_style_overrides_only_what_differs() -> None:
    out = ForumStyle().render("Hi **you**, see [docs](https://x.example).\n\n- one\n- `two`")
    assert out == "Hi [b]you[/b], see [url=https://x.example]docs[/url].\n\n* one\n* two"
    assert ForumStyle().reasoning("**why**") == "Reasoning:\n[b]why[/b]"


def _words(parts: list[str]) -> str:
    fenced = re.compile(r"^(`{3,})[^\n`]*$", re.M)
    return "".join("".join(fenced.sub("", p).split()) for p in parts)


def test_code_block_is_closed_and_reopened() -> None:
    text = (
        "Intro paragraph.\n\n```python\n"
        + "\n".join(f"x = {i}" for i in range(200))
        + "\n```\n\nEnd."
    )
    parts = split_message(text, 300)
    assert all(len(p) <= 300 for p in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part
    code_parts = [p for p in parts if "x = " in p]
    assert all(p.startswith("```python\n") for p in code_parts)
    assert _words(parts) == _words([text])


def test_break_preference_paragraph_then_sentence_then_word() -> None:
    text = "First paragraph is short.\n\nSecond one. It has sentences. Several of them here."
    assert split_message(text, 40) == [
        "First paragraph is short.",
        "Second one. It has sentences.",
        "Several of them here.",
    ]
    assert split_message("a" * 50, 20) == ["a" * 20, "a" * 20, "a" * 10]


BLOCKS = st.lists(
    st.one_of(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="`"),
            min_size=1,
            max_size=120,
        ),
        st.builds(
            lambda body: f"```py\n{body}\n```", st.text(st.sampled_from("ab c\n😀<>"), max_size=300)
        ),
        st.sampled_from(["word " * 30, "Sentence one. Sentence two! Three?", "😀" * 40]),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(blocks=BLOCKS, limit=st.integers(40, 400), unit=st.sampled_from(["chars", "utf16"]))
def test_splitter_properties(blocks: list[str], limit: int, unit: str) -> None:
    text = "\n\n".join(blocks)
    parts = split_message(text, limit, unit=unit)
    measure = utf16_len if unit == "utf16" else len
    assert all(measure(p) <= limit for p in parts)
    assert _words(parts) == _words([text])
    for part in parts:
        fences = re.findall(r"^`{3,}", part, re.M)
        assert len(fences) % 2 == 0, part


def test_sms_segments_and_splitting() -> None:
    assert sms_segments("hello") == 1
    assert sms_segments("a" * 160) == 1 and sms_segments("a" * 161) == 2
    assert sms_segments("€" * 80) == 1 and sms_segments("€" * 81) == 2
    assert sms_segments("😀" * 35) == 1 and sms_segments("😀" * 36) == 2
    gsm = ("word " * 700).strip()
    parts = split_sms(gsm)
    assert all(len(p) <= 1530 for p in parts) and len(parts) == 3
    assert all(sms_segments(p) <= 10 for p in parts)
    ucs = ("слово " * 600).strip()
    parts = split_sms(ucs)
    assert all(utf16_len(p) <= 1541 for p in parts)
    assert all(sms_segments(p) <= 23 for p in parts)
    assert _words(parts) == _words([ucs])


def test_split_rejects_tiny_limits_and_empty_text() -> None:
    with pytest.raises(ValueError):
        split_message("x", 5)
    assert split_message("  \n\n", 100) == []
