"""Whether the data directory (``CHATLANE_DATA_DIR``) takes writes.

SQLite, stored media and anything else kept on disk live there. A full or read-only
disk makes every write fail while reads still work, so a read-only check (a storage
ping) says "healthy" while nothing can be stored: ``WriteProbe`` writes a small file,
and ``unwritable`` tells ``serve`` before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from bot.config import data_dir

PROBE_BYTES = 4096  # one filesystem block: a full disk refuses it (a shorter write may fit)


def probe(directory: Path) -> str | None:
    """Create the directory if needed, write one block to a new file and remove it;
    None when that worked, else what went wrong."""
    path = directory / f".chatlane-write-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = os.write(fd, b"\0" * PROBE_BYTES)
        finally:
            os.close(fd)
        if written < PROBE_BYTES:
            return f"only {written} of {PROBE_BYTES} bytes written"
    except OSError as error:
        return error.strerror or type(error).__name__
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    return None


def unwritable(env: Mapping[str, str] | None = None) -> str | None:
    """A sentence naming ``CHATLANE_DATA_DIR`` and the fix when the data directory takes
    no writes; None when it does."""
    env = os.environ if env is None else env
    directory = data_dir(env)
    problem = probe(directory)
    if problem is None:
        return None
    return (
        f"the data directory {directory} is not writable ({problem}); set CHATLANE_DATA_DIR "
        "to a folder this user can write to (it holds the SQLite store and received media), "
        "or free some space"
    )


class WriteProbe:
    """``probe`` at most once every ``every`` seconds (a health check may come every
    second from several routers); the answer in between is the last one."""

    def __init__(
        self, directory: Path, *, every: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.directory = directory
        self.every = every
        self.clock = clock
        self._last: tuple[float, str | None] | None = None
        self._lock = asyncio.Lock()

    async def problem(self) -> str | None:
        async with self._lock:  # one probe at a time; the others take its answer
            now = self.clock()
            if self._last is None or now - self._last[0] >= self.every:
                self._last = (now, await asyncio.to_thread(probe, self.directory))
            return self._last[1]
