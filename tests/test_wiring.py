"""One wiring point: serve, worker and the Python API built from config and environment."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.channel import ChannelHost, ChannelState
from bot.config import Config, load_config
from bot.runtime import AgentRuntime
from bot.server import WIRING_KEY, create_app
from bot.wiring import Wiring, wire
from bot.worker import run_worker
from tests.fakes.plugins import installed
from tests.fakes.telegram import FakeTelegram, update


class Broken:
    """A channel whose start() fails (its platform is down, say)."""

    name: ClassVar[str] = "broken"
    stops: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.sink = type("BrokenSink", (), {"name": "broken"})()

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> Broken:
        return cls()

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        return ChannelState(cls.name, True, "test")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/broken", self.page)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="broken")

    async def start(self) -> None:
        raise ConnectionError("platform down")

    async def stop(self) -> None:
        Broken.stops.append(self.name)


class Unbuildable(Broken):
    """A channel whose set-up fails (a malformed credential, say)."""

    name: ClassVar[str] = "unbuildable"

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> Broken:
        raise ValueError("bad token")


class Quiet(Broken):
    """A channel that starts and stops fine and sends nothing (no sink)."""

    name: ClassVar[str] = "quiet"
    started: ClassVar[int] = 0

    def __init__(self) -> None:
        pass

    def add_routes(self, app: web.Application) -> None:
        return None

    async def start(self) -> None:
        Quiet.started += 1


@pytest.fixture
def fake_channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Three more installed channels (in name order: broken, discord, quiet, ...)."""
    Broken.stops.clear()
    Quiet.started = 0
    plugins = {
        name: f"tests.test_wiring:{name.title()}" for name in ("broken", "unbuildable", "quiet")
    }
    with installed(monkeypatch, "chatlane.channels", plugins):
        yield


def names(channels: list[Any]) -> list[str]:
    return [c.name for c in channels]


def said(logged: list[str], line: str) -> bool:
    """``line`` was logged (a redacting handler may have appended the traceback)."""
    return any(message.startswith(line) for message in logged)


async def test_wire_builds_enabled_channels_with_credentials(fake_channels: None) -> None:
    wiring = wire(load_config(), {})
    assert isinstance(wiring, Wiring)
    # telegram, slack, sms, discord: no credentials; unbuildable: raised while set up
    assert names(wiring.channels) == ["broken", "quiet", "web"]  # in name order
    assert wiring.host.dispatcher is wiring.dispatcher and wiring.host.runtime is wiring.runtime
    assert "broken" in wiring.dispatcher.sinks and "quiet" not in wiring.dispatcher.sinks
    assert wiring.dispatcher.process and wiring.lanes is None
    assert {"read_file", "list_files", "current_time"} <= set(wiring.tools.names())
    assert wiring.models.demo_reason is not None  # no keys: the offline demo model

    assert names(wire(load_config(), {}, only={"quiet", "web"}).channels) == ["quiet", "web"]
    assert wire(load_config(), {}, only=()).channels == []
    senders = wire(load_config(), {}, sinks_only=True).channels
    assert "quiet" not in names(senders) and "broken" in names(senders)
    off = load_config(data={"channels": {"broken": {"enabled": False}}})
    assert "broken" not in names(wire(off, {}).channels)


async def test_wire_uses_the_given_runtime_and_its_config() -> None:
    config = load_config(data={"server": {"process_inbox": False}})
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True)
    wiring = wire(load_config(), {}, runtime=runtime, sweep_every=2.5)
    assert wiring.runtime is runtime and wiring.config is config
    assert not wiring.dispatcher.process and wiring.dispatcher.sweep_every == 2.5
    assert wire(config, {}, process=True).dispatcher.process
    by_hand = wire(config, {}, only=())  # as chatlane chat wires its terminal
    assert by_hand.channels == []
    by_hand.add(Broken())
    assert names(by_hand.channels) == ["broken"] and "broken" in by_hand.dispatcher.sinks


async def test_serve_is_wired_and_a_channel_that_fails_stays_off(
    fake_channels: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(env={})
    wiring = app[WIRING_KEY]
    async with TestClient(TestServer(app)) as client:
        assert names(wiring.started) == ["quiet", "web"] and Quiet.started == 1
        assert (await client.get("/broken")).status == 200  # its routes were added all the same
        health = await client.get("/healthz")
        assert health.status == 200
        response = await client.post("/api/chat", json={"session_id": "s", "text": "still here?"})
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
        assert "You said: still here?" in lines[-1]["data"]["text"]
    assert Broken.stops == ["quiet"]  # broken never started, so it is never stopped
    assert wiring.started == []
    assert wiring.host.draining and wiring.dispatcher.draining
    logged = [r.getMessage() for r in caplog.records]
    assert said(logged, "channel broken failed to start; it stays off")
    assert said(logged, "channel unbuildable could not be set up; it stays off")
    assert any(m.startswith("chatlane serving channels: quiet, web;") for m in logged)


async def test_worker_is_wired_and_answers_with_the_channels_that_started(
    fake_channels: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with FakeTelegram() as telegram:
        env = {"TELEGRAM_BOT_TOKEN": telegram.token, "TELEGRAM_API_BASE_URL": telegram.base_url}
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(load_config(), env, stop))
        try:
            telegram.updates.put_nowait(update(5, "polled for the worker"))
            sent = await telegram.wait_for("sendMessage")
            assert "You said: polled for the worker" in sent[0]["text"]
        finally:
            stop.set()
            assert await worker == 0
    logged = [r.getMessage() for r in caplog.records]
    assert said(logged, "channel broken failed to start; it stays off")
    # the worker keeps only channels that send replies: quiet has no sink
    answering = [m for m in logged if m.startswith("chatlane worker answering for:")]
    assert answering and "telegram" in answering[0] and "quiet" not in answering[0]
    assert "broken" not in answering[0] and Broken.stops == []


@pytest.mark.redis
async def test_redis_url_puts_storage_and_lanes_in_redis(redis_server: str, tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    from bot.queuing.redis_backend import RedisLanes
    from bot.storage.redis import RedisStorage

    url = redis_server.rsplit("/", 1)[0] + "/3"  # a database of its own
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    data = tmp_path / "own-data"
    env = {"REDIS_URL": url, "CHATLANE_DATA_DIR": str(data)}
    try:
        runtime = AgentRuntime(env=env, demo_when_unconfigured=True)
        assert isinstance(runtime.storage, RedisStorage)
        assert isinstance(runtime.queue.redis, RedisLanes)
        assert "You said: remember me" in await runtime.ask("chat-r", "remember me")
        await runtime.close()
        stored = [key.decode() for key in await client.keys("*")]
        assert any("chat-r" in key for key in stored), stored
        assert not data.exists()  # nothing went to a SQLite file

        wiring = wire(load_config(), env)
        assert isinstance(wiring.storage, RedisStorage) and isinstance(wiring.lanes, RedisLanes)
        await wiring.start()
        assert await wiring.lanes.ping() and await wiring.storage.ping()
        await wiring.stop(grace=1)
    finally:
        await client.flushdb()
        await client.aclose()
