"""Tool results for people: a heading and a fenced block in Markdown, labelled lines in plain text.

::

    ### File Read: config.py          File: config.py
    ```python                         Content: DEBUG = True
    DEBUG = True
    ```

Long results are cut to ``max_chars`` with a note of how much was left out.
``summarize`` gives the one plain line that ``show_tool_results: summary``
shows per call.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import PurePosixPath

from bot.tools.result import ToolResult


class FormatMode(str, Enum):
    MARKDOWN = "markdown"
    PLAIN = "plain"

    def __str__(self) -> str:
        return self.value


class ShowToolResults(str, Enum):
    OFF = "off"
    SUMMARY = "summary"
    FULL = "full"


LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".md": "markdown",
    ".html": "html",
    ".css": "css",
    ".sh": "bash",
    ".sql": "sql",
    ".rs": "rust",
    ".go": "go",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".rb": "ruby",
    ".xml": "xml",
    ".csv": "csv",
    ".ini": "ini",
    ".txt": "",
}


def language_for(result: ToolResult) -> str:
    explicit = result.details.get("language")
    if isinstance(explicit, str):
        return explicit
    path = result.details.get("path") or result.arguments.get("path")
    if isinstance(path, str) and result.name == "read_file":
        return LANGUAGES.get(PurePosixPath(path).suffix.lower(), "")
    text = result.content.strip()
    if text[:1] in "[{":
        try:
            json.loads(text)
        except ValueError:
            return ""
        return "json"
    return ""


def _fence(text: str) -> str:
    longest = 0
    run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


class ToolFormatter:
    def __init__(self, max_chars: int = 1500) -> None:
        self.max_chars = max_chars

    def _cut(self, text: str) -> tuple[str, str]:
        if len(text) <= self.max_chars:
            return text, ""
        cut = text.rfind("\n", 0, self.max_chars)
        cut = cut if cut > self.max_chars // 2 else self.max_chars
        left = len(text) - cut
        return text[:cut].rstrip("\n"), f"… {left:,} more characters not shown"

    def title(self, result: ToolResult) -> tuple[str, str]:
        """(heading, subject) for the result, e.g. ("File Read", "config.py")."""
        path = result.details.get("path") or result.arguments.get("path") or ""
        if result.name == "read_file":
            return "File Read", str(path)
        if result.name == "list_files":
            return "Files", str(path or ".")
        if result.name == "current_time":
            return "Time", ""
        return "Tool", result.name

    def format_result(self, result: ToolResult, mode: FormatMode | str) -> str:
        mode = FormatMode(mode)
        body, note = self._cut(result.content.rstrip("\n"))
        if result.is_error:
            if mode is FormatMode.PLAIN:
                return f"Error ({result.name}): {body}" + (f"\n{note}" if note else "")
            return f"### Error: {result.name}\n{body}" + (f"\n\n_{note}_" if note else "")
        heading, subject = self.title(result)
        label = f"{heading}: {subject}" if subject else heading
        if mode is FormatMode.PLAIN:
            lines = [f"File: {subject}"] if result.name == "read_file" else [label]
            if "\n" in body:
                lines += ["Content:", body]
            else:
                lines.append(f"Content: {body}")
            if note:
                lines.append(note)
            return "\n".join(lines)
        fence = _fence(body)
        text = f"### {label}\n{fence}{language_for(result)}\n{body}\n{fence}"
        return text + (f"\n_{note}_" if note else "")

    def summarize(self, result: ToolResult) -> str:
        """One line in plain words."""
        if result.is_error:
            first = result.content.strip().splitlines()[0] if result.content.strip() else ""
            return f"{result.name} failed: {first[:200]}"
        path = result.details.get("path") or result.arguments.get("path")
        if result.name == "read_file":
            lines = result.content.count("\n") + (0 if result.content.endswith("\n") else 1)
            return f"Read {path} ({lines} line{'s' if lines != 1 else ''})"
        if result.name == "list_files":
            entries = result.details.get("entries")
            count = len(entries) if isinstance(entries, list) else len(result.content.splitlines())
            return f"Listed {count} entr{'ies' if count != 1 else 'y'} in {path or '.'}"
        if result.name == "current_time":
            return f"Checked the time: {result.content.strip()}"
        return f"Used {result.name} ({len(result.content):,} characters back)"
