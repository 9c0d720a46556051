"""Real ``chatlane`` processes for tests: started on a free port, awaited on /healthz.

Each process writes its log to ``<cwd>/<name>.log`` so a failing test can say
what the process saw (``Serve.log()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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


@dataclass
class Durable:
    """Where the serve processes of a test keep their durable state: SQLite under the
    data directory, or a PostgreSQL database of the test's own (``DATABASE_URL``), with
    lanes in a redis-server of its own too (``REDIS_URL``) for ``postgres+redis``.
    ``env`` is what a serve's environment needs for it."""

    kind: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def expect_health(self, health: dict[str, Any]) -> None:
        """``/healthz``'s body says this backend serves (its variables took effect)."""
        backend = "SQLiteStorage" if self.kind == "sqlite" else "PostgresStorage"
        redis = "ok" if "REDIS_URL" in self.env else "not configured"
        seen = (health["backend"], health["storage"], health["redis"])
        assert seen == (backend, "ok", redis), health

    async def pending(self) -> list[Any]:
        """What the store still holds to answer, read as the next process would."""
        from bot.storage.postgres import PostgresStorage
        from bot.storage.sqlite import SQLiteStorage

        url = self.env.get("DATABASE_URL")
        store: Any = (
            PostgresStorage(url) if url else SQLiteStorage(self.data_dir / "chatlane.sqlite3")
        )
        await store.open()
        try:
            return list(await store.inbox_pending())
        finally:
            await store.close()

    async def lapse_leases(self) -> int:
        """Make the leases a killed process held run out now, as its ``CLAIM_TTL`` (30 s)
        would: its claims on inbox rows (PostgreSQL) and its lane tickets (Redis). The
        claims lapsed; 0 on SQLite, whose claims live in the process that held them."""
        lapsed = 0
        if url := self.env.get("DATABASE_URL"):
            import asyncpg

            connection = await asyncpg.connect(url)
            try:
                rows = await connection.fetch(
                    "UPDATE chatlane_inbox SET claim_until = clock_timestamp() - interval '1s' "
                    "WHERE claim_token IS NOT NULL AND NOT done RETURNING id"
                )
                lapsed = len(rows)
            finally:
                await connection.close()
        if url := self.env.get("REDIS_URL"):
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(url)
            try:  # bot.queuing.redis_backend: a lane's tickets scored by their lease's end
                async for key in client.scan_iter(match="chatlane:lane:*:alive"):
                    ended: dict[Any, float] = {t: 0 for t in await client.zrange(key, 0, -1)}
                    if ended:
                        await client.zadd(key, ended)
            finally:
                await client.aclose()
        return lapsed


DURABLE_KINDS = ("sqlite", "postgres", "postgres+redis")


@contextlib.asynccontextmanager
async def durable(kind: str, cwd: Path) -> AsyncIterator[Durable]:
    """A ``Durable`` of ``kind`` (one of ``DURABLE_KINDS``); its database and redis-server
    are created for it and dropped or stopped afterwards. Skips when PostgreSQL or
    redis-server is not on this machine, saying why."""
    if kind not in DURABLE_KINDS:
        raise ValueError(f"unknown durable kind {kind!r}; one of {DURABLE_KINDS}")
    data_dir = Path(os.environ.get("CHATLANE_DATA_DIR", cwd / "data"))
    if kind == "sqlite":
        yield Durable(kind, data_dir)
        return
    import tests.pg

    async with contextlib.AsyncExitStack() as stack:
        url = stack.enter_context(tests.pg.database())
        env = {"DATABASE_URL": url}
        if kind == "postgres+redis":
            redis = RedisProcess(cwd / "redis", free_port())
            redis.directory.mkdir(exist_ok=True)
            await redis.start()
            stack.push_async_callback(redis.stop)
            env["REDIS_URL"] = redis.url
        yield Durable(kind, data_dir, env)
