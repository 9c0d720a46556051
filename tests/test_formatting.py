"""Formatting: the plan's tool-result examples, renderers on awkward Markdown, the splitters."""

from __future__ import annotations

import re

import discord
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from bot.channel import Reply, StreamOptions
from bot.formatting import (
    MARKDOWN_EMPHASIS,
    PLAIN,
    Emphasis,
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
from bot.streaming import Snapshot
from bot.tools.result import ToolResult
from channels.discord_format import DISCORD, render_discord
from channels.discord_format import MARKERS as DISCORD_MARKERS
from channels.discord_sink import DiscordSink, DiscordStream
from channels.slack_format import SLACK, render_slack
from channels.slack_format import parts as slack_parts
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


# -- emphasis split across parts (issue 21 item 18) ----------------------------

_md = MarkdownIt("commonmark").enable("strikethrough")
STYLES = {"em_open", "strong_open", "s_open"}


def _styled(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """Each word of ``text`` with the emphasis around it, as CommonMark reads it; markers
    left over as literal text show up as words of their own."""
    words: list[tuple[str, tuple[str, ...]]] = []
    for block in _md.parse(text):
        stack: list[str] = []
        for token in block.children or []:
            if token.type in STYLES:
                stack.append(token.type[:-5])
            elif token.type.endswith("_close") and token.type[:-6] + "_open" in STYLES:
                stack.pop()
            elif token.type in ("text", "code_inline"):
                kind = ("code",) if token.type == "code_inline" else ()
                style = tuple(sorted((*stack, *kind)))  # ***x***: either nesting looks the same
                words += [(w, style) for w in token.content.split()]
    return words


def _literal_markers(text: str, chars: str = "*_~") -> list[str]:
    """Words that begin or end with a marker CommonMark did not take as emphasis."""
    edges = tuple(chars)
    found = []
    for word, style in _styled(text):
        bare = word.strip(".,!?()")
        if "code" not in style and (bare.startswith(edges) or bare.endswith(edges)):
            found.append(word)
    return found


def test_italic_split_across_discord_messages_is_closed_and_reopened() -> None:
    text = render_discord("intro\n\n*" + "word " * 500 + "end*")
    parts = split_message(text, 2000, markers=DISCORD_MARKERS)
    assert len(parts) == 3 and all(len(p) <= 2000 for p in parts)
    assert parts[0] == "intro"
    assert parts[1].startswith("*word") and parts[1].endswith("word*")
    assert parts[2].startswith("*word") and parts[2].endswith("end*")
    assert [w for p in parts for w in _styled(p)] == _styled(text)
    assert split_message(text, 2000)[1][-1] != "*"  # without markers, as before


def test_discord_sink_renders_balanced_messages() -> None:
    sink = DiscordSink(discord.Client(intents=discord.Intents.none()))
    long = "Start **" + "bold " * 300 + "middle ~~" + "gone " * 300 + "end~~ done**."
    parts = sink.render(Reply(text=long))
    assert len(parts) == 2 and all(len(str(p["text"])) <= 2000 for p in parts)
    first, second = (str(p["text"]) for p in parts)
    assert first.startswith("Start **bold") and first.endswith("**")
    assert second.startswith("**") and second.endswith("done**.")
    assert [w for p in (first, second) for w in _styled(p)] == _styled(DISCORD.render(long))


async def test_discord_stream_shows_balanced_messages() -> None:
    class Target:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, text: str, *, first: bool) -> str:
            self.sent.append(text)
            return str(len(self.sent))

        async def edit(self, message_id: str, text: str) -> None:
            self.sent[int(message_id) - 1] = text

        async def delete(self, message_id: str) -> None:
            raise AssertionError("nothing is deleted")

    target = Target()
    stream = DiscordStream(target, StreamOptions(live=True, every=0.0))
    await stream.show(Snapshot(text="*" + "word " * 450 + "end*"))
    assert len(target.sent) == 2
    assert target.sent[0].endswith("word*") and target.sent[1].startswith("*word")
    assert target.sent[1].endswith("end*")


def test_discord_underline_spoiler_and_nesting() -> None:
    for marker in ("__", "||", "~~", "**", "_"):
        text = f"{marker}" + "secret " * 60 + f"end{marker}"
        parts = split_message(text, 100, markers=DISCORD_MARKERS)
        assert len(parts) > 3 and all(len(p) <= 100 for p in parts), marker
        for part in parts:
            assert part.startswith(marker) and part.endswith(marker), (marker, part)
            assert part.count(marker) == 2 or marker == "_", (marker, part)
    nested = "***" + "both " * 40 + "inner** only " + "em " * 40 + "end*"
    parts = split_message(nested, 60, markers=DISCORD_MARKERS)
    assert parts[0].startswith("***") and parts[0].endswith("***")
    assert all(not _literal_markers(p) for p in parts)
    assert [w for p in parts for w in _styled(p)] == _styled(nested)


def test_reopened_after_a_quote_prefix() -> None:
    reasoning = "*" + "\n".join(f"thought {i} " + "idea " * 8 for i in range(40)) + " done*"
    text = DISCORD.compose("The answer.", reasoning)
    parts = split_message(text, 300, markers=DISCORD_MARKERS)
    assert len(parts) > 3 and all(len(p) <= 300 for p in parts)
    for part in parts[1:-1]:
        assert part.startswith("> *thought") and part.endswith("*"), part
    assert [w for p in parts for w in _styled(p)] == _styled(text)


def test_slack_parts_balance_both_markdown_and_mrkdwn() -> None:
    markdown = "Intro with a_snake_case name.\n\n_" + "word " * 400 + "end_ and **" + "b " * 900
    markdown += "end**"
    found = slack_parts(markdown, 1000)
    assert len(found) > 3 and all(len(p["markdown"]) <= 1000 for p in found)
    for part in found:
        assert not _literal_markers(part["markdown"]), part["markdown"]
    assert found[1]["markdown"].startswith("_word") and found[1]["markdown"].endswith("word_")
    assert found[1]["text"].startswith("_word") and found[1]["text"].endswith("word_")
    assert found[-1]["text"].startswith("*b") and found[-1]["text"].endswith("end*")
    assert "a_snake_case" in found[0]["markdown"]


FALSE_FRIENDS = {  # no sentence ends: breaks fall between any two words
    "bullets": "* item one\n* item two\n"
    + "\n".join(f"* point {i} " + "x " * 9 for i in range(60)),
    "snake_case": "Use my_var_name with other_thing_here and __init__ too " * 40,
    "urls": "See https://example.com/**x and www.example.org/_a then b_/ or "
    "<https://example.com/*p> then [t](<https://x.example/y*>) now " * 30,
    "code": "Run `*a` or `b*` and `**kwargs` and ``x ` *y `` here " * 40
    + "\n\n```py\n"
    + "print(2 *x)  # *not italic\nprint(y* 3)  # nor this*\n" * 30
    + "```",
    "lone": "5 * 3 = 15 and 2 ** 10, a * b; *shrug and ~ approx and a || b " * 40,
    "escaped": r"\*not italic\* nor \_this one\_ nor \~\~that one\~\~ " * 60,
    "unclosed": "*" + "word " * 300,
}


@pytest.mark.parametrize("name", list(FALSE_FRIENDS))
def test_false_friends_are_not_taken_for_emphasis(name: str) -> None:
    text = FALSE_FRIENDS[name]
    for markers in (DISCORD_MARKERS, MARKDOWN_EMPHASIS):
        for limit in range(60, 200, 13):
            plain = split_message(text, limit)
            assert len(plain) > 3
            assert split_message(text, limit, markers=markers) == plain, (name, limit)


def test_emphasis_markers_are_checked() -> None:
    with pytest.raises(ValueError, match="emphasis marker '\\*\\*\\*'"):
        Emphasis(["***"])
    with pytest.raises(ValueError, match="emphasis marker '#'"):
        split_message("x", 100, markers=["#"])
    assert not Emphasis([]) and Emphasis(["*"]).spans("*a*") == [(1, 2, "*")]


def test_emphasis_spans_follow_commonmark() -> None:
    em, strike = Emphasis(["*", "**"]), Emphasis(["~~"])
    assert em.spans("*foo**bar**baz*") == [(6, 9, "**"), (1, 14, "*")]  # the rule of three
    assert em.spans("> ```\n> *a\n> b*\n> ```\n> *c d*") == [(25, 28, "*")]  # quoted code
    assert em.spans("> ```\n> *a\n> b*") == []  # a fence left open runs to the end
    assert em.spans("`unclosed *a b*") == [(11, 14, "*")]  # a lone backtick is text
    assert em.spans("*a\n\nb*") == [] and em.spans("*a\n- b*") == []  # a new block
    assert em.spans("*a\n  b*") == [(1, 6, "*")]  # a line of the same paragraph
    assert em.spans("see https://x.example/*a b*") == []  # the URL ends at the space
    assert strike.spans("~~a b~") == [] and strike.spans("~~a b~~") == [(2, 5, "~~")]
    assert Emphasis(["_"]).spans("snake_case _a b_") == [(12, 15, "_")]


def test_markers_nested_too_deep_for_the_limit_are_left_alone() -> None:
    text = "**__~~||" + "w " * 40 + "end||~~__**"  # 16 markers around a break: no room
    parts = split_message(text, 20, markers=DISCORD_MARKERS)
    assert parts == split_message(text, 20) and all(len(p) <= 20 for p in parts)


_WORD = st.one_of(
    st.text(st.sampled_from("abcxyzé語😀"), min_size=1, max_size=6),
    st.sampled_from(["end.", "Yes!", "so,", "`a*b`", "`__x__`", "(p)", "x_y"]),
)


def _words_of(draw: st.DrawFn, most: int) -> str:
    return " ".join(draw(st.lists(_WORD, min_size=1, max_size=most)))


_KIND = {"*": "*", "_": "*", "**": "**", "__": "**", "~~": "~~"}


@st.composite
def _inline(draw: st.DrawFn, outer: tuple[str, ...] = ()) -> str:
    """Words and emphasis, nested up to three deep; never a span inside one of its own
    kind, which no channel shows (Discord writes ``_`` as ``*`` too): closed and reopened
    together, ``*`` and ``*`` would read as ``**``, and ``~~~~`` at a line start as a fence."""
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        if len(outer) < 3 and draw(st.booleans()):
            kind = draw(st.sampled_from([k for k in ("*", "**", "~~") if k not in outer]))
            inner = draw(_inline((*outer, kind)))
            marker = draw(st.sampled_from([m for m, k in _KIND.items() if k == kind]))
            pieces.append(f"{marker}{_words_of(draw, 3)} {inner} {_words_of(draw, 3)}{marker}")
        else:
            pieces.append(_words_of(draw, 25))
    return draw(st.sampled_from([" ", "\n"])).join(pieces)


EMPHASIS_TEXT = st.lists(_inline(), min_size=1, max_size=3).map("\n\n".join)


@settings(max_examples=100, deadline=None)
@given(text=EMPHASIS_TEXT, limit=st.integers(40, 400), unit=st.sampled_from(["chars", "utf16"]))
def test_every_part_is_balanced_markdown(text: str, limit: int, unit: str) -> None:
    assume(not _literal_markers(text))  # the generated Markdown reads as intended
    parts = split_message(text, limit, unit=unit, markers=MARKDOWN_EMPHASIS)
    measure = utf16_len if unit == "utf16" else len
    assert all(measure(p) <= limit for p in parts)
    for part in parts:
        assert not _literal_markers(part), part
    assert [w for p in parts for w in _styled(p)] == _styled(text)


@settings(max_examples=100, deadline=None)
@given(text=EMPHASIS_TEXT, limit=st.integers(40, 400))
def test_every_part_is_balanced_discord(text: str, limit: int) -> None:
    rendered = render_discord(text)
    assume(not _literal_markers(rendered))
    parts = split_message(rendered, limit, markers=DISCORD_MARKERS)
    assert all(len(p) <= limit for p in parts)
    for part in parts:
        assert not _literal_markers(part), part
    assert [w for p in parts for w in _styled(p)] == _styled(rendered)


def test_telegram_split_keeps_emphasis_in_every_part() -> None:
    """Telegram needs no markers: its splitter clips each entity to every part it spans."""
    parts = render_telegram("intro\n\n*" + "word " * 1000 + "end* and **" + "b " * 2500 + "end**")
    assert all(utf16_len(p["text"]) <= 4096 for p in parts)
    for part in parts:
        for entity in part["entities"]:
            assert entity["offset"] + entity["length"] <= utf16_len(part["text"])
    texts = [p["text"] for p in parts]
    italic = [i for i, t in enumerate(texts) if "word" in t]
    bold = [i for i, t in enumerate(texts) if "b b" in t]
    assert len(italic) == 2 and len(bold) == 2  # both spans cross a break
    kinds = [{e["type"]: e for e in p["entities"]} for p in parts]
    first = kinds[italic[0]]["italic"]
    assert first["offset"] + first["length"] == utf16_len(texts[italic[0]])  # to the end
    assert kinds[italic[1]]["italic"]["offset"] == 0  # and on from the start
    assert texts[italic[1]][: kinds[italic[1]]["italic"]["length"]].endswith("end")
    assert kinds[bold[1]]["bold"]["offset"] == 0
    assert kinds[bold[1]]["bold"]["length"] == utf16_len(texts[bold[1]].rstrip())


def test_telegram_parts_never_cut_a_word_and_keep_their_entities() -> None:
    from channels.telegram_format import render_telegram

    words = ["word", "🙂emoji", "longer-word"] * 700
    parts = render_telegram("intro\n\n*" + " ".join(words) + "*", limit=500)
    assert len(parts) > 5
    seen: list[str] = []
    for part in parts:
        text = part["text"]
        assert utf16_len(text) <= 500
        assert not text.startswith(" ") and text.split()[-1] in {*words, "intro"}
        seen += text.split()
        italic = [e for e in part["entities"] if e["type"] == "italic"]
        assert italic and italic[0]["offset"] + italic[0]["length"] <= utf16_len(text)
    assert seen == ["intro", *words]
    # one word longer than a part is the only thing ever cut
    assert [utf16_len(p["text"]) for p in render_telegram("x" * 1200, limit=500)] == [
        500,
        500,
        200,
    ]
