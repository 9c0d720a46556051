"""Crashes with real processes: kill -9 in the middle of a burst, the store gone mid-run.

The kill -9 test runs on each durable store (``storage_backend``): SQLite,
PostgreSQL, and PostgreSQL with lanes in Redis; the outage test takes Redis or
PostgreSQL away from a running serve and brings it back.

What "nothing lost, nothing twice" means here, precisely: every message whose
webhook was answered 200 is answered after a restart, and a redelivery of it
is never answered again. One window stays: a reply part that reached the
platform in the instant between its send and the record that it was sent
(one commit, made the moment the platform's answer is read) goes out
again after a kill -9. That is at most one part per chat delivering at the
kill (each chat answers one message at a time), and the test counts it
rather than hides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientConnectionError, ClientSession

import tests.pg
from tests.fakes.models import FakeAnthropic, Recorded, Reply
from tests.fakes.telegram import FakeTelegram, update
from tests.helpers import wait_for, wait_for_event
from tests.procs import (
    DURABLE_KINDS,
    Durable,
    RedisProcess,
    Serve,
    base_env,
    durable,
    free_port,
    start_serve,
)

SECRET = "crash-s3cret"
CHATS = 20
MESSAGES = 200
CONCURRENCY = 10  # agent.queuing.max_concurrent_global

pytestmark = pytest.mark.slow


def telegram_env(
    model: FakeAnthropic, telegram: FakeTelegram, via: str = "", **extra: str
) -> dict[str, str]:
    return base_env(
        ANTHROPIC_API_KEY="sk-ant-crash-0000",
        ANTHROPIC_BASE_URL=model.base_url,
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE_URL=telegram.base_url_for(via) if via else telegram.base_url,
        TELEGRAM_WEBHOOK_SECRET=SECRET,
        PUBLIC_URL="https://bot.example.com",
        CHATLANE__AGENT__QUEUING__MODE="followup",
        CHATLANE__AGENT__QUEUING__MAX_CONCURRENT_GLOBAL=str(CONCURRENCY),
        **extra,
    )


def burst_update(n: int) -> dict[str, Any]:
    chat = 1000 + n % CHATS
    return update(n, f"message {n}", chat_id=chat, user_id=chat)


async def deliver(http: ClientSession, serve: Serve, n: int) -> int | None:
    """POST one update as Telegram does; its status, or None when the process died."""
    try:
        async with http.post(
            f"{serve.url}/telegram/webhook",
            json=burst_update(n),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        ) as response:
            return response.status
    except (OSError, ClientConnectionError):  # refused, reset, or cut off mid-answer
        return None


def answer(request: Recorded) -> Reply:
    return Reply(text=f"answer to {request.last_user_text}", delay=0.03)


@pytest.mark.parametrize("storage_backend", DURABLE_KINDS, indirect=True)
async def test_kill_9_during_a_burst_then_restart_answers_everything_once(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, storage_backend: Durable
) -> None:
    stored = storage_backend.env  # DATABASE_URL (and REDIS_URL), or nothing: SQLite
    async with FakeAnthropic() as model, FakeTelegram() as telegram:
        model.default = answer
        env = telegram_env(model, telegram, "first", **stored)
        first = await start_serve(tmp_path, env, name="first")
        cleanup.push_async_callback(first.stop)  # killed below, unless an assert fails first
        async with ClientSession() as http:
            await first.wait_ready(http)
            storage_backend.expect_health((await first.healthz(http))[1])
            posts = [asyncio.ensure_future(deliver(http, first, n)) for n in range(MESSAGES)]
            await telegram.wait_for("sendMessage", 40, seconds=60)
            first.proc.send_signal(signal.SIGKILL)
            await first.proc.wait()
            statuses = await asyncio.gather(*posts)
            acknowledged = {n for n, status in enumerate(statuses) if status == 200}
            assert len(telegram.sent()) < MESSAGES, "the kill came after the burst was answered"
            assert len(acknowledged) >= 40
            # Shared storage: the killed process's claims (and lane tickets) hold until
            # their lease runs out, 30 s after its last renewal; here they run out now.
            if storage_backend.env:
                assert await storage_backend.lapse_leases() > 0  # it held messages

            env = telegram_env(model, telegram, "second", **stored)
            second = await start_serve(tmp_path, env, name="second")
            try:
                await second.wait_ready(http)
                # Telegram redelivers what was not acknowledged; we redeliver everything,
                # acknowledged or not, to show a stored message is never taken twice.
                again = await asyncio.gather(*(deliver(http, second, n) for n in range(MESSAGES)))
                assert set(again) == {200}, second.log()
                expected = {f"answer to message {n}" for n in range(MESSAGES)}
                await wait_for(
                    lambda: expected <= {m["text"] for m in telegram.sent()},
                    "every message to be answered after the restart",
                    60,
                    changed=telegram.changed,
                )
            finally:
                await second.stop()
        assert second.proc.returncode == 0, second.log()

        assert await storage_backend.pending() == []  # nothing left to answer later
        sends = [(c.params["text"], c.via) for c in telegram.calls if c.method == "sendMessage"]
        counts = Counter(text for text, _ in sends)
        assert set(counts) == expected
        twice = {text for text, count in counts.items() if count > 1}
        # Only a part that went out in the instant before the kill may go out again:
        # once by the killed process, once by the next; at most one per chat.
        assert len(twice) <= CHATS, twice
        for text in twice:
            senders = sorted(via for t, via in sends if t == text)
            assert senders == ["first", "second"], (text, senders, second.log()[-3000:])
        by_first = {text for text, via in sends if via == "first"}
        assert all(via == "second" for text, via in sends if text not in by_first | twice)
        print(f"kill -9 burst: {len(twice)} part(s) of {MESSAGES} sent twice (the send window)")


@dataclass
class Outage:
    """A store of the test's own that goes away mid-run and comes back: ``env`` points a
    serve at it; ``field`` is the /healthz entry that says it is unreachable."""

    env: dict[str, str]
    backend: str
    field: str
    stop: Callable[[], Awaitable[None]]
    start: Callable[[], Awaitable[None]]
    durable: Durable | None = None


@contextlib.asynccontextmanager
async def outage_of(kind: str, tmp_path: Path) -> AsyncIterator[Outage]:
    """``redis``: a redis-server stopped and started again on its port, with its data.
    ``postgres``: a database of the test's own behind a TCP proxy (``tests.pg.Proxy``)
    that cuts every connection and refuses new ones, then lets them through again: to
    the serve, PostgreSQL stopped and restarted."""
    if kind == "redis":
        redis = RedisProcess(tmp_path / "redis", free_port())
        redis.directory.mkdir()
        await redis.start()
        try:
            yield Outage({"REDIS_URL": redis.url}, "RedisStorage", "redis", redis.stop, redis.start)
        finally:
            await redis.stop()
        return
    async with durable("postgres", tmp_path) as database:
        proxy = tests.pg.Proxy()
        await proxy.start()
        try:
            env = {"DATABASE_URL": proxy.url(database.env["DATABASE_URL"])}
            yield Outage(env, "PostgresStorage", "storage", proxy.stop, proxy.start, database)
        finally:
            await proxy.stop()


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis), "postgres"])
async def test_the_store_gone_mid_run_loses_nothing(tmp_path: Path, kind: str) -> None:
    arrived = asyncio.Event()
    delay = {"seconds": 0.02}

    def reply(request: Recorded) -> Reply:
        arrived.set()
        return Reply(text=f"answer to {request.last_user_text}", delay=delay["seconds"])

    async with (
        outage_of(kind, tmp_path) as store,
        FakeAnthropic() as model,
        FakeTelegram() as telegram,
    ):
        model.default = reply
        serve = await start_serve(tmp_path, telegram_env(model, telegram, **store.env))
        try:
            async with ClientSession() as http:
                await serve.wait_ready(http)
                status, health = await serve.healthz(http)
                assert (status, health[store.field], health["backend"]) == (
                    200,
                    "ok",
                    store.backend,
                )
                assert {await deliver(http, serve, n) for n in range(4)} == {200}
                await telegram.wait_for("sendMessage", 4, seconds=30)

                # Turns in flight when the store goes away, for longer than a client
                # retries: they fail, and are answered once it is back.
                delay["seconds"] = 1.0
                arrived.clear()
                assert {await deliver(http, serve, n) for n in range(4, 8)} == {200}
                await wait_for_event(arrived, "a turn to reach the model", 10)
                await store.stop()
                status, health = await serve.healthz(http)
                assert (status, health["status"], health[store.field]) == (
                    503,
                    "unavailable",
                    "unreachable",
                )
                # A platform's delivery now cannot be stored: 503, so it comes again.
                began = time.monotonic()
                assert await deliver(http, serve, 8) == 503
                refused_in = time.monotonic() - began
                await wait_for(  # the outage outlasts the client's retries
                    lambda: "will retry" in serve.log(), "a turn to fail and be retried", 30
                )
                # Within the client's retry window (PostgreSQL: 5 s), not twice that.
                assert refused_in < 8, refused_in
                delay["seconds"] = 0.02
                await store.start()
                if store.durable is not None:
                    # A turn that failed while the store was down could not release its
                    # claim: it lapses CLAIM_TTL (30 s) after it was taken; here, now.
                    await store.durable.lapse_leases()
                assert await deliver(http, serve, 8) == 200  # the redelivery
                assert await deliver(http, serve, 5) == 200  # a duplicate, ignored
                expected = {f"answer to message {n}" for n in range(9)}
                await wait_for(
                    lambda: expected <= {m["text"] for m in telegram.sent()},
                    "every message to be answered once the store is back",
                    60,
                    changed=telegram.changed,
                )
                status, health = await serve.healthz(http)
                assert (status, health[store.field]) == (200, "ok")
        finally:
            await serve.stop()
        assert serve.proc.returncode == 0, serve.log()
        counts = Counter(m["text"] for m in telegram.sent())
        assert set(counts) == expected
        assert set(counts.values()) == {1}, counts
        assert "Traceback" not in serve.log(), serve.log()
        if store.durable is not None:
            assert await store.durable.pending() == []
        print(f"{kind} outage: a delivery refused with 503 in {refused_in:.1f} s")
