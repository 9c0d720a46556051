"""Model faults (issue 21): classification of the errors gateways really send, transport
failures mid-stream that fail over, a key one chat's /model choice can never disable."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.auth import AuthProfile, ProfileStore, RotationManager
from bot.config import load_config
from bot.events import EventType
from bot.providers.classify import classify_http_error
from bot.providers.errors import FailoverReason, ProviderError
from bot.runtime import AgentRuntime
from bot.storage import SQLiteStorage
from tests.fakes.models import FakeOpenAI, Reply


class _Err(Exception):
    def __init__(self, status: int | None, body: object, headers: dict[str, str] | None = None):
        super().__init__("x")
        self.status_code = status
        self.body = body
        self.response = type("R", (), {"headers": headers or {}})()


def _body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "reason"),
    [
        (
            400,
            _body(
                "invalid_request_error",
                "Your credit balance is too low to access the Anthropic API.",
            ),
            {},
            "billing",
        ),
        (402, _body("error", "Monthly spend limit reached; resets in 3 minutes"), {}, "rate_limit"),
        (402, _body("error", "payment required"), {"retry-after": "30"}, "rate_limit"),
        (402, _body("error", "payment required"), {}, "billing"),
        (499, _body("error", "client closed request"), {}, "timeout"),
        (400, _body("error", "Rate limit reached for requests"), {}, "rate_limit"),
        (500, _body("error", "You exceeded your current quota"), {}, "billing"),
        (400, _body("error", "Invalid API key provided"), {}, "auth"),
        (
            500,
            _body("error", "This model's maximum context length is 8192 tokens"),
            {},
            "context_overflow",
        ),
        (400, _body("error", "context window too small for this tool"), {}, "bad_request"),
        (
            400,
            _body("invalid_request_error", "prompt is too long: 210000 tokens"),
            {},
            "context_overflow",
        ),
        (None, {"error": {"message": "too many requests, slow down"}}, {}, "rate_limit"),
    ],
)
def test_gateway_wordings_are_classified(
    status: int | None, body: object, headers: dict[str, str], reason: str
) -> None:
    assert classify_http_error(_Err(status, body, headers)).reason.value == reason


def test_transport_errors_are_classified_without_an_sdk() -> None:
    import httpx

    reset = classify_http_error(httpx.RemoteProtocolError("peer closed connection"))
    assert reset.reason is FailoverReason.CONNECTION and reset.should_failover
    stalled = classify_http_error(httpx.ReadTimeout("timed out"))
    assert stalled.reason is FailoverReason.TIMEOUT and stalled.should_failover


def _rotation(**kwargs: Any) -> tuple[RotationManager, AuthProfile]:
    profile = AuthProfile("main", "anthropic", "sk-ant-shared-key-1234")
    return RotationManager(ProfileStore([profile]), **kwargs), profile


async def test_a_model_only_refusal_never_disables_the_shared_key() -> None:
    chain = frozenset({"anthropic/claude-sonnet-4-6"})
    rotation, profile = _rotation(shared_models=chain)
    forbidden = ProviderError(FailoverReason.AUTH, "403", model="claude-opus-4-5", status_code=403)
    await rotation.report_failure("main", forbidden)
    asked = ProviderError(FailoverReason.AUTH, "401", model="claude-opus-4-5", status_code=401)
    await rotation.report_failure("main", asked)  # a model only one chat picked
    assert profile.disabled_reason is None
    assert rotation.get_next_profile("anthropic") is profile
    shared = ProviderError(FailoverReason.AUTH, "401", model="claude-sonnet-4-6", status_code=401)
    await rotation.report_failure("main", shared)
    assert profile.disabled_reason == "auth"


def test_billing_backoff_counts_billing_only_and_is_never_shortened() -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2025, 1, 1, tzinfo=UTC)]
    rotation, profile = _rotation(clock=lambda: now[0])
    for _ in range(3):
        rotation.mark_failure("main", FailoverReason.RATE_LIMIT)
    rotation.mark_failure("main", FailoverReason.BILLING)
    assert profile.cooldown_until == now[0] + timedelta(hours=5)  # the first billing rest
    rotation.mark_failure("main", FailoverReason.RATE_LIMIT, retry_after=10)
    assert profile.cooldown_until == now[0] + timedelta(hours=5)


# -- a transport failure mid-stream fails over at once --------------------------------


@contextlib.asynccontextmanager
async def _broken_anthropic(how: str) -> AsyncIterator[str]:
    """An Anthropic endpoint that starts a stream, then resets the connection or stalls."""

    async def messages(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "x",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        }
        await response.write(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
        if how == "reset":
            assert request.transport is not None
            request.transport.abort()
        else:
            await asyncio.sleep(30)
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("how", ["reset", "stall"])
async def test_a_stream_cut_mid_way_fails_over_at_once(
    how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    openai = FakeOpenAI()
    async with _broken_anthropic(how) as broken, openai:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", broken)
        monkeypatch.setenv("OPENAI_BASE_URL", openai.api_base)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-main-1111")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-2222")
        openai.script(Reply(text="from the fallback"))
        config = load_config(
            data={
                "agent": {
                    "model": "anthropic/claude-sonnet-4-6",
                    "fallback_models": ["openai/gpt-4o"],
                    "request_timeout": 0.5,
                }
            }
        )
        runtime = AgentRuntime(config=config, storage=SQLiteStorage(tmp_path / "f.sqlite"))
        try:
            seen = [e async for e in runtime.run("s", "hi")]
        finally:
            await runtime.close()
    failover = [e.data for e in seen if e.type is EventType.FAILOVER]
    assert failover and failover[0]["to"] == "openai/gpt-4o"
    assert failover[0]["reason"] == ("connection" if how == "reset" else "timeout")
    assert seen[-1].type is EventType.DONE and seen[-1].data["text"] == "from the fallback"
