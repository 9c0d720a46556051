"""Fake Anthropic and OpenAI servers on 127.0.0.1 that speak the real wire formats.

::

    async with FakeAnthropic() as fake:          # or FakeOpenAI()
        fake.script(Reply(text="Hello there", chunks=3))
        fake.script(Fail(429, "rate_limit_error", headers={"retry-after": "7"}))
        fake.script(Reply(tool_calls=[("call_1", "read_file", {"path": "a"})]))
        fake.script(Reply(text="partial", fail_after=Fail(200, "overloaded_error")))
        fake.script(Hang())                      # never answers: client timeout
        ... point the SDK at fake.base_url ...
        fake.requests[0].json, fake.requests[0].api_key

With the script empty, a fake answers ``fake.default(request)`` when set, else
echoes the last user message ("echo: ...").
``Fail`` with status 200 and ``fail_after`` sends an error event inside the
stream after the reply's text (the mid-stream case).
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Fail:
    status: int
    kind: str
    message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None


@dataclass
class Reply:
    text: str = ""
    chunks: int = 2
    thinking: str = ""
    signature: str = "sig-fake"
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail_after: Fail | None = None
    input_tokens: int = 11
    output_tokens: int = 7
    delay: float = 0.0  # seconds to think before the stream starts
    pace: float = 0.0  # seconds between streamed events (a model that writes slowly)
    stop: str | None = None  # the wire's stop_reason / finish_reason, when not the usual


@dataclass
class Hang:
    seconds: float = 30.0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: dict[str, Any]

    @property
    def api_key(self) -> str | None:
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth else None

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.json.get("messages", [])):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                return content
            texts = [b.get("text", "") for b in content if b.get("type") == "text"]
            if texts:
                return texts[-1]
        return ""


Step = Reply | Fail | Hang | Callable[[Recorded], "Reply | Fail | Hang"]


def _split(text: str, parts: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(parts, 1)))
    return [text[i : i + size] for i in range(0, len(text), size)]


class _FakeServer(abc.ABC):
    route = ""

    def __init__(self) -> None:
        self._steps: list[Step] = []
        self.default: Callable[[Recorded], Reply | Fail | Hang] | None = None
        self.requests: list[Recorded] = []
        self.arrived = asyncio.Event()
        # the real APIs take requests up to 32 MB (images inline as base64)
        app = web.Application(client_max_size=32 * 1024**2)
        app.router.add_post(self.route, self._handle)
        app.router.add_get("/v1/models", self._models)  # chatlane check --live
        self.refused_keys: set[str] = set()  # keys the model list answers 401 for
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def base_url(self) -> str:
        return str(self._server.make_url("")).rstrip("/")

    def script(self, *steps: Step) -> None:
        self._steps.extend(steps)

    async def __aenter__(self) -> _FakeServer:
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()

    async def _models(self, request: web.Request) -> web.Response:
        headers = request.headers
        key = headers.get("x-api-key") or headers.get("Authorization", "").removeprefix("Bearer ")
        if key in self.refused_keys:
            return web.json_response(
                self.error_body(Fail(401, "authentication_error", "invalid x-api-key")),
                status=401,
            )
        models = [
            {
                "id": "model-1",
                "type": "model",
                "object": "model",
                "created": 0,
                "created_at": "2026-01-01T00:00:00Z",
                "display_name": "Model 1",
                "owned_by": "fake",
            }
        ]
        return web.json_response(
            {
                "data": models,
                "object": "list",
                "has_more": False,
                "first_id": "model-1",
                "last_id": "model-1",
            }
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        recorded = Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        self.requests.append(recorded)
        self.arrived.set()
        if self._steps:
            step: Any = self._steps.pop(0)
        elif self.default is not None:
            step = self.default(recorded)
        else:
            step = Reply(f"echo: {recorded.last_user_text}")
        if callable(step) and not isinstance(step, Reply | Fail | Hang):
            step = step(recorded)
        if isinstance(step, Hang):
            await asyncio.sleep(step.seconds)
            return web.Response(status=504)
        if isinstance(step, Fail):
            return web.json_response(
                self.error_body(step), status=step.status, headers=step.headers
            )
        if step.delay:
            await asyncio.sleep(step.delay)
        if not body.get("stream"):
            return web.json_response(self.whole(step, body))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in self.events(step, body):
            await response.write(chunk.encode())
            if step.pace:
                await asyncio.sleep(step.pace)
        await response.write_eof()
        return response

    @abc.abstractmethod
    def error_body(self, fail: Fail) -> dict[str, Any]: ...

    @abc.abstractmethod
    def whole(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def events(self, reply: Reply, body: dict[str, Any]) -> list[str]: ...


class FakeAnthropic(_FakeServer):
    """``POST /v1/messages``; the SDK's base_url is ``fake.base_url``."""

    route = "/v1/messages"

    def error_body(self, fail: Fail) -> dict[str, Any]:
        return {"type": "error", "error": {"type": fail.kind, "message": fail.message}}

    def whole(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.text:
            content.append({"type": "text", "text": reply.text})
        for call_id, name, args in reply.tool_calls:
            content.append({"type": "tool_use", "id": call_id, "name": name, "input": args})
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": reply.stop or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        }

    def events(self, reply: Reply, body: dict[str, Any]) -> list[str]:
        def sse(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        out = [
            sse(
                "message_start",
                {
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": body.get("model"),
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
                    }
                },
            )
        ]
        index = 0
        if reply.thinking:
            out.append(
                sse(
                    "content_block_start",
                    {
                        "index": index,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                )
            )
            for piece in _split(reply.thinking, 2):
                out.append(
                    sse(
                        "content_block_delta",
                        {"index": index, "delta": {"type": "thinking_delta", "thinking": piece}},
                    )
                )
            out.append(
                sse(
                    "content_block_delta",
                    {
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": reply.signature},
                    },
                )
            )
            out.append(sse("content_block_stop", {"index": index}))
            index += 1
        if reply.text:
            out.append(
                sse(
                    "content_block_start",
                    {"index": index, "content_block": {"type": "text", "text": ""}},
                )
            )
            for piece in _split(reply.text, reply.chunks):
                out.append(
                    sse(
                        "content_block_delta",
                        {"index": index, "delta": {"type": "text_delta", "text": piece}},
                    )
                )
            if reply.fail_after is not None:
                out.append(
                    f"event: error\ndata: {json.dumps(self.error_body(reply.fail_after))}\n\n"
                )
                return out
            out.append(sse("content_block_stop", {"index": index}))
            index += 1
        elif reply.fail_after is not None:
            out.append(f"event: error\ndata: {json.dumps(self.error_body(reply.fail_after))}\n\n")
            return out
        for call_id, name, args in reply.tool_calls:
            out.append(
                sse(
                    "content_block_start",
                    {
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": call_id,
                            "name": name,
                            "input": {},
                        },
                    },
                )
            )
            raw = json.dumps(args)
            for piece in _split(raw, 3):
                out.append(
                    sse(
                        "content_block_delta",
                        {
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
                )
            out.append(sse("content_block_stop", {"index": index}))
            index += 1
        stop = reply.stop or ("tool_use" if reply.tool_calls else "end_turn")
        out.append(
            sse(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": reply.output_tokens},
                },
            )
        )
        out.append(sse("message_stop", {}))
        return out


class FakeOpenAI(_FakeServer):
    """``POST /v1/chat/completions``; the SDK's base_url is ``fake.base_url + "/v1"``.

    ``POST /v1/audio/transcriptions`` (multipart, as the SDK sends it) answers
    ``{"text": fake.transcript}`` and records each upload in ``fake.transcriptions``
    (model, file name, content type, size, api key); ``transcript = None`` answers 500.
    """

    route = "/v1/chat/completions"

    def __init__(self) -> None:
        super().__init__()
        self.transcript: str | None = "hello from a voice note"
        self.transcriptions: list[dict[str, Any]] = []
        self._server.app.router.add_post("/v1/audio/transcriptions", self._transcribe)

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload: Any = form.get("file")
        self.transcriptions.append(
            {
                "model": form.get("model"),
                "filename": getattr(upload, "filename", None),
                "content_type": getattr(upload, "content_type", None),
                "size": len(upload.file.read()) if upload is not None else 0,
                "api_key": request.headers.get("Authorization", "").removeprefix("Bearer "),
            }
        )
        if self.transcript is None:
            return web.json_response(self.error_body(Fail(500, "server_error")), status=500)
        return web.json_response({"text": self.transcript})

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    def error_body(self, fail: Fail) -> dict[str, Any]:
        return {
            "error": {"message": fail.message, "type": fail.kind, "param": None, "code": fail.code}
        }

    def whole(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": reply.stop or "stop",
                    "message": {"role": "assistant", "content": reply.text},
                }
            ],
            "usage": {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.input_tokens + reply.output_tokens,
            },
        }

    def events(self, reply: Reply, body: dict[str, Any]) -> list[str]:
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model"),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n"

        out = [chunk({"role": "assistant", "content": ""})]
        for piece in _split(reply.thinking, 2):
            out.append(chunk({"reasoning_content": piece}))
        for piece in _split(reply.text, reply.chunks):
            out.append(chunk({"content": piece}))
        if reply.fail_after is not None:
            out.append(f"data: {json.dumps(self.error_body(reply.fail_after))}\n\n")
            return out
        for index, (call_id, name, args) in enumerate(reply.tool_calls):
            raw = json.dumps(args)
            pieces = _split(raw, 3) or [""]
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": pieces[0]},
                            }
                        ]
                    }
                )
            )
            for piece in pieces[1:]:
                out.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        out.append(chunk({}, reply.stop or ("tool_calls" if reply.tool_calls else "stop")))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.input_tokens + reply.output_tokens,
            }
            out.append(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n")
        out.append("data: [DONE]\n\n")
        return out
