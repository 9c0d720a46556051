"""The load benchmark's far side of the wire, each fake a process of its own.

``python -m bench._load_fakes PORT anthropic DELAY``: the Anthropic Messages
API. Every request waits DELAY seconds (the model thinking), then streams a
reply whose text contains the last user message's text, so the reply that
reaches Telegram carries the token of the message that caused it.

``python -m bench._load_fakes PORT telegram``: the Telegram Bot API at
``POST /bot{token}/{method}``. It counts calls per method and notes, for
every sendMessage, when it arrived and which message tokens its text holds.

Both answer ``GET /stats`` (counts, cheap enough to poll) and ``POST /reset``;
the Telegram fake gives every sendMessage's (time, tokens) at ``GET /sends``.
Times are ``time.monotonic()``, one clock for every process on the machine.
Both are lean on purpose (no per-request parsing beyond what the answer
needs): they are the environment, and must never be the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

TOKEN = re.compile(rb"q(\d+)z")
"""A message's token in any text: ``q<number>z`` (markdown and form encoding leave it alone)."""


def token_text(number: int) -> str:
    return f"q{number}z"


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            return texts[-1]
    return ""


def anthropic_stream(model: str, text: str) -> bytes:
    """One streamed reply, every event the Messages API sends, in one write."""
    third = max(1, len(text) // 3)
    pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
    start = {
        "id": "msg_load",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 1},
    }
    events = [
        _sse("message_start", {"message": start}),
        _sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        *(
            _sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}})
            for p in pieces
            if p
        ),
        _sse("content_block_stop", {"index": 0}),
        _sse(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 12},
            },
        ),
        _sse("message_stop", {}),
    ]
    return "".join(events).encode()


def anthropic_app(delay: float) -> web.Application:
    stats: Counter[str] = Counter()

    async def messages(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        text = f"Answer to: {last_user_text(body)}"
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(delay)
        finally:
            stats["in_flight"] -= 1
        model = body.get("model", "claude")
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_load",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 20, "output_tokens": 12},
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(anthropic_stream(model, text))
        await response.write_eof()
        return response

    async def reset(request: web.Request) -> web.Response:
        in_flight = stats["in_flight"]
        stats.clear()
        stats["in_flight"] = in_flight
        return web.json_response({})

    async def counts(request: web.Request) -> web.Response:
        return _json(dict(stats))

    app = web.Application(client_max_size=8 * 1024**2)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/stats", counts)
    app.router.add_post("/reset", reset)
    return app


BOT_USER = {"id": 777000, "is_bot": True, "first_name": "Lane"}


def telegram_app() -> web.Application:
    calls: Counter[str] = Counter()
    sends: list[tuple[float, list[int]]] = []
    answered: set[int] = set()

    async def method(request: web.Request) -> web.Response:
        name = request.match_info["method"]
        calls[name] += 1
        if name == "getMe":
            return _json({"ok": True, "result": {**BOT_USER, "username": "lane_bot"}})
        if name != "sendMessage":
            return _json({"ok": True, "result": True})
        raw = await request.read()
        tokens = sorted({int(t) for t in TOKEN.findall(raw)})
        sends.append((time.monotonic(), tokens))
        answered.update(tokens)
        if request.content_type == "application/json":
            chat_id = json.loads(raw).get("chat_id", 0)
        elif request.content_type == "application/x-www-form-urlencoded":
            chat_id = parse_qs(raw.decode()).get("chat_id", ["0"])[0]
        else:  # multipart
            chat_id = (await request.post()).get("chat_id", "0")
        result = {
            "message_id": len(sends),
            "date": int(time.time()),
            "chat": {"id": int(chat_id), "type": "private"},
            "from": BOT_USER,
            "text": "",
        }
        return _json({"ok": True, "result": result})

    async def stats(request: web.Request) -> web.Response:
        return _json({"calls": dict(calls), "sends": len(sends), "answered": len(answered)})

    async def reset(request: web.Request) -> web.Response:
        calls.clear()
        sends.clear()
        answered.clear()
        return _json({})

    async def sent(request: web.Request) -> web.Response:
        return _json(sends)

    app = web.Application()
    app.router.add_post("/bot{token}/{method}", method)
    app.router.add_get("/stats", stats)
    app.router.add_get("/sends", sent)
    app.router.add_post("/reset", reset)
    return app


def _json(data: Any) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json")


def main(argv: list[str]) -> None:
    port, kind = int(argv[0]), argv[1]
    app = anthropic_app(float(argv[2])) if kind == "anthropic" else telegram_app()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(sys.argv[1:])
