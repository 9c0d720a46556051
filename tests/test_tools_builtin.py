"""The workspace tools under hostile files: huge, FIFOs, symlink loops, binary, stuck I/O."""

from __future__ import annotations

import asyncio
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from bot.tools import ToolError, builtin_tools
from bot.tools.builtin import MAX_READ_BYTES, Workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "notes.txt").write_text("hello\n")
    return root


async def test_a_huge_file_is_read_only_as_far_as_it_is_returned(workspace: Path) -> None:
    with (workspace / "big.log").open("wb") as big:
        big.write(b"a log line\n" * 30_000)  # 330 KB of text, then a 600 MB hole
        big.truncate(600 * 1024**2)
    tools = builtin_tools(workspace)
    tracemalloc.start()
    try:
        result = await tools.call("read_file", {"path": "big.log"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not result.is_error, result.content
    assert result.content.startswith("a log line\n")
    assert "[truncated" in result.content
    assert peak < 5 * 1024**2, f"peak {peak / 1e6:.0f} MB for {MAX_READ_BYTES} bytes returned"


async def test_a_fifo_is_refused_at_once_and_blocks_nothing(workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")
    tools = builtin_tools(workspace)
    results = await asyncio.wait_for(
        asyncio.gather(*(tools.call("read_file", {"path": "pipe"}) for _ in range(10))), 3
    )
    assert all(r.is_error and "'pipe' is not a regular file" in r.content for r in results)
    ok = await asyncio.wait_for(tools.call("read_file", {"path": "notes.txt"}), 3)
    assert ok.content == "hello\n"
    listing = await tools.call("list_files", {})
    assert "pipe" in listing.content.splitlines()


async def test_stuck_io_times_out_and_leaves_other_threads_alone(workspace: Path) -> None:
    space = Workspace(workspace, io_timeout=0.2, io_threads=1)
    release = threading.Event()
    stuck = asyncio.ensure_future(space.io("reading 'x'", release.wait))  # a stuck read
    try:
        await asyncio.sleep(0.3)
        with pytest.raises(ToolError, match=r"Reading 'x' took longer than 0\.2 s"):
            await stuck
        # Its thread is still stuck: the next call is refused at once, not queued forever.
        with pytest.raises(ToolError, match="busy"):
            await space.read_file("notes.txt")
        # The default thread pool (every other tool, DNS) is untouched.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 1) == 42
    finally:
        release.set()
    await asyncio.sleep(0.05)
    assert (await space.read_file("notes.txt")).content == "hello\n"


async def test_a_symlink_loop_does_not_break_the_listing(workspace: Path) -> None:
    os.symlink("loop", workspace / "loop")
    os.symlink("b", workspace / "a")
    os.symlink("a", workspace / "b")
    os.symlink("missing", workspace / "dangling")
    tools = builtin_tools(workspace)
    listing = await tools.call("list_files", {})
    assert not listing.is_error, listing.content
    assert listing.details["entries"] == [
        "a (broken link)",
        "b (broken link)",
        "dangling (broken link)",
        "docs/",
        "loop (broken link)",
        "notes.txt",
    ]
    read = await tools.call("read_file", {"path": "loop"})
    assert read.is_error and "'loop'" in read.content


async def test_errors_name_workspace_paths_never_server_paths(
    workspace: Path, tmp_path: Path
) -> None:
    os.symlink("loop", workspace / "loop")
    os.symlink("missing", workspace / "dangling")
    os.mkfifo(workspace / "pipe")
    tools = builtin_tools(workspace)
    calls = [
        ("read_file", "loop"),
        ("read_file", "dangling"),
        ("read_file", "pipe"),
        ("read_file", "docs"),
        ("read_file", "nope/deeper.txt"),
        ("read_file", "notes.txt/inside"),
        ("read_file", "x" * 5000),
        ("list_files", "loop"),
        ("list_files", "notes.txt"),
        ("list_files", "y" * 5000),
    ]
    for name, path in calls:
        result = await tools.call(name, {"path": path})
        assert result.is_error, (name, path)
        assert str(tmp_path) not in result.content, result.content
        assert "failed (" not in result.content, result.content  # said what went wrong


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        bytes(range(128, 256)) * 50,  # no NUL at all, but no text either
        "plain text".encode("utf-16"),
    ],
)
async def test_binary_files_are_reported_as_binary(workspace: Path, data: bytes) -> None:
    (workspace / "blob").write_bytes(data)
    result = await builtin_tools(workspace).call("read_file", {"path": "blob"})
    assert result.is_error
    assert result.content == f"'blob' is a binary file ({len(data)} bytes); it has no text to read."


async def test_text_with_a_few_odd_bytes_is_still_text(workspace: Path) -> None:
    (workspace / "latin.txt").write_bytes("café crème, naïve\n".encode("latin-1") + b"ok\n" * 50)
    result = await builtin_tools(workspace).call("read_file", {"path": "latin.txt"})
    assert not result.is_error and result.content.startswith("caf\ufffd cr\ufffdme")
