"""SIGTERM with a turn in flight: the turn finishes within the grace, the reply goes out, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from aiohttp import ClientSession

from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.telegram import FakeTelegram, update


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigterm_lets_the_running_turn_finish(tmp_path: Path) -> None:
    async with FakeAnthropic() as model, FakeTelegram() as telegram:
        model.script(Reply(text="Answer after a long think.", delay=1.5))
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
            "PORT": str(port),
            "CHATLANE_DATA_DIR": str(tmp_path / "data"),
            "ANTHROPIC_API_KEY": "sk-ant-shutdown-0000",
            "ANTHROPIC_BASE_URL": model.base_url,
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
            "TELEGRAM_WEBHOOK_SECRET": "s3cret",
            "PUBLIC_URL": "https://bot.example.com",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "serve",
            "--host",
            "127.0.0.1",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with ClientSession() as http:
                async with asyncio.timeout(20):
                    while True:
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                                if r.status == 200:
                                    break
                        except OSError:
                            await asyncio.sleep(0.1)
                async with http.post(
                    f"http://127.0.0.1:{port}/telegram/webhook",
                    json=update(1, "think hard"),
                    headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
                ) as response:
                    assert response.status == 200
            async with asyncio.timeout(10):
                await model.arrived.wait()  # the turn is in flight
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                code = await proc.wait()
            assert code == 0
            sent = telegram.sent()
            assert [m["text"] for m in sent] == ["Answer after a long think."]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
