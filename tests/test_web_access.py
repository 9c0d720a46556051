"""The web chat's exposure (issue 21 item 2, 12): loopback only with a real model unless
a token or channels.web.public; the client address behind a PaaS router; CSP on every
page; cross-origin POSTs refused; conversations bound to the browser; tool results as
show_tool_results says; a browser that leaves stops its turn."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import load_config
from bot.dispatch import Dispatcher, Outcome
from bot.events import AgentEvent, EventType
from bot.inbound import InboundMessage
from bot.runtime import AgentRuntime
from bot.server import create_app
from bot.storage import SQLiteStorage
from channels.web import _Waiter, _WebStream
from tests.fakes.models import FakeAnthropic, Hang
from tests.helpers import wait_for

REMOTE = {"X-Forwarded-For": "203.0.113.5"}


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path, env: dict[str, str], web: dict[str, Any] | None = None, **agent: Any
) -> AsyncIterator[TestClient[Any, Any]]:
    config = load_config(
        data={
            "agent": {"model": "anthropic/claude-sonnet-4-6", **agent},
            "channels": {"web": web or {}},
        }
    )
    runtime = AgentRuntime(config=config, storage=SQLiteStorage(tmp_path / "w.sqlite"), env=env)
    app = create_app(runtime, env=env)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    async with fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        yield fake


def env(**more: str) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": "sk-ant-web-1111", **more}


async def post(client: TestClient[Any, Any], text: str = "hi", **kwargs: Any) -> Any:
    return await client.post("/api/chat", json={"session_id": "s1", "text": text}, **kwargs)


async def test_a_real_model_answers_local_clients_only(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    async with served(tmp_path, env(PUBLIC_URL="https://bot.example")) as client:
        assert (await client.get("/api/info")).status == 200  # the router's own loopback
        assert (await client.get("/api/info", headers=REMOTE)).status == 403
        spoofed = {"X-Forwarded-For": "127.0.0.1, 203.0.113.5"}  # the router appends the truth
        assert (await client.get("/api/info", headers=spoofed)).status == 403
        refused = await post(client, headers=REMOTE)
        assert refused.status == 403 and "CHATLANE_WEB_TOKEN" in await refused.text()
    assert model.requests == []


async def test_the_token_opens_it_and_is_then_required(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    async with served(tmp_path, env(CHATLANE_WEB_TOKEN="s3cret-token")) as client:
        assert (await client.get("/api/info")).status == 401  # even from loopback
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/api/info", headers=wrong)).status == 401
        right = {"Authorization": "Bearer s3cret-token"}
        assert (await client.get("/api/info", headers=right)).status == 200


async def test_public_opens_it_to_remote_clients(tmp_path: Path, model: FakeAnthropic) -> None:
    async with served(tmp_path, env(PUBLIC_URL="https://x.example"), {"public": True}) as client:
        assert (await client.get("/api/info", headers=REMOTE)).status == 200


async def test_every_page_has_a_csp_without_remote_images(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    async with served(tmp_path, env()) as client:
        for path in ("/", "/static/chat.js", "/api/info", "/healthz", "/nowhere"):
            csp = (await client.get(path)).headers.get("Content-Security-Policy", "")
            assert "img-src 'self' data:" in csp and "default-src 'self'" in csp, path


async def test_cross_origin_posts_are_refused(tmp_path: Path, model: FakeAnthropic) -> None:
    async with served(tmp_path, env()) as client:
        evil = await post(client, headers={"Origin": "https://evil.example"})
        assert evil.status == 403
        site = await post(client, headers={"Sec-Fetch-Site": "cross-site"})
        assert site.status == 403
        plain = await client.post(
            "/api/chat",
            data=json.dumps({"session_id": "s1", "text": "hi"}),
            headers={"Content-Type": "text/plain"},
        )
        assert plain.status == 415
    assert model.requests == []


async def test_a_conversation_belongs_to_its_browser(tmp_path: Path, model: FakeAnthropic) -> None:
    async def said(client: TestClient[Any, Any], text: str) -> str:
        response = await post(client, text)
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
        return str(lines[-1]["data"]["text"])

    async with served(tmp_path, env()) as client:
        first = await post(client, "/think on")
        assert first.status == 200
        cookie = first.cookies["chatlane_browser"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and len(cookie.value) >= 32
        await first.text()
        assert await said(client, "/think") == (  # the same browser, the same chat
            "Thinking mode: on. Use /think off, /think on or /think stream."
        )
    async with served(tmp_path, env()) as other:  # another browser, the same session id
        assert (await said(other, "/think")).startswith("Thinking mode: off.")


@pytest.mark.parametrize(("setting", "sent"), [("off", None), ("summary", ""), ("full", "all")])
async def test_tool_results_in_the_stream_follow_show_tool_results(
    setting: str, sent: str | None
) -> None:
    waiter = _Waiter()
    stream = _WebStream(waiter, live=True)
    stream.tool_results = setting
    result = {"id": "t", "name": "read_file", "content": "all", "is_error": False, "display": "ok"}
    await stream.feed(AgentEvent(EventType.TOOL_RESULT, result))
    lines = [waiter.lines.get_nowait() for _ in range(waiter.lines.qsize())]
    if sent is None:
        assert lines == []
    else:
        assert lines[0] is not None and lines[0]["data"]["content"] == sent


async def test_an_abandoned_turn_stops_and_frees_its_lane(
    tmp_path: Path, model: FakeAnthropic, cleanup: contextlib.AsyncExitStack
) -> None:
    model.script(Hang(30))
    config = load_config(data={"agent": {"model": "anthropic/claude-sonnet-4-6"}})
    runtime = AgentRuntime(config=config, storage=SQLiteStorage(tmp_path / "a.sqlite"), env=env())
    dispatcher = Dispatcher(runtime)
    cleanup.push_async_callback(runtime.close)
    cleanup.push_async_callback(dispatcher.drain, 0.1)
    from channels.web import WebSink

    dispatcher.register(WebSink())
    await dispatcher.start()
    message = InboundMessage("web", "b:s", "127.0.0.1", "hi", "1")
    assert await dispatcher.submit(message) is Outcome.ACCEPTED
    await wait_for(lambda: model.requests, "the turn to reach the model")
    dispatcher.abandon(message)

    async def closed() -> bool:
        return await runtime.storage.inbox_pending_ids() == []

    await wait_for(closed, "the abandoned turn to end and its message to close", timeout=3)
    assert runtime.queue.get_global_lane().active == 0
