"""Fuzzed webhook bodies never get a 5xx and never reach the model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from tests.fakes.slack import SIGNING_SECRET, signed
from tests.fakes.telegram import FakeTelegram
from tests.fakes.twilio import FROM, SID, TOKEN

SECRET = "fuzz-secret"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
RAW = st.binary(max_size=200)
FORM = st.dictionaries(
    st.text("abcdefFromBodyMessageSid", max_size=12), st.text(max_size=30), max_size=5
)


async def scenario(bodies: list[Any], raws: list[bytes], forms: list[dict[str, str]]) -> None:
    async with FakeTelegram() as telegram:
        env = {
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
            "TELEGRAM_WEBHOOK_SECRET": SECRET,
            "PUBLIC_URL": "https://bot.example.com",
            "SLACK_BOT_TOKEN": "xoxb-fuzz",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_BASE_URL": "http://127.0.0.1:9/api/",
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM_NUMBER": FROM,
        }
        runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
        async with TestClient(TestServer(create_app(runtime, env=env))) as client:
            statuses = []
            secret = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            for body in bodies:
                for payload in (json.dumps(body).encode(),):
                    response = await client.post("/telegram/webhook", data=payload, headers=secret)
                    statuses.append(response.status)
                    data, headers = signed(body if isinstance(body, dict) else {"x": body})
                    response = await client.post("/slack/events", data=data, headers=headers)
                    statuses.append(response.status)
            for raw in raws:
                response = await client.post("/telegram/webhook", data=raw, headers=secret)
                statuses.append(response.status)
                response = await client.post("/slack/events", data=raw)
                statuses.append(response.status)
            validator = RequestValidator(TOKEN)
            for form in forms:
                signature = validator.compute_signature("https://bot.example.com/twilio/sms", form)
                response = await client.post(
                    "/twilio/sms", data=form, headers={"X-Twilio-Signature": signature}
                )
                statuses.append(response.status)
            assert all(status < 500 for status in statuses), statuses
            storage = client.app[HOST_KEY].runtime.storage
            assert await storage.inbox_pending() == []
            assert telegram.sent() == []


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(JSON, min_size=5, max_size=25),
    raws=st.lists(RAW, min_size=3, max_size=10),
    forms=st.lists(FORM, min_size=3, max_size=10),
)
def test_fuzzed_webhooks(bodies: list[Any], raws: list[bytes], forms: list[dict[str, str]]) -> None:
    asyncio.run(scenario(bodies, raws, forms))
