"""From the model's Markdown to a channel's own text form, and to HTML.

The Markdown is parsed once by markdown-it-py (CommonMark plus tables and
strikethrough) and the syntax tree is written out through a ``MarkdownStyle``:
how bold, links, headings, code, lists, quotes and tables look. The base
style writes plain text with no markup left (links as ``text (url)``, lists
as ``- item`` lines, code as its lines), for SMS and the terminal; a channel
with its own markup subclasses it and overrides the pieces that differ::

    class ForumStyle(MarkdownStyle):
        bullet = "*"

        def bold(self, text: str) -> str:
            return f"[b]{text}[/b]"

    ForumStyle().compose(reply.markdown, reply.reasoning)  # in the sink's render

``render_html`` is separate: sanitized HTML for the web chat (raw HTML in
the input is not passed through; the output goes through nh3).
"""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

_md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_TAGS = re.compile(r"<[^>]*>")


class MarkdownStyle:
    """How one channel writes Markdown; this base writes plain text.

    Each hook gets text already written in the style (``escape`` has been
    applied to the source text). ``table_as_code`` writes a table as an
    aligned code block instead of ``a | b`` lines.
    """

    bullet = "-"
    table_as_code = False

    def escape(self, text: str) -> str:
        return text

    def bold(self, text: str) -> str:
        return text

    def italic(self, text: str) -> str:
        return text

    def strike(self, text: str) -> str:
        return text

    def code(self, text: str) -> str:
        return text

    def link(self, text: str, url: str) -> str:
        if not url or text == url or text == url.removeprefix("mailto:"):
            return url or text
        return f"{text} ({url})"

    def heading(self, text: str, level: int) -> str:
        return text

    def fence(self, code: str, lang: str) -> str:
        return code.rstrip("\n")

    def quote(self, text: str) -> str:
        return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))

    def render(self, markdown: str) -> str:
        """The Markdown written in this style."""
        tree = SyntaxTreeNode(_md.parse(markdown))
        return "\n\n".join(p for p in _Writer(self).blocks(tree) if p != "").strip()

    def reasoning(self, text: str) -> str:
        """Reasoning shown with a reply (thinking mode ``on``); "" when there is none."""
        text = text.strip()
        return "Reasoning:\n" + self.render(text) if text else ""

    def compose(self, markdown: str, reasoning: str | None = None) -> str:
        """A whole reply: the reasoning (when shown) first, then the answer."""
        text = self.render(markdown) if markdown else ""
        if reasoning:
            text = f"{self.reasoning(reasoning)}\n\n{text}".strip()
        return text


class _Writer:
    def __init__(self, style: MarkdownStyle) -> None:
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
                pass  # raw HTML is never passed through
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


PLAIN = MarkdownStyle()


def render_plain(markdown: str) -> str:
    """Text with no markup left, for SMS and the terminal."""
    return PLAIN.render(markdown)


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
