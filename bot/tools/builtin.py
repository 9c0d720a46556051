"""Built-in tools: ``read_file`` and ``list_files`` (confined to the workspace), ``current_time``.

Confinement: a path must be relative, contain no ``..``, and resolve (after
following every symlink) to a place inside the workspace. Anything else is
an error result for the model, never the file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.tools.registry import ToolError, ToolRegistry, make_tool
from bot.tools.result import ToolResult

MAX_READ_BYTES = 200_000
MAX_ENTRIES = 500


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def resolve(self, relative: str) -> Path:
        text = (relative or ".").strip()
        pure = PurePosixPath(text.replace("\\", "/"))
        if pure.is_absolute() or Path(text).is_absolute() or (text[1:3] == ":/"):
            raise ToolError(f"{text!r} is an absolute path; give a path inside the workspace.")
        if ".." in pure.parts:
            raise ToolError(f"{text!r} leaves the workspace ('..' is not allowed).")
        if not self.root.is_dir():
            raise ToolError("The workspace folder does not exist.")
        target = (self.root / pure).resolve()
        if target != self.root and self.root not in target.parents:
            raise ToolError(f"{text!r} points outside the workspace.")
        return target

    def read_file(self, path: str) -> ToolResult:
        target = self.resolve(path)
        if not target.exists():
            raise ToolError(f"No file {path!r} in the workspace.")
        if target.is_dir():
            raise ToolError(f"{path!r} is a folder; use list_files.")
        data = target.read_bytes()[: MAX_READ_BYTES + 1]
        truncated = len(data) > MAX_READ_BYTES
        text = data[:MAX_READ_BYTES].decode("utf-8", errors="replace")
        if "\x00" in text:
            raise ToolError(f"{path!r} is a binary file.")
        if truncated:
            text += f"\n[truncated at {MAX_READ_BYTES} bytes]"
        return ToolResult("read_file", text, {"path": path}, details={"path": path})

    def list_files(self, path: str = ".") -> ToolResult:
        target = self.resolve(path)
        if not target.is_dir():
            raise ToolError(f"No folder {path!r} in the workspace.")
        entries = []
        for child in sorted(target.iterdir(), key=lambda p: p.name)[:MAX_ENTRIES]:
            inside = child.resolve()
            if inside != self.root and self.root not in inside.parents:
                continue  # a symlink out of the workspace is not shown
            entries.append(child.name + ("/" if child.is_dir() else ""))
        content = "\n".join(entries) if entries else "(empty folder)"
        return ToolResult(
            "list_files", content, {"path": path}, details={"path": path, "entries": entries}
        )


def current_time(timezone: str = "UTC") -> str:
    """The current date and time, in a given IANA time zone (default UTC)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"Unknown time zone {timezone!r}; use a name like Europe/Paris.") from None
    now = dt.datetime.now(zone)
    return now.strftime("%A %d %B %Y, %H:%M:%S %Z (UTC%z)")


def builtin_tools(workspace: str | Path) -> ToolRegistry:
    space = Workspace(workspace)

    def read_file(path: str) -> ToolResult:
        """Read a text file from the workspace. The path is relative to the workspace."""
        return space.read_file(path)

    def list_files(path: str = ".") -> ToolResult:
        """List the files and folders in a workspace folder (default: the workspace itself)."""
        return space.list_files(path)

    registry = ToolRegistry()
    registry.add(make_tool(read_file))
    registry.add(make_tool(list_files))
    registry.add(make_tool(current_time))
    return registry
