"""Two serve processes on one Redis: one chat's messages alternate between them."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession

from tests.fakes.models import FakeAnthropic, Recorded, Reply
from tests.fakes.telegram import FakeTelegram, update
from tests.procs import base_env, start_serve

pytestmark = pytest.mark.redis


async def test_alternating_processes_never_overlap_or_repeat(
    tmp_path: Path, redis_server: str
) -> None:
    spans: list[tuple[float, float]] = []

    def slow(request: Recorded) -> Reply:
        started = time.monotonic()
        spans.append((started, started + 0.3))
        return Reply(text=f"answer to {request.last_user_text}", delay=0.3)

    prefix_db = redis_server.rsplit("/", 1)[0] + "/5"  # a database of its own
    flush = aioredis.Redis.from_url(prefix_db)
    await flush.flushdb()
    async with FakeAnthropic() as model, FakeTelegram() as telegram:
        model.default = slow
        servers = []
        for index in range(2):
            env = base_env(
                CHATLANE_DATA_DIR=str(tmp_path / f"data{index}"),
                REDIS_URL=prefix_db,
                ANTHROPIC_API_KEY="sk-ant-scale-0000",
                ANTHROPIC_BASE_URL=model.base_url,
                TELEGRAM_BOT_TOKEN=telegram.token,
                TELEGRAM_API_BASE_URL=telegram.base_url,
                PUBLIC_URL="https://bot.example.com",
                CHATLANE__AGENT__QUEUING__MODE="followup",
            )
            servers.append(await start_serve(tmp_path, env, name=f"serve{index}"))
        ports = [server.port for server in servers]
        try:
            async with ClientSession() as http:
                for server in servers:
                    await server.wait_ready(http)
                posts: list[Any] = []
                for n in range(1, 7):
                    body = update(n, f"message {n}")
                    port = ports[n % 2]
                    posts.append(http.post(f"http://127.0.0.1:{port}/telegram/webhook", json=body))
                    # a redelivery of every message, to the other process
                    posts.append(
                        http.post(
                            f"http://127.0.0.1:{ports[(n + 1) % 2]}/telegram/webhook", json=body
                        )
                    )
                for response in await asyncio.gather(*posts):
                    assert response.status == 200
                    response.release()
            sent = await telegram.wait_for("sendMessage", 6, seconds=30)
            async with asyncio.timeout(10):  # every stored message closed: nothing more to send
                while await flush.zcard("chatlane:inbox:pending"):
                    await asyncio.sleep(0.05)
            texts = sorted(m["text"] for m in telegram.sent())
            assert texts == sorted(f"answer to message {n}" for n in range(1, 7)), texts
            assert len(sent) == 6
            ordered = sorted(spans)
            for (_, end), (start, _) in itertools.pairwise(ordered):
                assert start >= end - 0.01, "two turns of one chat overlapped"
        finally:
            await asyncio.gather(*(server.stop() for server in servers))
            await flush.flushdb()
            await flush.aclose()
