"""A fake Slack Web API on 127.0.0.1 (``/api/{method}``), and signed Events API requests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers import wait_for

BOT_USER = "UBOT0001"
SIGNING_SECRET = "slack-signing-secret-0123"
TOKEN = "xoxb-test-token-0123456789"


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.rate_limits: dict[str, int] = {}
        self.changed = asyncio.Event()
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/api/"))

    async def __aenter__(self) -> FakeSlack:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    def posted(self) -> list[dict[str, Any]]:
        return [params for method, params in self.calls if method == "chat.postMessage"]

    async def wait_for(self, count: int, seconds: float = 10) -> list[dict[str, Any]]:
        await wait_for(
            lambda: len(self.posted()) >= count,
            f"{count} message(s) posted to the fake Slack",
            seconds,
            changed=self.changed,
        )
        return self.posted()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params = {k: str(v) for k, v in (await request.post()).items()}
        if self.rate_limits.get(method):
            self.rate_limits[method] -= 1
            self.calls.append((f"{method}!429", params))
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        self.calls.append((method, params))
        self.changed.set()
        result: dict[str, Any] = {"ok": True}
        if method == "auth.test":
            result.update(user_id=BOT_USER, user="lane", team_id="T1", bot_id="B1")
        if method == "chat.postMessage":
            result.update(channel=params.get("channel"), ts=f"{time.time():.6f}")
        return web.json_response(result)


def signed(
    payload: dict[str, Any], *, secret: str = SIGNING_SECRET, age: float = 0
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time() - age))
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return body, {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/json",
    }


def event(event_id: str, kind: str, text: str, **fields: Any) -> dict[str, Any]:
    body = {
        "type": kind,
        "user": "U123",
        "text": text,
        "channel": "C1",
        "ts": "1700000000.000100",
        **fields,
    }
    return {"type": "event_callback", "event_id": event_id, "team_id": "T1", "event": body}
