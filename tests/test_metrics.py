"""``GET /metrics``: a real turn over SMS (fake Twilio, fake Anthropic), the page parsed with
prometheus-client's own parser; the token and the public-server rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from bot.config import load_config
from bot.metrics import Metrics, error_status
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from tests.fakes.models import Fail, FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.twilio import FROM, SID, TOKEN, FakeTwilio
from tests.helpers import wait_for

PUBLIC = "https://bot.example.com"
METRICS_TOKEN = "scrape-token-123456"


def samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-metrics-0000")
        yield fake


@pytest.fixture
async def backup(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.api_base)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-metrics-0000")
        yield fake


async def sms_client(fake: FakeTwilio, **extra: str) -> TestClient[Any, Any]:
    config = load_config(
        data={
            "agent": {
                "model": "anthropic/claude-primary",
                "fallback_models": ["openai/gpt-backup"],
            }
        }
    )
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True)
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM_NUMBER": FROM,
        "TWILIO_API_BASE_URL": fake.base_url,
        "PUBLIC_URL": PUBLIC,
        **extra,
    }
    client = TestClient(TestServer(create_app(runtime, env=env)))
    await client.start_server()
    return client


async def text_in(client: TestClient[Any, Any], body: str, sid: str) -> None:
    params = {
        "From": "+15550001111",
        "To": FROM,
        "Body": body,
        "MessageSid": sid,
        "AccountSid": SID,
    }
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/sms", params)
    response = await client.post(
        "/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status == 200


async def scrape(client: TestClient[Any, Any]) -> dict[Any, float]:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(await response.text())


@pytest.mark.slow  # the first call of each model SDK imports it: seconds on a busy machine
async def test_a_turn_with_a_failover_shows_in_metrics(
    twilio: FakeTwilio, model: FakeAnthropic, backup: FakeOpenAI
) -> None:
    client = await sms_client(twilio, CHATLANE_METRICS_TOKEN=METRICS_TOKEN)
    try:
        before = await scrape(client)
        assert value(before, "chatlane_inbox_pending") == 0
        assert value(before, "chatlane_storage_up") == 1
        assert value(before, "process_resident_memory_bytes") > 1_000_000
        model.script(Fail(529, "overloaded_error"))
        backup.script(Reply(text="Hi from the backup", chunks=3))
        await text_in(client, "hello", "SMmetrics1")
        await twilio.wait_for(1, seconds=30)
        dispatcher = client.app[HOST_KEY].dispatcher
        await wait_for(lambda: not dispatcher.mailbox.running, "the turn to settle")
        found = await scrape(client)
    finally:
        await client.close()
    assert value(found, "chatlane_turns_total", channel="sms", outcome="answered") == 1
    assert value(found, "chatlane_turn_seconds_count", channel="sms") == 1
    assert value(found, "chatlane_first_text_seconds_count", channel="sms") == 1
    assert 0 < value(found, "chatlane_first_text_seconds_sum", channel="sms") < 30
    assert value(found, "chatlane_failovers_total", reason="overloaded") == 1
    assert value(found, "chatlane_tokens_total", model="openai/gpt-backup", direction="in")
    assert value(found, "chatlane_tokens_total", model="openai/gpt-backup", direction="out")
    assert value(found, "chatlane_channel_sends_total", channel="sms") == 1
    assert value(found, "chatlane_inbox_pending") == 0
    assert value(found, "chatlane_lane_waiting") == 0
    # The primary's key rests after the overload; the page says so per provider.
    assert value(found, "chatlane_keys_resting", provider="anthropic", state="cooling") == 1


async def test_a_refused_send_is_counted_by_status(
    twilio: FakeTwilio, model: FakeAnthropic
) -> None:
    client = await sms_client(twilio, CHATLANE_METRICS_TOKEN=METRICS_TOKEN)
    try:
        twilio.fail(401, 20003)  # Twilio: authenticate (the auth token was changed)
        await text_in(client, "hello", "SMmetrics2")
        dispatcher = client.app[HOST_KEY].dispatcher
        await wait_for(
            lambda: dispatcher.metrics.registry.get_sample_value(
                "chatlane_channel_send_errors_total", {"channel": "sms", "status": "401"}
            ),
            "the refused send to be counted",
        )
        found = await scrape(client)
    finally:
        await client.close()
    assert value(found, "chatlane_channel_send_errors_total", channel="sms", status="401") >= 1


@pytest.mark.parametrize(
    ("env", "header", "status"),
    [
        ({"CHATLANE_METRICS_TOKEN": METRICS_TOKEN}, None, 401),
        ({"CHATLANE_METRICS_TOKEN": METRICS_TOKEN}, "Bearer wrong-token", 401),
        ({"CHATLANE_METRICS_TOKEN": METRICS_TOKEN}, f"Bearer {METRICS_TOKEN}", 200),
        ({"PUBLIC_URL": PUBLIC}, None, 404),  # public and no token: off
        ({}, None, 200),  # a private process: open
    ],
)
async def test_metrics_access(env: dict[str, str], header: str | None, status: int) -> None:
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    async with TestClient(TestServer(create_app(runtime, env=env))) as client:
        headers = {"Authorization": header} if header else {}
        response = await client.get("/metrics", headers=headers)
        assert response.status == status
        text = await response.text()
        if status == 200:
            assert value(samples(text), "chatlane_storage_up") == 1
        else:
            assert "CHATLANE_METRICS_TOKEN" in text
            assert METRICS_TOKEN not in text


async def test_unreachable_storage_is_reported_not_raised() -> None:
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    async with TestClient(TestServer(create_app(runtime, env={}))) as client:

        async def down() -> list[int]:
            raise ConnectionError("storage away")

        runtime.storage.inbox_pending_ids = down  # type: ignore[method-assign]
        response = await client.get("/metrics")
        assert response.status == 200
        found = samples(await response.text())
    assert value(found, "chatlane_storage_up") == 0
    assert value(found, "chatlane_inbox_pending") != value(found, "chatlane_inbox_pending")  # NaN


def test_error_status_reads_the_platform_status() -> None:
    class Http(Exception):
        status = 429

    class Response:
        status_code = 503

    class Wrapped(Exception):
        response = Response()

    assert error_status(Http()) == "429"
    assert error_status(Wrapped()) == "503"
    assert error_status(TimeoutError()) == "TimeoutError"


def test_label_children_are_cached() -> None:
    metrics = Metrics()
    first = metrics.turn("web", arrived=0.0, streams=True)
    second = metrics.turn("web", arrived=0.0, streams=True)
    assert first._channel is second._channel
    first.finish("answered")
    second.finish("answered")
    page = samples(metrics.render().decode())
    assert value(page, "chatlane_turns_total", channel="web", outcome="answered") == 2
