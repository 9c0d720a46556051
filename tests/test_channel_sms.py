"""SMS end to end: a signed Twilio webhook to the recorded Messages REST call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from channels.sms import SmsChannel
from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.twilio import FROM, SID, TOKEN, FakeTwilio

PUBLIC = "https://bot.example.com"
USER = "+15550001111"


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake


def env_for(fake: FakeTwilio) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM_NUMBER": FROM,
        "TWILIO_API_BASE_URL": fake.base_url,
        "PUBLIC_URL": PUBLIC,
    }


async def client_for(fake: FakeTwilio, data: dict[str, Any] | None = None) -> TestClient[Any, Any]:
    runtime = AgentRuntime(config=load_config(data=data or {}), demo_when_unconfigured=True)
    client = TestClient(TestServer(create_app(runtime, env=env_for(fake))))
    await client.start_server()
    return client


def form(body: str, sid: str = "SM1", sender: str = USER) -> dict[str, str]:
    return {"From": sender, "To": FROM, "Body": body, "MessageSid": sid, "AccountSid": SID}


async def post(
    client: TestClient[Any, Any],
    params: dict[str, str],
    signature: str | None = None,
    url: str = PUBLIC + "/twilio/sms",
) -> Any:
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature(url, params)
    return await client.post("/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})


async def test_signed_sms_gets_a_plain_reply(twilio: FakeTwilio) -> None:
    client = await client_for(twilio)
    try:
        response = await post(client, form("hello **bot**"))
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/xml")
        assert "<Response></Response>" in await response.text()
        sent = await twilio.wait_for(1)
        assert sent[0]["To"] == USER and sent[0]["From"] == FROM
        assert "You said: hello bot" in sent[0]["Body"] and "**" not in sent[0]["Body"]
    finally:
        await client.close()


@pytest.mark.parametrize("case", ["missing", "forged", "other-url"])
async def test_bad_signatures_are_403_and_reach_nothing(twilio: FakeTwilio, case: str) -> None:
    client = await client_for(twilio)
    try:
        params = form("hi")
        if case == "missing":
            response = await client.post("/twilio/sms", data=params)
        elif case == "forged":
            response = await post(client, params, signature="bm90IGEgc2lnbmF0dXJl")
        else:
            response = await post(client, params, url="https://evil.example.com/twilio/sms")
        assert response.status == 403
        storage = client.app[HOST_KEY].runtime.storage
        assert await storage.inbox_pending() == []
    finally:
        await client.close()


async def test_malformed_is_400(twilio: FakeTwilio) -> None:
    client = await client_for(twilio)
    try:
        params = {"From": USER, "Body": "no sid"}
        assert (await post(client, params)).status == 400
    finally:
        await client.close()


@pytest.mark.parametrize("word", ["STOP", "stop", " Help ", "START", "unsubscribe"])
async def test_carrier_keywords_never_reach_the_model(twilio: FakeTwilio, word: str) -> None:
    client = await client_for(twilio)
    try:
        assert (await post(client, form(word, sid="SMstop"))).status == 200
        storage = client.app[HOST_KEY].runtime.storage
        assert await storage.inbox_pending() == []
        assert await storage.load_messages(f"sms:{USER}") == []
        assert twilio.messages == []
    finally:
        await client.close()


async def test_redelivery_and_rate_limits(twilio: FakeTwilio) -> None:
    twilio.fail(429, 20429)
    client = await client_for(twilio, {"channels": {"sms": {"rate_limit_per_minute": 1}}})
    try:
        await post(client, form("first", sid="SMa"))
        await post(client, form("first", sid="SMa"))
        await post(client, form("second", sid="SMb"))
        sent = await twilio.wait_for(2)
        bodies = [m["Body"] for m in sent]
        assert sum("You said: first" in b for b in bodies) == 1
        assert any("too quickly" in b for b in bodies)
        assert len(twilio.failed) == 1
    finally:
        await client.close()


async def test_stored_and_acknowledged_while_draining(twilio: FakeTwilio) -> None:
    client = await client_for(twilio)
    try:
        host = client.app[HOST_KEY]
        await host.dispatcher.drain(0.1)
        response = await post(client, form("late", sid="SMlate"))
        assert response.status == 200
        assert len(await host.runtime.storage.inbox_pending()) == 1
    finally:
        await client.close()


async def test_long_markdown_reply_is_plain_and_segmented(
    twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-sms-0000")
        long = "# Plan\n\n" + "\n\n".join(
            f"- **Step {i}**: read [the guide](https://example.com/{i}) and run `make {i}`."
            for i in range(120)
        )
        model.script(Reply(text=long, chunks=20))
        client = await client_for(twilio, {"agent": {"model": "anthropic/claude-sonnet-4-6"}})
        try:
            await post(client, form("plan please", sid="SMlong"))
            await twilio.wait_for(3)
            await client.app[HOST_KEY].dispatcher.drain(5)
            bodies = [m["Body"] for m in twilio.messages]
            for body in bodies:
                assert len(body) <= 1600
                for mark in ("**", "`", "](", "# "):
                    assert mark not in body
            joined = "\n".join(bodies)
            assert "the guide (https://example.com/7)" in joined and "Step 119" in joined
        finally:
            await client.close()


def test_describe() -> None:
    state = SmsChannel.describe(
        load_config(),
        {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM_NUMBER": FROM},
    )
    assert state.enabled and "PUBLIC_URL is not set" in state.detail and TOKEN not in state.detail
    assert not SmsChannel.describe(load_config(), {}).enabled
