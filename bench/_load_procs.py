"""The load benchmark's processes: started on free ports, read through /proc, always killed.

``Children`` owns every process of one scope (the benchmark's fakes, or one
run's system and generator) and a temporary directory for their logs and
data; leaving it kills them all (SIGKILL) and removes the directory, also
on error or cancellation (``keep_logs`` copies the logs out first). Each
child also dies with its parent (PR_SET_PDEATHSIG), so a killed benchmark
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession

from bench import ROOT

PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
"""All a child inherits: no API keys, no channel tokens, no CHATLANE__ overrides."""

SITE = "BENCH_LOAD_SITE"
"""A directory put first on serve's ``PYTHONPATH``: its ``sitecustomize.py`` runs in every
serve process (a profiler, a count of Redis round trips), nowhere else."""

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _die_with_parent_first_served() -> None:
    """For the environment (fakes, generator): whatever else runs on the machine
    should starve the system under test, never the load or the far side of the wire."""
    _die_with_parent()
    with contextlib.suppress(OSError):  # not allowed to (not root): run at the usual priority
        os.nice(-5)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / TICKS


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        """User plus system CPU seconds so far."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def ready(self, http: ClientSession, path: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(ClientError, OSError):
                async with http.get(self.url + path) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} was not ready in {seconds:.0f} s: {self.tail()}")

    async def output(self, seconds: float) -> str:
        """Its standard output once it exits (RuntimeError if it fails or overruns)."""
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), seconds)
        except TimeoutError:
            raise RuntimeError(f"{self.name} ran past {seconds:.0f} s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
        return out.decode()


class Children:
    def __init__(self, prefix: str, *, keep_logs: Path | None = None) -> None:
        self.prefix = prefix
        self.keep_logs = keep_logs
        self.directory = Path()
        self.children: list[Child] = []

    async def __aenter__(self) -> Children:
        self.directory = Path(tempfile.mkdtemp(prefix=self.prefix))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            if child.proc.returncode is None:
                child.proc.kill()
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(child.proc.wait(), 10)
        if self.keep_logs is not None:
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.directory.glob("*.log"):
                shutil.copyfile(log, self.keep_logs / f"{self.directory.name}-{log.name}")
        shutil.rmtree(self.directory, ignore_errors=True)

    async def start(
        self,
        name: str,
        args: list[str],
        *,
        port: int = 0,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        stdout: bool = False,
        first_served: bool = False,
    ) -> Child:
        log = self.directory / f"{name}.log"
        passed = {key: os.environ[key] for key in PASSED_ON if key in os.environ}
        with log.open("ab") as sink:
            proc = await asyncio.create_subprocess_exec(
                *args,
                cwd=cwd,
                env={**passed, "PYTHONPATH": str(ROOT), **(env or {})},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout else sink,
                stderr=sink,
                preexec_fn=_die_with_parent_first_served if first_served else _die_with_parent,
            )
        child = Child(name, proc, port, log)
        self.children.append(child)
        return child

    async def helper(
        self,
        name: str,
        module: str,
        *args: str,
        env: dict[str, str] | None = None,
        stdout: bool = False,
        first_served: bool = False,
    ) -> Child:
        """``python -m bench._load_*``: a server's first argument is its port."""
        port = 0 if stdout else free_port()
        head = [sys.executable, "-m", module] + ([str(port)] if port else [])
        return await self.start(
            name, [*head, *args], port=port, env=env, stdout=stdout, first_served=first_served
        )

    async def serve(self, name: str, env: dict[str, str]) -> Child:
        port = free_port()
        args = [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"]
        env = {**env, "PORT": str(port)}
        if os.environ.get(SITE):  # a profiler or a counter, in serve processes only
            env["PYTHONPATH"] = f"{os.environ[SITE]}{os.pathsep}{ROOT}"
        return await self.start(name, args, port=port, env=env, cwd=self.directory)

    async def redis(self) -> Child:
        """A private redis-server, no persistence, ready for commands."""
        binary = shutil.which("redis-server")
        assert binary is not None
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.directory)]
        child = await self.start("redis", args, port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                answer = await reader.readline()
                writer.close()
                if answer.startswith(b"+PONG"):
                    return child
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server was not ready in 10 s: {child.tail()}")
            await asyncio.sleep(0.05)

    def log_summary(self) -> Counter[str]:
        """The serve processes' warnings and errors, numbers blanked so alike lines add up."""
        found: Counter[str] = Counter()
        for child in self.children:
            if not child.name.startswith("serve") or not child.log.exists():
                continue
            for line in child.log.read_text(errors="replace").splitlines():
                try:
                    record: dict[str, Any] = json.loads(line)
                except ValueError:
                    continue
                if record.get("level") in ("warning", "error", "critical"):
                    text = f"{record['level']}: {record.get('message', '')}"
                    found[re.sub(r"\d+", "N", text)[:160]] += 1
        return found
