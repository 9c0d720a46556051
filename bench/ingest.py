"""Ingest: signed Telegram updates per second through chatlane's webhook vs a bare aiohttp handler.

The chatlane side does the whole acknowledgement path (check the secret
token, parse the update, deduplicate, store in the inbox, answer 200) with
answering turned off (``server.process_inbox: false``), so only ingest is
measured. The baseline is an aiohttp handler that reads the body and
answers 200, served and loaded the same way in the same run. Ratio = ours /
baseline; target at least 0.5. Figures for SQLite and, when a redis-server
answers on 127.0.0.1:6379, Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import create_app
from tests.fakes.telegram import FakeTelegram, update

SECRET = "bench-secret"
CONCURRENCY = 16


async def load(client: TestClient[Any, Any], path: str, bodies: list[bytes]) -> float:
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    queue = list(bodies)

    async def worker() -> None:
        while queue:
            body = queue.pop()
            response = await client.post(path, data=body, headers=headers)
            assert response.status == 200, response.status
            await response.release()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return len(bodies) / (time.perf_counter() - started)


async def bare(bodies: list[bytes]) -> float:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/telegram/webhook", handler)
    async with TestClient(TestServer(app)) as client:
        return await load(client, "/telegram/webhook", bodies)


async def ours(bodies: list[bytes], redis_url: str | None) -> float:
    async with FakeTelegram() as telegram:
        env = {
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
            "TELEGRAM_WEBHOOK_SECRET": SECRET,
            "PUBLIC_URL": "https://bench.example.com",
        }
        if redis_url:
            env["REDIS_URL"] = redis_url
        with tempfile.TemporaryDirectory() as data:
            os.environ["CHATLANE_DATA_DIR"] = data
            storage = None
            if redis_url:
                from bot.storage.redis import RedisStorage

                storage = RedisStorage(redis_url, prefix=f"bench-{uuid.uuid4().hex[:8]}:")
            runtime = AgentRuntime(
                config=load_config(data={"server": {"process_inbox": False}}),
                demo_when_unconfigured=True,
                storage=storage,
                env=env,
            )
            async with TestClient(TestServer(create_app(runtime, env=env))) as client:
                rate = await load(client, "/telegram/webhook", bodies)
            if storage is not None:
                await storage.open()
                keys = [k async for k in storage.client.scan_iter(match=storage.prefix + "*")]
                if keys:
                    await storage.client.delete(*keys)
                await storage.close()
    return rate


def redis_available() -> str | None:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        if sock.connect_ex(("127.0.0.1", 6379)) == 0:
            return "redis://127.0.0.1:6379/0"
    return None


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    count = 1000 if quick else 5000
    bodies = [
        json.dumps(update(i, f"message {i}", chat_id=i % 50)).encode() for i in range(1, count + 1)
    ]
    asyncio.run(bare(bodies[:200]))  # warm up both paths (imports, first connections)
    asyncio.run(ours(bodies[:200], None))
    url = redis_available()
    rates: dict[str, list[float]] = {"bare": [], "sqlite": [], "redis": []}
    for _ in range(1 if quick else 3):  # alternating rounds; the median of each side
        rates["bare"].append(asyncio.run(bare(bodies)))
        rates["sqlite"].append(asyncio.run(ours(bodies, None)))
        if url:
            rates["redis"].append(asyncio.run(ours(bodies, url)))
    baseline = statistics.median(rates["bare"])
    sqlite = statistics.median(rates["sqlite"])
    rows = [
        ("bare aiohttp (updates/s)", baseline, f"{count} updates, {CONCURRENCY} at a time"),
        ("chatlane, SQLite (updates/s)", sqlite, "verify, dedupe, store, acknowledge"),
        ("SQLite vs bare", sqlite / baseline, "target >= 0.5"),
    ]
    if url:
        redis = statistics.median(rates["redis"])
        rows += [
            ("chatlane, Redis (updates/s)", redis, ""),
            ("Redis vs bare", redis / baseline, "target >= 0.5"),
        ]
    return rows


if __name__ == "__main__":
    for name, value, note in run(quick="--quick" in sys.argv):
        print(f"{name:32} {value:10.3f}  {note}")
