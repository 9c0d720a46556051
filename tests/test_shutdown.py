"""SIGTERM with a turn in flight: the turn finishes within the grace, the reply goes out, exit 0
(on SQLite and on PostgreSQL: ``storage_backend``)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.telegram import FakeTelegram, update
from tests.procs import Durable, base_env, start_serve


@pytest.mark.slow
async def test_sigterm_lets_the_running_turn_finish(
    tmp_path: Path, storage_backend: Durable
) -> None:
    async with FakeAnthropic() as model, FakeTelegram() as telegram:
        model.script(Reply(text="Answer after a long think.", delay=1.5))
        env = base_env(
            ANTHROPIC_API_KEY="sk-ant-shutdown-0000",
            ANTHROPIC_BASE_URL=model.base_url,
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_API_BASE_URL=telegram.base_url,
            TELEGRAM_WEBHOOK_SECRET="s3cret",
            PUBLIC_URL="https://bot.example.com",
            **storage_backend.env,  # SQLite, or DATABASE_URL: a PostgreSQL database
        )
        serve = await start_serve(tmp_path, env)
        try:
            async with ClientSession() as http:
                await serve.wait_ready(http)
                storage_backend.expect_health((await serve.healthz(http))[1])
                async with http.post(
                    f"{serve.url}/telegram/webhook",
                    json=update(1, "think hard"),
                    headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
                ) as response:
                    assert response.status == 200
            async with asyncio.timeout(10):
                await model.arrived.wait()  # the turn is in flight
            serve.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await serve.proc.wait()
            assert code == 0, serve.log()
            sent = telegram.sent()
            assert [m["text"] for m in sent] == ["Answer after a long think."]
            assert await storage_backend.pending() == []  # answered, and recorded so
        finally:
            if serve.proc.returncode is None:
                serve.proc.kill()
                await serve.proc.wait()
