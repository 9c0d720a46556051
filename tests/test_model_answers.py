"""Answers that are no answer (issue 21 items 9 and 11), from a model server that sends
exactly the bytes a test gives it: blank text, only reasoning, an HTML page with 200, a
stream that stops before its stop event. The person is always told."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.events import EventType
from bot.runtime import AgentRuntime
from bot.storage import MemoryStorage

HTML = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


TEXT_BLOCK = {"type": "text", "text": ""}


def text_delta(text: str) -> dict[str, str]:
    return {"type": "text_delta", "text": text}


def anthropic_stream(text: str, *, stop: bool = True, thinking: str = "") -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    out = [sse("message_start", {"type": "message_start", "message": message})]
    index = 0
    if thinking:
        out += [
            sse(
                "content_block_start",
                {"index": 0, "content_block": {"type": "thinking", "thinking": ""}},
            ),
            sse(
                "content_block_delta",
                {"index": 0, "delta": {"type": "thinking_delta", "thinking": thinking}},
            ),
            sse("content_block_stop", {"index": 0}),
        ]
        index = 1
    if text:
        out += [
            sse(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            ),
            sse(
                "content_block_delta",
                {"index": index, "delta": {"type": "text_delta", "text": text}},
            ),
        ]
    if stop:
        out += [
            sse("content_block_stop", {"index": index}),
            sse(
                "message_delta",
                {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
            ),
            sse("message_stop", {}),
        ]
    return b"".join(out)


def openai_stream(text: str, *, stop: bool = True) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    out = [chunk({"role": "assistant", "content": ""}), chunk({"content": text})]
    if stop:
        out += [chunk({}, "stop"), b"data: [DONE]\n\n"]
    return b"".join(out)


class RawModel:
    """Answers each model request with the next (content type, body) it was given."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        content_type, body = self.answers.pop(0)
        return web.Response(body=body, headers={"Content-Type": content_type})


@pytest.fixture
async def raw(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RawModel]:
    model = RawModel()
    app = web.Application()
    app.router.add_post("/v1/messages", model.handle)
    app.router.add_post("/v1/chat/completions", model.handle)
    async with TestServer(app) as server:
        base = str(server.make_url("")).rstrip("/")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base)
        monkeypatch.setenv("OPENAI_BASE_URL", base + "/v1")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-raw-1111")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-raw-2222")
        yield model


async def answer(model: str, text: str = "hello?") -> str:
    """What the person reads: the streamed text, or the error's sentence."""
    runtime = AgentRuntime(model, storage=MemoryStorage())
    try:
        seen = [event async for event in runtime.run("s", text)]
    finally:
        await runtime.close()
    streamed = "".join(e.data["delta"] for e in seen if e.type is EventType.TEXT)
    return streamed or str(seen[-1].data.get("message") or "")


SSE = "text/event-stream"


@pytest.mark.parametrize(
    ("model", "content_type", "body"),
    [
        ("anthropic/claude-sonnet-4", SSE, anthropic_stream("  \n\t ")),
        ("anthropic/claude-sonnet-4", SSE, anthropic_stream("", thinking="I pondered.")),
        ("anthropic/claude-sonnet-4", SSE, anthropic_stream("<think>only this</think>")),
        ("openai/gpt-4o", SSE, openai_stream("   ")),
        ("openai/gpt-4o", SSE, openai_stream("<thinking>only reasoning</thinking>")),
    ],
    ids=["blank", "native-reasoning-only", "tagged-reasoning-only", "openai-blank", "openai-tags"],
)
async def test_an_empty_answer_tells_the_user(
    raw: RawModel, model: str, content_type: str, body: bytes
) -> None:
    raw.answers.append((content_type, body))
    assert (await answer(model)).strip() == "(The model gave no answer.)"


@pytest.mark.parametrize("model", ["anthropic/claude-sonnet-4", "openai/gpt-4o"])
async def test_an_html_page_with_200_is_no_answer_and_says_so(raw: RawModel, model: str) -> None:
    raw.answers.append(("text/html", HTML))
    said = await answer(model)
    assert said, "nothing at all was said"
    assert "nginx" not in said and "<html" not in said.lower()


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("anthropic/claude-sonnet-4", anthropic_stream("The answer is 4", stop=False)),
        ("openai/gpt-4o", openai_stream("The answer is 4", stop=False)),
    ],
)
async def test_a_stream_without_its_stop_event_says_it_was_cut_off(
    raw: RawModel, model: str, body: bytes
) -> None:
    raw.answers.append((SSE, body))
    said = await answer(model)
    assert said.startswith("The answer is 4") and "cut off" in said, said


async def test_no_key_says_no_key_is_set_not_that_keys_were_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    said = await answer("anthropic/claude-sonnet-4")
    assert "no API key is set for anthropic" in said, said
    assert "refused" not in said
