"""Memory: a ``chatlane serve`` process after start-up and after its first turn, and what
idle chats leave behind.

Start-up and first turn: a real ``chatlane serve`` process on Anthropic and Telegram
(webhook mode), both faked in this process; VmRSS once /healthz answers, then once the
first update is answered. Targets: first turn <= 150 MB.

Idle chats: the dispatcher, runtime and SQLite storage in this process, with a fake
Anthropic server in it too. Each chat sends one message, is answered and is never heard
from again (the access policy's clock moves 100 ms a chat, so a chat is a minute quiet
600 chats later). After enough chats to fill every bounded cache, VmRSS is read (after a
garbage collection and ``malloc_trim``, so freed memory the allocator keeps does not
count), more chats run, and VmRSS is read again; the growth is scaled to 10,000 chats.
Target: <= 5 MB. Absolute megabytes, not ratios: memory is not noisy like time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import ClientSession

from bot.access import AccessPolicy
from bot.channel import Reply as Answer
from bot.channel import Sink
from bot.config import load_config
from bot.dispatch import Dispatcher
from bot.inbound import InboundMessage
from bot.runtime import AgentRuntime
from bot.storage import SQLiteStorage
from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.telegram import FakeTelegram, update

SECRET = "bench-s3cret"
BATCH = 100  # chats in flight at once
KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc: Linux only")


def settled_rss_mb() -> float:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: a little noisier
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def _answer(request: Any) -> Reply:
    return Reply(text=f"answer to {request.last_user_text}", chunks=2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_figures() -> tuple[float, float]:
    """(RSS after start-up, RSS after the first turn) of a real ``chatlane serve``, MB."""
    async with FakeAnthropic() as model, FakeTelegram() as telegram:
        model.default = _answer
        with tempfile.TemporaryDirectory() as home:
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if k in KEEP}
            env.update(
                ANTHROPIC_API_KEY="sk-ant-bench-0000",
                ANTHROPIC_BASE_URL=model.base_url,
                TELEGRAM_BOT_TOKEN=telegram.token,
                TELEGRAM_API_BASE_URL=telegram.base_url,
                TELEGRAM_WEBHOOK_SECRET=SECRET,
                PUBLIC_URL="https://bot.example.com",
                CHATLANE_DATA_DIR=str(Path(home) / "data"),
                PORT=str(port),
            )
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"),
                cwd=home,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                async with ClientSession() as http:
                    url = f"http://127.0.0.1:{port}"
                    async with asyncio.timeout(60):
                        while True:
                            if proc.returncode is not None:
                                raise RuntimeError(f"chatlane serve exited {proc.returncode}")
                            try:
                                async with http.get(f"{url}/healthz") as response:
                                    if response.status == 200:
                                        break
                            except OSError:
                                pass
                            await asyncio.sleep(0.05)
                    await asyncio.sleep(0.5)  # start-up's last tasks (webhook registration)
                    started = rss_mb(proc.pid)
                    async with http.post(
                        f"{url}/telegram/webhook",
                        json=update(1, "hello"),
                        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                    ) as response:
                        if response.status != 200:
                            raise RuntimeError(f"the webhook answered {response.status}")
                    await telegram.wait_for("sendMessage", 1, seconds=60)
                    await asyncio.sleep(0.5)
                    first_turn = rss_mb(proc.pid)
            finally:
                proc.terminate()
                await proc.wait()
    return started, first_turn


class _Sink(Sink):
    """Where replies go: only counted, so the bench itself holds nothing per chat."""

    name = "bench"

    def __init__(self) -> None:
        self.answered = 0
        self.notices = 0
        self.changed = asyncio.Event()

    def render(self, reply: Answer) -> list[Any]:
        return [reply.markdown]

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        self.answered += 1
        self.changed.set()

    async def notify(self, message: InboundMessage, text: str) -> None:
        self.notices += 1


async def idle_growth(warm: int, chats: int) -> tuple[float, float]:
    """(RSS once the caches are full, growth per 10,000 more idle chats), MB."""
    now = [0.0]
    async with FakeAnthropic() as model:
        model.default = _answer
        os.environ["ANTHROPIC_BASE_URL"] = model.base_url  # the SDK reads its own variable
        os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-0000"
        with tempfile.TemporaryDirectory() as data:
            config = load_config(data={})
            runtime = AgentRuntime(
                config=config, storage=SQLiteStorage(Path(data) / "bench.sqlite")
            )
            dispatcher = Dispatcher(runtime, access=AccessPolicy(config, clock=lambda: now[0]))
            sink = _Sink()
            dispatcher.register(sink)
            await dispatcher.start()

            async def chats_from(first: int, count: int) -> None:
                for start in range(first, first + count, BATCH):
                    end = min(start + BATCH, first + count)
                    goal = sink.answered + end - start
                    for n in range(start, end):
                        now[0] += 0.1
                        message = InboundMessage("bench", f"chat-{n}", f"user-{n}", "hi", f"m{n}")
                        await dispatcher.submit(message)
                    async with asyncio.timeout(120):
                        while sink.answered < goal:
                            sink.changed.clear()
                            await sink.changed.wait()
                    model.requests.clear()  # the fake's record of requests, not ours

            await chats_from(0, warm)
            await asyncio.sleep(0.2)
            before = settled_rss_mb()
            await chats_from(warm, chats)
            await asyncio.sleep(0.2)
            after = settled_rss_mb()
            await dispatcher.drain(5)
            await runtime.close()
    return before, (after - before) * 10_000 / chats


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    started, first_turn = asyncio.run(serve_figures())
    warm, chats = (3_000, 2_000) if quick else (5_000, 10_000)
    began = time.perf_counter()
    held, growth = asyncio.run(idle_growth(warm, chats))
    elapsed = time.perf_counter() - began
    return [
        ("serve RSS after start-up (MB)", started, "Anthropic + Telegram webhook, idle"),
        ("serve RSS after the first turn (MB)", first_turn, "target <= 150"),
        (
            f"in-process RSS after {warm:,} idle chats (MB)",
            held,
            "dispatcher, runtime, SQLite, fake model; caches full",
        ),
        (
            "growth per 10,000 idle chats (MB)",
            growth,
            f"target <= 5; measured over {chats:,} more chats ({elapsed:.0f} s)",
        ),
    ]


if __name__ == "__main__":
    for name, value, note in run(quick="--quick" in sys.argv):
        print(f"{name:44} {value:10.1f}  {note}")
