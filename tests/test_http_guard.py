"""The server under slow and crowding clients: bodies cut after a deadline, a cap on
bodies read at once, and a log that a flood of the same line does not drown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.config import load_config
from bot.logs import RepeatLimiter
from bot.runtime import AgentRuntime
from bot.server import create_app

STALLED = (
    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{"
)


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[TestServer]:
    timeout, most = getattr(request, "param", (0.3, 64))
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    env = {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s" * 32}
    app = create_app(runtime, env=env, body_timeout=timeout, most_body_reads=most)
    async with TestServer(app) as server:
        yield server


async def stall(server: TestServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(STALLED)
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status line, and that the server closes the connection after it."""
    data = await asyncio.wait_for(reader.read(), 3)  # read() returns at EOF only
    return int(data.split(b" ", 2)[1]), data


async def test_a_body_that_stalls_is_cut_with_408(server: TestServer) -> None:
    reader, writer = await stall(server)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, data = await answer(reader)
    assert status == 408 and b"did not arrive within 0.3 s" in data
    assert loop.time() - started < 2  # not aiohttp's 10 s lingering on top
    writer.close()


async def test_many_stalled_bodies_are_all_cut(server: TestServer) -> None:
    pairs = [await stall(server) for _ in range(40)]
    statuses = await asyncio.gather(*(answer(reader) for reader, _ in pairs))
    assert [status for status, _ in statuses] == [408] * 40
    for _, writer in pairs:
        writer.close()


@pytest.mark.parametrize("server", [(30.0, 3)], indirect=True)
async def test_reads_beyond_the_cap_are_turned_away_at_once(server: TestServer) -> None:
    held = [await stall(server) for _ in range(3)]
    await asyncio.sleep(0.05)  # the three reads have begun (they wait 30 s for their bodies)
    reader, writer = await stall(server)
    status, data = await answer(reader)
    assert status == 503 and b"too many requests" in data
    # A body that arrives in time is still read and answered once a slot is free.
    for _, held_writer in held:
        held_writer.close()
    writer.close()
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(STALLED + b"x" * 999)
    status, _ = await asyncio.wait_for(answer_keepalive(reader), 3)
    assert status == 401  # unsigned: refused by the Slack route, after its body was read
    writer.close()


async def answer_keepalive(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    line = await reader.readline()
    return int(line.split(b" ", 2)[1]), line


async def test_a_body_that_does_not_match_its_encoding_is_a_400(server: TestServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 2\r\n\r\n\x00\x00"
    )
    status, data = await answer(reader)
    assert status == 400 and b"could not be read" in data
    writer.close()


async def test_a_route_that_reads_its_own_body_is_left_to_it() -> None:
    async def own(request: web.Request) -> web.Response:
        first = await request.content.readexactly(1)
        return web.Response(text=f"got {first!r} before the rest")

    own.reads_own_body = True  # type: ignore[attr-defined]
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    app = create_app(runtime, body_timeout=0.2)
    app.router.add_post("/own", own)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /own HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
        status, _ = await asyncio.wait_for(answer_keepalive(reader), 3)
        assert status == 200
        writer.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def limited() -> Any:
    clock = Clock()
    handler = Lines()
    handler.addFilter(RepeatLimiter(per_second=5, clock=clock))
    logger = logging.getLogger("tests.flood")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler, clock
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def test_a_line_repeated_many_times_a_second_is_collapsed_with_a_count(limited: Any) -> None:
    logger, handler, clock = limited
    for n in range(10_000):
        logger.warning("bad request from %s", f"10.0.0.{n % 250}")
    logger.warning("a different line")
    assert len(handler.lines) == 6
    clock.now += 1.5
    logger.warning("bad request from %s", "10.0.0.1")
    assert handler.lines[-1] == (
        "bad request from 10.0.0.1 (9995 more like this in the last 1.5 s were not logged)"
    )
    clock.now += 1.5
    logger.warning("bad request from %s", "10.0.0.2")
    assert handler.lines[-1] == "bad request from 10.0.0.2"
    for n in range(100):  # info lines follow the traffic: never limited
        logger.info("stored message %d", n)
    assert len([line for line in handler.lines if line.startswith("stored")]) == 100


def test_setup_logging_installs_the_limiter() -> None:
    from bot.logs import setup_logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        setup_logging({"LOG_FORMAT": "text"})
        (handler,) = root.handlers
        assert any(isinstance(f, RepeatLimiter) for f in handler.filters)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before:
            root.addHandler(handler)
        root.setLevel(level)
