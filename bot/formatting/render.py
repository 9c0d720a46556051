"""From the model's Markdown to each channel's own form.

The Markdown is parsed once by markdown-it-py (CommonMark plus tables and
strikethrough) and the syntax tree is written out per target:

- ``render_slack``: mrkdwn (``*bold*``, ``_italic_``, ``~strike~``,
  ``<url|text>``, headings as bold lines, ``•`` lists, tables as code);
  ``&``, ``<``, ``>`` escaped; Slack's own ``<@U…>``, ``<#C…|…>``, ``<!here>``
  tokens kept as they are.
- ``render_discord``: Discord Markdown (tables become code blocks, images
  links, raw HTML dropped).
- ``render_plain``: text with no markup left, for SMS and the terminal:
  links as ``text (url)``, lists as ``- item`` lines, code as its lines.
- ``render_html``: sanitized HTML for the web chat (raw HTML in the input is
  not passed through; the output goes through nh3).

Telegram has its own module (entities, counted in UTF-16).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import nh3
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

_md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
SLACK_TOKEN = re.compile(r"<(?:[@#!][^<>\s]+|https?://[^<>\s|]+(?:\|[^<>]*)?)>")
_TAGS = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Style:
    bold: Callable[[str], str]
    italic: Callable[[str], str]
    strike: Callable[[str], str]
    code: Callable[[str], str]
    link: Callable[[str, str], str]
    heading: Callable[[str, int], str]
    fence: Callable[[str, str], str]
    bullet: str
    quote: Callable[[str], str]
    escape: Callable[[str], str]
    table_as_code: bool
    drop_html: bool = True


def _ticks(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * (longest + 1)


def _inline_code_md(text: str) -> str:
    fence = _ticks(text)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fence_md(code: str, lang: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{code.rstrip(chr(10))}\n{fence}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain_link(text: str, url: str) -> str:
    if not url or text == url or text == url.removeprefix("mailto:"):
        return url or text
    return f"{text} ({url})"


SLACK = Style(
    bold=lambda t: f"*{t}*",
    italic=lambda t: f"_{t}_",
    strike=lambda t: f"~{t}~",
    code=lambda t: f"`{t}`",
    link=lambda t, u: f"<{u}|{t}>" if t and t != u else f"<{u}>",
    heading=lambda t, level: f"*{t}*",
    fence=lambda code, lang: f"```\n{code.rstrip(chr(10))}\n```",
    bullet="•",
    quote=lambda t: "\n".join(f"> {line}" if line else ">" for line in t.split("\n")),
    escape=_slack_escape,
    table_as_code=True,
)

DISCORD = Style(
    bold=lambda t: f"**{t}**",
    italic=lambda t: f"*{t}*",
    strike=lambda t: f"~~{t}~~",
    code=_inline_code_md,
    link=lambda t, u: f"[{t}](<{u}>)" if t and t != u else u,
    heading=lambda t, level: f"{'#' * min(level, 3)} {t}",
    fence=_fence_md,
    bullet="-",
    quote=lambda t: "\n".join(f"> {line}" for line in t.split("\n")),
    escape=lambda t: t,
    table_as_code=True,
)

PLAIN = Style(
    bold=lambda t: t,
    italic=lambda t: t,
    strike=lambda t: t,
    code=lambda t: t,
    link=_plain_link,
    heading=lambda t, level: t,
    fence=lambda code, lang: code.rstrip("\n"),
    bullet="-",
    quote=lambda t: "\n".join(f"> {line}" if line else ">" for line in t.split("\n")),
    escape=lambda t: t,
    table_as_code=False,
)


class _Writer:
    def __init__(self, style: Style) -> None:
        self.style = style

    def inline(self, node: SyntaxTreeNode) -> str:
        out: list[str] = []
        for child in node.children:
            kind = child.type
            if kind == "text":
                out.append(self.style.escape(child.content))
            elif kind in ("softbreak", "hardbreak"):
                out.append("\n")
            elif kind == "strong":
                out.append(self.style.bold(self.inline(child)))
            elif kind == "em":
                out.append(self.style.italic(self.inline(child)))
            elif kind == "s":
                out.append(self.style.strike(self.inline(child)))
            elif kind == "code_inline":
                out.append(self.style.code(self.style.escape(child.content)))
            elif kind == "link":
                href = str(child.attrs.get("href", ""))
                out.append(self.style.link(self.inline(child), href))
            elif kind == "image":
                alt = self.style.escape(child.content or "image")
                out.append(self.style.link(alt, str(child.attrs.get("src", ""))))
            elif kind == "html_inline":
                if not self.style.drop_html:
                    out.append(child.content)
            else:
                out.append(self.inline(child) if child.children else child.content)
        return "".join(out)

    def blocks(self, node: SyntaxTreeNode, depth: int = 0) -> list[str]:
        parts: list[str] = []
        for child in node.children:
            text = self.block(child, depth)
            if text is not None:
                parts.append(text)
        return parts

    def block(self, node: SyntaxTreeNode, depth: int) -> str | None:
        kind = node.type
        if kind == "paragraph":
            return self.inline(node.children[0]) if node.children else ""
        if kind == "heading":
            level = int(node.tag[1:]) if node.tag[1:].isdigit() else 1
            return self.style.heading(self.inline(node.children[0]), level)
        if kind in ("fence", "code_block"):
            lang = node.info.split()[0] if node.info else ""
            code = self.style.escape(node.content)
            return self.style.fence(code, lang)
        if kind in ("bullet_list", "ordered_list"):
            return self.list(node, depth)
        if kind == "blockquote":
            return self.style.quote("\n\n".join(self.blocks(node, depth)))
        if kind == "hr":
            return "———"
        if kind == "table":
            return self.table(node)
        if kind == "html_block":
            text = _TAGS.sub("", node.content).strip()
            return self.style.escape(text) if text else None
        return "\n\n".join(self.blocks(node, depth)) or None

    def list(self, node: SyntaxTreeNode, depth: int) -> str:
        lines = []
        start = int(str(node.attrs.get("start", 1))) if node.type == "ordered_list" else 1
        indent = "  " * depth
        for number, item in enumerate(node.children, start):
            marker = f"{number}." if node.type == "ordered_list" else self.style.bullet
            parts = [self.block(c, depth + 1) for c in item.children]
            body = "\n".join(p for p in parts if p)
            first, _, rest = body.partition("\n")
            lines.append(f"{indent}{marker} {first}")
            if rest:
                lines.extend(
                    line if line.startswith(indent + "  ") else f"{indent}  {line}"
                    for line in rest.split("\n")
                )
        return "\n".join(lines)

    def table(self, node: SyntaxTreeNode) -> str:
        rows: list[list[str]] = []
        for section in node.children:
            for row in section.children:
                rows.append(
                    [
                        self.inline(cell.children[0]) if cell.children else ""
                        for cell in row.children
                    ]
                )
        if not rows:
            return ""
        if not self.style.table_as_code:
            return "\n".join(" | ".join(row) for row in rows)
        widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
        lines = [" | ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return self.style.fence("\n".join(lines), "")


def _render(markdown: str, style: Style) -> str:
    tree = SyntaxTreeNode(_md.parse(markdown))
    return "\n\n".join(p for p in _Writer(style).blocks(tree) if p != "").strip()


def render_slack(markdown: str) -> str:
    kept: list[str] = []

    def protect(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"\ue000{len(kept) - 1}\ue001"

    text = _render(SLACK_TOKEN.sub(protect, markdown), SLACK)
    return re.sub("\ue000(\\d+)\ue001", lambda m: kept[int(m.group(1))], text)


def render_discord(markdown: str) -> str:
    return _render(markdown, DISCORD)


def render_plain(markdown: str) -> str:
    return _render(markdown, PLAIN)


def render_html(markdown: str) -> str:
    html = _md.render(markdown)
    return nh3.clean(
        html,
        tags={
            "p",
            "br",
            "strong",
            "em",
            "del",
            "s",
            "code",
            "pre",
            "a",
            "ul",
            "ol",
            "li",
            "blockquote",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "hr",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
            "img",
        },
        attributes={
            "a": {"href", "title"},
            "code": {"class"},
            "img": {"src", "alt"},
            "th": {"style"},
            "td": {"style"},
        },
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes={"http", "https", "mailto"},
    )
