"""SMS end to end: a signed Twilio webhook to the recorded Messages REST call."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from bot.channel import Reply as Reply_
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


def mms(sid: str, *media: tuple[str, str], body: str = "") -> dict[str, str]:
    params = {**form(body, sid=sid), "NumMedia": str(len(media))}
    for index, (url, mime) in enumerate(media):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = mime
    return params


async def test_an_mms_photo_without_a_body_reaches_the_model_as_an_image(
    twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x07" * 64
    url = twilio.add_media("ME1", png)
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-sms-0000")
        client = await client_for(twilio, {"agent": {"model": "anthropic/claude-sonnet-4-6"}})
        try:
            response = await post(client, mms("MMa", (url, "image/png")))
            assert "<Response></Response>" in await response.text()
            await twilio.wait_for(1)
            blocks = model.requests[0].json["messages"][-1]["content"]
            image = next(b for b in blocks if b["type"] == "image")
            assert base64.b64decode(image["source"]["data"]) == png
            assert twilio.media_hits == ["ME1"]  # with the account's basic auth, then the CDN
            assert len(twilio.cdn_headers) == 1
        finally:
            await client.close()


async def test_mms_media_is_fetched_only_from_twilio(twilio: FakeTwilio) -> None:
    client = await client_for(twilio)
    try:
        elsewhere = "https://attacker.example.com/steal.png"
        await post(client, mms("MMb", (elsewhere, "image/png")))
        sent = await twilio.wait_for(1)
        assert "couldn't download" in sent[0]["Body"]
        missing = twilio.base_url + f"/2010-04-01/Accounts/{SID}/Messages/MM1/Media/gone"
        await post(client, mms("MMc", (missing, "image/jpeg")))
        sent = await twilio.wait_for(2)
        assert "couldn't download" in sent[1]["Body"] and twilio.media_hits == ["gone"]
    finally:
        await client.close()


async def test_replies_are_smart_encoded_and_sent_from_a_messaging_service(
    twilio: FakeTwilio,
) -> None:
    runtime = AgentRuntime(config=load_config(data={}), demo_when_unconfigured=True)
    env = {**env_for(twilio), "TWILIO_MESSAGING_SERVICE_SID": "MG" + "2" * 32}
    del env["TWILIO_FROM_NUMBER"]
    client = TestClient(TestServer(create_app(runtime, env=env)))
    await client.start_server()
    try:
        await post(client, form("hi", sid="SMsvc"))
        sent = await twilio.wait_for(1)
        assert sent[0]["MessagingServiceSid"] == "MG" + "2" * 32 and "From" not in sent[0]
        assert sent[0]["SmartEncoded"] == "true"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("reply", "segments"),
    [
        (
            "Sure \u2014 I\u2019ll book it for \u201cTuesday\u201d\u2026 see you then! "
            "Tell me if anything changes before the day.",
            1,
        ),
        (
            "Here\u2019s the plan \u2013 step one: \u201cpack\u201d; step two: \u201cgo\u201d. "
            * 4,
            2,
        ),
        (
            "Caf\u00e9 hours: 9\u201317 \u2014 closed Sundays. "
            "\u201cLate\u201d orders are taken until 16:30.",
            1,
        ),
    ],
)
def test_typical_replies_cost_no_more_segments_than_needed(reply: str, segments: int) -> None:
    from bot.formatting.split import is_gsm7, sms_segments
    from channels.sms import SmsSink

    parts = SmsSink(FROM).render(Reply_(reply))
    assert all(is_gsm7(p) for p in parts)
    assert sum(sms_segments(p) for p in parts) == segments
    assert sms_segments(reply) > segments  # as written, the same text costs more


def test_describe_a_messaging_service() -> None:
    env = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN}
    assert "TWILIO_FROM_NUMBER" in SmsChannel.describe(load_config(), env).detail
    env["TWILIO_MESSAGING_SERVICE_SID"] = "MG" + "3" * 32
    state = SmsChannel.describe(load_config(), env)
    assert state.enabled and "messaging service" in state.detail and "3" * 20 not in state.detail
