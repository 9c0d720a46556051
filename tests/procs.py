"""Real ``chatlane`` processes for tests: started on a free port, awaited on /healthz.

Each process writes its log to ``<cwd>/<name>.log`` so a failing test can say
what the process saw (``Serve.log()``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    """This test process's environment (already scrubbed by ``clean_env``), no API keys."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(extra)
    return env


@dataclass
class Serve:
    proc: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def healthz(self, http: ClientSession) -> tuple[int, dict[str, Any]]:
        async with http.get(f"{self.url}/healthz") as response:
            return response.status, await response.json()

    async def wait_ready(self, http: ClientSession, seconds: float = 30) -> None:
        try:
            async with asyncio.timeout(seconds):
                while True:
                    if self.proc.returncode is not None:
                        raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.log()}")
                    try:
                        status, _ = await self.healthz(http)
                        if status == 200:
                            return
                    except OSError:
                        pass
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"serve was not ready in {seconds}s:\n{self.log()}") from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_serve(cwd: Path, env: dict[str, str], *, name: str = "serve") -> Serve:
    port = free_port()
    log_path = cwd / f"{name}.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "serve",
            "--host",
            "127.0.0.1",
            cwd=cwd,
            env={**env, "PORT": str(port)},
            stdout=log,
            stderr=log,
        )
    return Serve(proc, port, log_path)


@dataclass
class RedisProcess:
    """A redis-server of the test's own that keeps its data in an append-only file,
    so it can be stopped and started again on the same port with its data."""

    directory: Path
    port: int
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no redis-server binary on this machine (apt-get install redis-server)")
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("redis-server did not start within 10 s") from None
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self.proc = None
