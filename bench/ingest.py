"""Ingest: signed Telegram updates per second through ``chatlane serve`` vs a bare aiohttp handler.

Three real processes take the same load: a minimal aiohttp handler (read
the body, ``json.loads`` it, answer 200), and ``chatlane serve`` in
Telegram webhook mode with answering off (``server.process_inbox: false``:
check the secret token, parse, deduplicate, store in the inbox, answer
200), once on SQLite, once on a private redis-server and once on a database of
its own on the PostgreSQL at 127.0.0.1:5432 (when there is one). The load comes
from wrk (``bench/ingest.lua``): every request is a new Update (unique
update_id, a text message in one of many private chats) with the secret
token header. A Python client tops out below chatlane, so it would measure
itself.

wrk runs with the same threads and connections against all three, and
shares the machine's cores with the server (and redis-server), so the
figures are the ceiling of this machine, not of the server alone. Short
rounds alternate (bare, SQLite, Redis): rates are medians, and a ratio is
the median of each round's own ratio, since other load on a shared machine
drifts more between rounds than within one. Afterwards the
inbox is counted: every update acknowledged with a 2xx must be stored (a
few more may be, those wrk cut off at the end of a run), and no response
may be 4xx/5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.telegram import FakeTelegram  # noqa: E402

SECRET = "bench-secret"
THREADS, CONNECTIONS = 2, 64
CHATS = 10_000
BAND = 10**8  # update_ids reserved for one wrk run
WEBHOOK = "/telegram/webhook"
# What the parent's environment must not leak into chatlane serve: keys, other channels.
FOREIGN = (
    *("CHATLANE", "TELEGRAM_", "SLACK_", "TWILIO_", "DISCORD_", "REDIS_", "PUBLIC_URL", "LOG_"),
    "DATABASE_",
)


def serve_bare(port: int) -> None:
    """The baseline: the least an aiohttp webhook can do."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(WEBHOOK, handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class System:
    name: str
    port: int
    log: Path
    proc: asyncio.subprocess.Process | None = None
    rates: list[float] = field(default_factory=list)
    acknowledged: int = 0
    refused: int = 0  # 4xx/5xx
    socket_errors: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, args: list[str], env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *args, cwd=ROOT, env=env, stdout=out, stderr=out
            )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    async def wait_ready(self, http: aiohttp.ClientSession) -> None:
        """Until /healthz answers: 200 from chatlane once its channels started, 404 from
        the bare handler once it listens."""
        async with asyncio.timeout(60):
            while True:
                if self.proc is None or self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited: {self.tail()}")
                with contextlib.suppress(OSError, aiohttp.ClientError):
                    async with http.get(self.url + "/healthz") as response:
                        if response.status in (200, 404):
                            return
                await asyncio.sleep(0.1)


async def wrk(system: System, seconds: int, run: int) -> float:
    """One wrk run against ``system``; its requests per second. Counts go on ``system``."""
    done = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "-s",
        str(ROOT / "bench" / "ingest.lua"),
        system.url + WEBHOOK,
        "--",
        str(run * BAND + 1),
        str(THREADS),
        str(CHATS),
        SECRET,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await done.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {err.decode()[-500:]}")
    counts = json.loads(lines[-1])
    system.acknowledged += counts["requests"] - counts["non_2xx_3xx"]
    system.refused += counts["non_2xx_3xx"]
    system.socket_errors += sum(counts[k] for k in ("connect", "read", "write", "timeout"))
    return float(counts["requests"] / (counts["duration_us"] / 1e6))


def chatlane_env(
    port: int, data: Path, telegram: FakeTelegram, redis_url: str | None, database_url: str = ""
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN) and "API_KEY" not in k}
    env.update(
        PORT=str(port),
        CHATLANE_DATA_DIR=str(data),
        CHATLANE__SERVER__PROCESS_INBOX="false",
        CHATLANE__CHANNELS__TELEGRAM__RATE_LIMIT_PER_MINUTE="0",
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE_URL=telegram.base_url,
        TELEGRAM_WEBHOOK_SECRET=SECRET,
        PUBLIC_URL="https://example.invalid",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[str | None]:
    """A database of this run's own on the local PostgreSQL, dropped after; None without one."""
    import pytest

    from tests.pg import _create, _drop

    try:
        server, name = await _create()
    except pytest.skip.Exception:  # no server (tests.pg skips, saying why)
        yield None
        return
    try:
        yield f"{server}/{name}"
    finally:
        await _drop(name)


@contextlib.asynccontextmanager
async def private_redis(directory: Path) -> AsyncIterator[str | None]:
    """A redis-server of this run's own (never the shared one), or None without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
        *("--save", "", "--appendonly", "no"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        await proc.wait()


async def stored(system: System, data: Path, redis_url: str | None, database_url: str) -> int:
    """Inbox items stored by ``system`` (after it stopped)."""
    if system.name == "postgres":
        import asyncpg

        connection = await asyncpg.connect(database_url)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM chatlane_inbox"))
        finally:
            await connection.close()
    if redis_url:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            return int(await client.zcard("chatlane:inbox:pending"))
        finally:
            await client.aclose()
    with contextlib.closing(sqlite3.connect(data / "chatlane.sqlite3")) as db:
        return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])


async def measure(quick: bool) -> list[tuple[str, float, str]]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    warm, seconds, rounds = (1, 1, 2) if quick else (2, 3, 9)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name in ("sqlite", "redis", "redis-data", "postgres"):
            (root / name).mkdir()
        async with (
            FakeTelegram() as telegram,
            private_redis(root / "redis-data") as redis_url,
            private_postgres() as database_url,
            aiohttp.ClientSession() as http,
        ):
            bare = System("bare", free_port(), root / "bare.log")
            sqlite = System("sqlite", free_port(), root / "sqlite.log")
            systems = [bare, sqlite]
            await bare.start([sys.executable, "-m", "bench.ingest", "--bare", str(bare.port)])
            env = chatlane_env(sqlite.port, root / "sqlite", telegram, None)
            await sqlite.start([sys.executable, "-m", "bot.cli", "serve"], env)
            if redis_url:
                redis = System("redis", free_port(), root / "redis.log")
                env = chatlane_env(redis.port, root / "redis", telegram, redis_url)
                await redis.start([sys.executable, "-m", "bot.cli", "serve"], env)
                systems.append(redis)
            if database_url:
                postgres = System("postgres", free_port(), root / "postgres.log")
                env = chatlane_env(postgres.port, root / "postgres", telegram, None, database_url)
                await postgres.start([sys.executable, "-m", "bot.cli", "serve"], env)
                systems.append(postgres)
            try:
                for system in systems:
                    await system.wait_ready(http)
                run = 0
                for system in systems:  # warm up: imports, first connections, caches
                    run += 1
                    await wrk(system, warm, run)
                for _ in range(rounds):
                    for system in systems:
                        run += 1
                        system.rates.append(await wrk(system, seconds, run))
            finally:
                await asyncio.gather(*(system.stop() for system in systems))
            counts = {
                system.name: await stored(
                    system,
                    root / system.name,
                    redis_url if system.name == "redis" else None,
                    database_url or "",
                )
                for system in systems[1:]
            }
            logs = {system.name: system.tail() for system in systems}

    baseline = statistics.median(bare.rates)
    load = (
        f"wrk -t{THREADS} -c{CONNECTIONS} for all {len(systems)}, {rounds} x {seconds} s, "
        f"on the server's {os.cpu_count()} cores"
    )
    rows = [("bare aiohttp (updates/s)", baseline, load)]
    problems = []
    for system in systems[1:]:
        rate = statistics.median(system.rates)
        ratio = statistics.median(a / b for a, b in zip(system.rates, bare.rates, strict=True))
        kept = counts[system.name]
        lost = system.acknowledged - kept
        note = (
            f"{system.refused} non-2xx; {system.acknowledged:,} acknowledged, {kept:,} stored"
            + (f"; {system.socket_errors} socket errors" if system.socket_errors else "")
        )
        label = {"sqlite": "SQLite", "redis": "Redis", "postgres": "PostgreSQL"}[system.name]
        rows += [
            (f"chatlane, {label} (updates/s)", rate, note),
            (f"{label} vs bare", ratio, "target >= 0.5"),
        ]
        if system.refused or lost > 0:
            problems.append(f"{label}: {note}\n{logs[system.name]}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return rows


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    return asyncio.run(measure(quick))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        serve_bare(int(sys.argv[2]))
    else:
        for name, value, note in run(quick="--quick" in sys.argv):
            print(f"{name:32} {value:10.3f}  {note}")
