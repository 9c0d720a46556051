"""The Redis client chatlane builds (``bot.storage.redis_client``), on a real redis-server:
a command that fits the socket's buffer goes out without ``asyncio.wait_for`` (a task per
command on Python 3.11); a larger one, and every read, keep the timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.storage.redis_client import redis_client

pytestmark = pytest.mark.redis


async def test_small_writes_skip_wait_for_large_ones_and_reads_keep_the_timeout(
    redis_server: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_client(redis_server)
    options = client.connection_pool.connection_kwargs
    options["socket_timeout"] = 0.3  # (5 s by default)
    options["retry"] = Retry(NoBackoff(), 0)  # one attempt: the timeout is seen at once
    real = asyncio.wait_for
    bounded: list[Any] = []

    async def counted(awaitable: Any, seconds: float | None) -> Any:
        bounded.append(seconds)
        return await real(awaitable, seconds)

    key, big = redis_prefix + "k", "x" * 1_000_000  # well past the 64 KiB high-water mark
    try:
        await client.set(key, "first")  # connects (the first write goes the usual way)
        monkeypatch.setattr(asyncio, "wait_for", counted)
        await client.set(key, "small")
        assert await client.get(key) == "small"
        assert bounded == []
        await client.set(key, big)
        assert bounded == [0.3]  # the write that might wait is still bounded
        assert await client.get(key) == big
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisTimeoutError):  # a read that gets no answer times out
            await client.blpop([redis_prefix + "empty"], timeout=30)
        assert asyncio.get_running_loop().time() - started < 10
    finally:
        monkeypatch.undo()
        await client.delete(key)
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:1/0", "_Connection"),
        ("rediss://127.0.0.1:1/0", "_SSLConnection"),
        ("unix:///tmp/chatlane-none.sock", "_UnixConnection"),
    ],
)
def test_the_url_still_picks_tcp_tls_or_a_unix_socket(url: str, kind: str) -> None:
    import redis.asyncio as aioredis

    pool = redis_client(url).connection_pool
    assert pool.connection_class.__name__ == kind
    base = {
        "_Connection": aioredis.Connection,
        "_SSLConnection": aioredis.SSLConnection,
        "_UnixConnection": aioredis.UnixDomainSocketConnection,
    }[kind]
    assert issubclass(pool.connection_class, base)
