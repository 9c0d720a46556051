"""Built-in tools: ``read_file`` and ``list_files`` (confined to the workspace), ``current_time``.

Confinement: a path must be relative, contain no ``..``, and resolve (after
following every symlink) to a place inside the workspace. Anything else is
an error result for the model, never the file.

Hostile files: ``read_file`` reads only the bytes it returns, refuses anything
but a regular file (a FIFO would block its reader for ever), and calls binary
files binary. File I/O runs in the workspace's own daemon threads, at most
``io_threads`` at once, each within ``io_timeout`` seconds: a stuck file
system costs those threads, never the process's shared pool. Errors name the
path as the model gave it, never where the workspace is on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.tools.registry import ToolError, ToolRegistry, make_tool
from bot.tools.result import ToolResult

MAX_READ_BYTES = 200_000
MAX_ENTRIES = 500
IO_TIMEOUT = 10.0
IO_THREADS = 4
SNIFF_BYTES = 8192  # how much of a file decides whether it is text
MOST_UNDECODABLE = 0.1  # share of bytes that are not UTF-8 above which a file is binary

T = TypeVar("T")


class Workspace:
    def __init__(
        self,
        root: str | Path,
        *,
        io_timeout: float = IO_TIMEOUT,
        io_threads: int = IO_THREADS,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.io_timeout = io_timeout
        self._threads = asyncio.Semaphore(io_threads)

    async def io(self, what: str, func: Callable[[], T]) -> T:
        """``func()`` in a daemon thread of the workspace, within ``io_timeout``: waiting
        for a free thread counts, so stuck threads make later calls fail, not queue."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.io_timeout
        try:
            await asyncio.wait_for(self._threads.acquire(), self.io_timeout)
        except TimeoutError:
            raise ToolError(
                "The workspace is busy: earlier file operations are stuck. Try again later."
            ) from None
        done: asyncio.Future[T] = loop.create_future()

        def settle(value: T | None, error: BaseException | None) -> None:
            self._threads.release()
            if done.done():
                return
            if error is None:
                done.set_result(value)  # type: ignore[arg-type]
            else:
                done.set_exception(error)

        def work() -> None:
            try:
                value, error = func(), None
            except BaseException as exc:  # handed to the awaiting task
                value, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=work, name="workspace-io", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(done), deadline - loop.time())
        except TimeoutError:
            raise ToolError(
                f"{what[:1].upper()}{what[1:]} took longer than {self.io_timeout:g} s; "
                "the file system may be stuck."
            ) from None

    def resolve(self, relative: str) -> Path:
        text = (relative or ".").strip()
        pure = PurePosixPath(text.replace("\\", "/"))
        if pure.is_absolute() or Path(text).is_absolute() or (text[1:3] == ":/"):
            raise ToolError(f"{text!r} is an absolute path; give a path inside the workspace.")
        if ".." in pure.parts:
            raise ToolError(f"{text!r} leaves the workspace ('..' is not allowed).")
        if "\0" in text:
            raise ToolError(f"{text!r} is not a valid path.")
        if not self.root.is_dir():
            raise ToolError("The workspace folder does not exist.")
        try:
            target = (self.root / pure).resolve()
        except (OSError, RuntimeError) as error:  # a symlink loop, a name too long
            raise ToolError(f"{text!r} cannot be opened: {_reason(error)}.") from None
        if target != self.root and self.root not in target.parents:
            raise ToolError(f"{text!r} points outside the workspace.")
        return target

    async def read_file(self, path: str) -> ToolResult:
        text = await self.io(f"reading {path!r}", lambda: self._read(path))
        return ToolResult("read_file", text, {"path": path}, details={"path": path})

    async def list_files(self, path: str = ".") -> ToolResult:
        entries = await self.io(f"listing {path!r}", lambda: self._list(path))
        content = "\n".join(entries) if entries else "(empty folder)"
        return ToolResult(
            "list_files", content, {"path": path}, details={"path": path, "entries": entries}
        )

    def _read(self, path: str) -> str:
        target = self.resolve(path)
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked
            # on what was opened, so a file swapped for a FIFO after a check changes nothing.
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                raise ToolError(f"No file {path!r} in the workspace.") from None
            raise ToolError(f"{path!r} cannot be opened: {_reason(error)}.") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                raise ToolError(f"{path!r} is a folder; use list_files.")
            raise ToolError(f"{path!r} is not a regular file (a pipe, socket or device).")
        with os.fdopen(fd, "rb") as file:
            try:
                data = file.read(MAX_READ_BYTES + 1)
                size = os.fstat(fd).st_size
            except OSError as error:
                raise ToolError(f"{path!r} cannot be read: {_reason(error)}.") from None
        if _binary(data[:SNIFF_BYTES]):
            raise ToolError(f"{path!r} is a binary file ({size} bytes); it has no text to read.")
        text = data[:MAX_READ_BYTES].decode("utf-8", errors="replace")
        if len(data) > MAX_READ_BYTES:
            text += f"\n[truncated at {MAX_READ_BYTES} bytes]"
        return text

    def _list(self, path: str) -> list[str]:
        target = self.resolve(path)
        try:
            children = sorted(os.scandir(target), key=lambda e: e.name)[:MAX_ENTRIES]
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                raise ToolError(f"No folder {path!r} in the workspace.") from None
            raise ToolError(f"{path!r} cannot be listed: {_reason(error)}.") from None
        entries = []
        for child in children:
            try:
                inside = Path(child.path).resolve(strict=True)
            except (OSError, RuntimeError):  # a symlink loop or a dangling link
                entries.append(f"{child.name} (broken link)")
                continue
            if inside != self.root and self.root not in inside.parents:
                continue  # a symlink out of the workspace is not shown
            entries.append(child.name + ("/" if inside.is_dir() else ""))
        return entries


def _binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    text = sample.decode("utf-8", errors="replace")
    # A multi-byte character cut at the end of the sample is not evidence.
    odd = text.count("\ufffd") - (1 if text.endswith("\ufffd") else 0)
    return odd > MOST_UNDECODABLE * max(len(sample), 1)


def _reason(error: BaseException) -> str:
    """What went wrong, without the absolute path an OSError carries."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    if isinstance(error, RuntimeError):
        return "symbolic link loop"
    return type(error).__name__


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

    async def read_file(path: str) -> ToolResult:
        """Read a text file from the workspace. The path is relative to the workspace."""
        return await space.read_file(path)

    async def list_files(path: str = ".") -> ToolResult:
        """List the files and folders in a workspace folder (default: the workspace itself)."""
        return await space.list_files(path)

    registry = ToolRegistry()
    registry.add(make_tool(read_file))
    registry.add(make_tool(list_files))
    registry.add(make_tool(current_time))
    return registry
