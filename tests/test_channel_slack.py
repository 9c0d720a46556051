"""Slack end to end: a signed Events API request to the recorded chat.postMessage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from channels.slack import SlackChannel
from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.slack import BOT_USER, SIGNING_SECRET, TOKEN, FakeSlack, event, signed


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def client_for(fake: FakeSlack, data: dict[str, Any] | None = None) -> TestClient[Any, Any]:
    env = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_BASE_URL": fake.base_url,
    }
    runtime = AgentRuntime(config=load_config(data=data or {}), demo_when_unconfigured=True)
    client = TestClient(TestServer(create_app(runtime, env=env)))
    await client.start_server()
    return client


async def send(client: TestClient[Any, Any], payload: dict[str, Any], **kwargs: Any) -> Any:
    body, headers = signed(payload, **kwargs)
    return await client.post("/slack/events", data=body, headers=headers)


async def test_url_verification(slack: FakeSlack) -> None:
    client = await client_for(slack)
    try:
        response = await send(client, {"type": "url_verification", "challenge": "abc123"})
        assert response.status == 200 and (await response.json())["challenge"] == "abc123"
    finally:
        await client.close()


async def test_mention_is_answered_in_its_thread(slack: FakeSlack) -> None:
    client = await client_for(slack)
    try:
        response = await send(client, event("Ev1", "app_mention", f"<@{BOT_USER}> hi there"))
        assert response.status == 200
        posted = await slack.wait_for(1)
        assert posted[0]["channel"] == "C1"
        assert posted[0]["thread_ts"] == "1700000000.000100"
        assert "You said: hi there" in posted[0]["text"]
        methods = [m for m, _ in slack.calls]
        assert "auth.test" in methods and "reactions.add" in methods
    finally:
        await client.close()


async def test_direct_message_is_answered_in_the_dm(slack: FakeSlack) -> None:
    client = await client_for(slack)
    try:
        await send(client, event("Ev2", "message", "hello", channel="D9", channel_type="im"))
        posted = await slack.wait_for(1)
        assert posted[0]["channel"] == "D9" and not posted[0].get("thread_ts")
    finally:
        await client.close()


@pytest.mark.parametrize(
    "payload",
    [
        event("Ev3", "message", "mine", channel_type="im", bot_id="B1"),
        event("Ev4", "message", "edit", channel_type="im", subtype="message_changed"),
        event("Ev5", "message", "channel chatter", channel_type="channel"),
        event("Ev6", "app_mention", "from myself", user=BOT_USER),
    ],
)
async def test_ignored_events(slack: FakeSlack, payload: dict[str, Any]) -> None:
    client = await client_for(slack)
    try:
        assert (await send(client, payload)).status == 200
        storage = client.app[HOST_KEY].runtime.storage
        assert await storage.inbox_pending() == []
        assert slack.posted() == []
    finally:
        await client.close()


@pytest.mark.parametrize("case", ["forged", "stale", "missing"])
async def test_bad_signatures_are_401(slack: FakeSlack, case: str) -> None:
    client = await client_for(slack)
    try:
        payload = event("Ev7", "app_mention", "hi")
        if case == "missing":
            response = await client.post("/slack/events", json=payload)
        elif case == "forged":
            response = await send(client, payload, secret="wrong-secret")
        else:
            response = await send(client, payload, age=6 * 60)
        assert response.status == 401
        assert await client.app[HOST_KEY].runtime.storage.inbox_pending() == []
    finally:
        await client.close()


async def test_malformed_body_is_400(slack: FakeSlack) -> None:
    client = await client_for(slack)
    try:
        _, headers = signed({})
        response = await client.post(
            "/slack/events",
            data=b"not json",
            headers={**headers, "X-Slack-Signature": signed_raw(b"not json", headers)},
        )
        assert response.status == 400
    finally:
        await client.close()


def signed_raw(body: bytes, headers: dict[str, str]) -> str:
    import hashlib
    import hmac

    base = b"v0:" + headers["X-Slack-Request-Timestamp"].encode() + b":" + body
    return "v0=" + hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()


@pytest.mark.slow
async def test_retries_are_deduplicated_and_429_waited_out(slack: FakeSlack) -> None:
    slack.rate_limits["chat.postMessage"] = 1
    client = await client_for(slack)
    try:
        payload = event("Ev8", "app_mention", "once please")
        await send(client, payload)
        body, headers = signed(payload)
        retry = await client.post(
            "/slack/events",
            data=body,
            headers={**headers, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
        )
        assert retry.status == 200
        posted = await slack.wait_for(1)
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert sum("once please" in p["text"] for p in slack.posted()) == 1
        assert any(m == "chat.postMessage!429" for m, _ in slack.calls)
        assert posted
    finally:
        await client.close()


async def test_long_markdown_reply_in_mrkdwn(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-slack-0000")
        long = "## Findings\n\n" + "\n\n".join(
            f"**Item {i}** costs <5 & more, see [docs](https://x.io/{i})." for i in range(150)
        )
        long += "\n\n```\n" + "code & <tags>\n" * 200 + "```"
        model.script(Reply(text=long, chunks=30))
        client = await client_for(slack, {"agent": {"model": "anthropic/claude-sonnet-4-6"}})
        try:
            await send(client, event("Ev9", "app_mention", "report"))
            await slack.wait_for(3)
            await client.app[HOST_KEY].dispatcher.drain(5)
            texts = [p["text"] for p in slack.posted()]
            assert all(len(t) <= 3000 for t in texts)
            joined = "\n".join(texts)
            assert "*Findings*" in joined and "*Item 3*" in joined and "**" not in joined
            assert "&lt;5 &amp; more" in joined and "<https://x.io/7|docs>" in joined
            for text in texts:
                assert text.count("```") % 2 == 0
        finally:
            await client.close()


def test_describe() -> None:
    state = SlackChannel.describe(
        load_config(), {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    )
    assert state.enabled and TOKEN not in state.detail
    assert not SlackChannel.describe(load_config(), {}).enabled
