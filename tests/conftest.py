"""Shared fixtures: a clean environment per test, teardown that runs when a test fails,
and real redis-server access."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.models import FakeAnthropic, FakeOpenAI
from tests.procs import Durable, durable

SCRUB = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_WEBHOOK_SECRET",
    "TELEGRAM_API_BASE_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_API_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "TWILIO_API_BASE_URL",
    "DISCORD_BOT_TOKEN",
    "DISCORD_API_BASE_URL",
    "DISCORD_GATEWAY_URL",
    "PUBLIC_URL",
    "REDIS_URL",
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "REDIS_SSL_CERT_REQS",
    "CHATLANE_CONFIG",
    "PORT",
)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test sees the developer's keys or config; each gets its own data dir and cwd."""
    for name in SCRUB:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("CHATLANE__"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATLANE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
async def cleanup() -> AsyncIterator[contextlib.AsyncExitStack]:
    """Closers registered as things are made (``cleanup.push_async_callback(x.close)``),
    run last-first after the test, passed or failed: a failing assert leaks no task."""
    async with contextlib.AsyncExitStack() as stack:
        yield stack


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server of the session's own, on a free port: tests never touch
    data that is not theirs (the machine's server on 6379 may hold someone's)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on this machine (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _port_open(port):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server did not start within 10 s")
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_prefix() -> str:
    return f"chatlane-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["sqlite", "postgres"])
async def storage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Durable]:
    """The durable state of the test's ``chatlane serve`` processes, once per backend: a
    process-level test asks for it and runs on SQLite and on a PostgreSQL database of
    its own (``tests.procs.durable``; ``indirect`` parametrizing adds ``postgres+redis``)."""
    async with durable(request.param, tmp_path) as backend:
        yield backend


@pytest.fixture
async def models(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[FakeAnthropic, FakeOpenAI]]:
    """A fake Anthropic and a fake OpenAI (transcription), the environment pointing at them."""
    async with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake-0000")
        monkeypatch.setenv("OPENAI_BASE_URL", openai.api_base)
        yield anthropic, openai
