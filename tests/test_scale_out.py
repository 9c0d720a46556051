"""Serve processes on one Redis: one chat's messages alternate between two of them;
under overload, two or three answer a burst with redeliveries once each, in order."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession

from tests.fakes.models import FakeAnthropic, Recorded, Reply
from tests.fakes.telegram import FakeTelegram, update
from tests.helpers import wait_for
from tests.procs import Serve, base_env, start_serve

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def test_alternating_processes_never_overlap_or_repeat(
    tmp_path: Path, redis_server: str, cleanup: contextlib.AsyncExitStack
) -> None:
    spans: list[tuple[float, float]] = []

    def slow(request: Recorded) -> Reply:
        started = time.monotonic()
        spans.append((started, started + 0.3))
        return Reply(text=f"answer to {request.last_user_text}", delay=0.3)

    prefix_db = redis_server.rsplit("/", 1)[0] + "/5"  # a database of its own
    flush = aioredis.Redis.from_url(prefix_db)
    cleanup.push_async_callback(flush.aclose)
    cleanup.push_async_callback(flush.flushdb)
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
                TELEGRAM_WEBHOOK_SECRET=SECRET,
                PUBLIC_URL="https://bot.example.com",
                CHATLANE__AGENT__QUEUING__MODE="followup",
            )
            servers.append(await start_serve(tmp_path, env, name=f"serve{index}"))
            cleanup.push_async_callback(servers[-1].stop)
        ports = [server.port for server in servers]
        try:
            async with ClientSession() as http:
                for server in servers:
                    await server.wait_ready(http)
                posts: list[Any] = []
                for n in range(1, 7):
                    body = update(n, f"message {n}")
                    port = ports[n % 2]
                    url = f"http://127.0.0.1:{port}/telegram/webhook"
                    posts.append(http.post(url, json=body, headers=SIGNED))
                    # a redelivery of every message, to the other process
                    other = f"http://127.0.0.1:{ports[(n + 1) % 2]}/telegram/webhook"
                    posts.append(http.post(other, json=body, headers=SIGNED))
                for response in await asyncio.gather(*posts):
                    assert response.status == 200
                    response.release()
            sent = await telegram.wait_for("sendMessage", 6, seconds=30)

            async def closed() -> bool:
                return not await flush.zcard("chatlane:inbox:pending")

            await wait_for(closed, "every stored message to be closed: nothing more to send", 10)
            texts = sorted(m["text"] for m in telegram.sent())
            assert texts == sorted(f"answer to message {n}" for n in range(1, 7)), texts
            assert len(sent) == 6
            ordered = sorted(spans)
            for (_, end), (start, _) in itertools.pairwise(ordered):
                assert start >= end - 0.01, "two turns of one chat overlapped"
        finally:
            await asyncio.gather(*(server.stop() for server in servers))


SECRET = "scale-s3cret"
SIGNED = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
CHATS = 60
PER_CHAT = 4
GLOBAL_CAP = 4
# A turn's model call: 240 turns at 4 at once keep a backlog for at least 12 s, longer than
# a serve's sweep interval (10 s), so every process's sweep meets messages others hold.
MODEL_SECONDS = 0.2
LOCK = "scale-out-test:lock"
PENDING = "chatlane:inbox:pending"


@contextlib.asynccontextmanager
async def database_of_its_own(redis_server: str) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    """A database of the Redis server no concurrent run of this test uses (people share a
    machine's redis-server), empty; flushed afterwards."""
    base = redis_server.rsplit("/", 1)[0]
    for number in range(6, 16):
        url = f"{base}/{number}"
        client = aioredis.Redis.from_url(url)
        if await client.set(LOCK, "1", nx=True, ex=300):
            async with client.pipeline(transaction=True) as empty:
                await empty.flushdb().set(LOCK, "1", ex=300).execute()
            break
        await client.aclose()
    else:
        pytest.skip("every redis database from 6 to 15 is taken by another run")
    try:
        yield url, client
    finally:
        await client.flushdb()
        await client.aclose()


class OutOfOrder(AssertionError):
    """A chat's replies came in another order than its messages."""


def chat_update(chat: int, k: int) -> dict[str, Any]:
    n = chat * PER_CHAT + k + 1  # the update id: unique, and the platform's dedupe key
    return update(n, f"chat {chat} message {k}", chat_id=2000 + chat, user_id=2000 + chat)


async def post_until_taken(http: ClientSession, serve: Serve, body: dict[str, Any]) -> int:
    """POST an update as Telegram does: a 503 is delivered again until it is taken."""
    while True:
        async with http.post(
            f"{serve.url}/telegram/webhook",
            json=body,
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        ) as response:
            if response.status != 503:
                return response.status
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("processes", [2, 3])
async def test_processes_under_overload_answer_every_message_once_in_order(
    tmp_path: Path, redis_server: str, cleanup: contextlib.AsyncExitStack, processes: int
) -> None:
    calls: list[float] = []

    def echo(request: Recorded) -> Reply:
        calls.append(time.monotonic())
        return Reply(text=f"answer to {request.last_user_text}", delay=MODEL_SECONDS)

    shuffle = random.Random(processes)
    expected = {
        chat: [f"answer to chat {chat} message {k}" for k in range(PER_CHAT)]
        for chat in range(CHATS)
    }
    wanted = {text for texts in expected.values() for text in texts}
    async with (
        database_of_its_own(redis_server) as (db, redis),
        FakeAnthropic() as model,
        FakeTelegram() as telegram,
    ):
        model.default = echo
        servers: list[Serve] = []
        for index in range(processes):
            env = base_env(
                CHATLANE_DATA_DIR=str(tmp_path / f"data{index}"),
                REDIS_URL=db,
                ANTHROPIC_API_KEY="sk-ant-scale-0000",
                ANTHROPIC_BASE_URL=model.base_url,
                TELEGRAM_BOT_TOKEN=telegram.token,
                TELEGRAM_API_BASE_URL=telegram.base_url_for(f"p{index}"),
                TELEGRAM_WEBHOOK_SECRET=SECRET,
                PUBLIC_URL="https://bot.example.com",
                CHATLANE__AGENT__QUEUING__MODE="followup",
                CHATLANE__AGENT__QUEUING__MAX_CONCURRENT_GLOBAL=str(GLOBAL_CAP),
                CHATLANE__CHANNELS__TELEGRAM__RATE_LIMIT_PER_MINUTE="0",
            )
            servers.append(await start_serve(tmp_path, env, name=f"p{index}"))
            cleanup.push_async_callback(servers[-1].stop)

        async def one_chat(http: ClientSession, chat: int) -> list[int]:
            """A chat's messages in order, each sent once its predecessor was taken; about
            half are delivered twice at once, to two processes (the platform retrying)."""
            statuses = []
            for k in range(PER_CHAT):
                body = chat_update(chat, k)
                first, second = shuffle.sample(servers, 2)
                if shuffle.random() < 0.5:
                    again = asyncio.ensure_future(post_until_taken(http, second, body))
                    statuses.append(await post_until_taken(http, first, body))
                    statuses.append(await again)
                else:
                    statuses.append(await post_until_taken(http, first, body))
            return statuses

        try:
            async with ClientSession() as http:
                for server in servers:
                    await server.wait_ready(http)
                started = time.monotonic()
                statuses = await asyncio.gather(*(one_chat(http, c) for c in range(CHATS)))
                offered = time.monotonic() - started
            assert all(200 <= s < 300 for chat in statuses for s in chat), statuses

            async def all_answered() -> bool:
                answered = wanted <= {m["text"] for m in telegram.sent()}
                return answered and not await redis.zcard(PENDING)

            # A timeout passes on: the assertions below say what is missing.
            with contextlib.suppress(AssertionError):
                await wait_for(all_answered, "every message answered, none pending", 60)
            answered = time.monotonic() - started
            left = await redis.zcard(PENDING)
            in_time = {m["text"] for m in telegram.sent()}  # not what goes out while stopping
        finally:
            await asyncio.gather(*(server.stop() for server in servers))
    logs = "\n".join(f"--- p{i}\n{s.log()[-4000:]}" for i, s in enumerate(servers))
    for index, server in enumerate(servers):
        log = server.log()
        assert "Traceback" not in log, f"p{index}:\n{log[-6000:]}"
        assert "Too many connections" not in log, f"p{index}:\n{log[-6000:]}"
        assert server.proc.returncode == 0, f"p{index}:\n{log[-6000:]}"
    sends = [c for c in telegram.calls if c.method == "sendMessage"]
    counts = Counter(c.params["text"] for c in sends)
    twice = {
        text: [c.via for c in sends if c.params["text"] == text]
        for text, count in counts.items()
        if count > 1
    }
    assert not twice, f"answered more than once (text: senders): {twice}\n{logs}"
    assert wanted <= in_time, f"not answered in time: {sorted(wanted - in_time)[:20]}\n{logs}"
    assert set(counts) == wanted, f"unexpected sends: {sorted(set(counts) - wanted)[:20]}"
    assert left == 0, f"{left} message(s) still stored as pending\n{logs}"
    senders = Counter(c.via for c in sends)
    print(
        f"{processes} processes: {len(wanted)} messages offered in {offered:.1f}s, "
        f"answered in {answered:.1f}s, sends per process {dict(senders)}"
    )
    assert set(senders) == {f"p{i}" for i in range(processes)}, senders
    # A model call holds a global slot for at least its delay: never more than the cap at once.
    ends = [start + MODEL_SECONDS for start in calls]  # calls are in the order they came
    at_once = max(n + 1 - bisect.bisect_right(ends, start) for n, start in enumerate(calls))
    assert at_once <= GLOBAL_CAP, f"{at_once} model calls at once, over the cap of {GLOBAL_CAP}"
    disordered = {
        chat: got
        for chat, texts in expected.items()
        if (got := [c.params["text"] for c in sends if c.params["chat_id"] == 2000 + chat]) != texts
    }
    if disordered:
        raise OutOfOrder(f"{len(disordered)} chat(s) answered out of order: {disordered}")
