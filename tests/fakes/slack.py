"""A fake Slack on 127.0.0.1: the Web API (``/api/{method}``), ``response_url`` hooks, and
Socket Mode (``apps.connections.open`` then a websocket speaking the envelope/ack protocol).

The fake keeps the messages as a user would see them (``visible``): ``chat.postMessage``
and ``chat.startStream`` create one, ``chat.update`` replaces its text,
``chat.appendStream`` / ``chat.stopStream`` add to it, ``chat.delete`` removes it.
``refuse[method] = "error"`` makes a method answer ``{"ok": false}``;
``rate_limits[method] = n`` answers the next n calls with a 429.

Files: ``add_file`` keeps bytes and returns the file object an event carries
(``url_private``, ``url_private_download`` on the fake's own origin, ``size``,
``mimetype``...); ``GET /files-pri/{team}-{id}/...`` serves them to the bot token
only (403 otherwise), 404 for an unknown file or one in ``gone_files``, a 302 to
``file_redirects[id]`` when set;
``files.info`` answers the same object (``file_not_found`` for those).
Each download is noted in ``file_hits`` (path, Authorization header).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.helpers import wait_for

BOT_USER = "UBOT0001"
SIGNING_SECRET = "slack-signing-secret-0123"
TOKEN = "xoxb-test-token-0123456789"
APP_TOKEN = "xapp-1-test-app-token-0123"
RETRY_AFTER = "1"


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.rate_limits: dict[str, int] = {}
        self.refuse: dict[str, str] = {}
        self.refuse_markdown = False  # markdown_text refused (invalid_arguments)
        self.scopes: str | None = None  # the token's scopes, as X-OAuth-Scopes says them
        self.messages: dict[str, dict[str, Any]] = {}  # ts -> channel, thread_ts, text, streaming
        self.hooks: list[dict[str, Any]] = []  # what was sent to response_url
        self.acks: list[dict[str, Any]] = []  # Socket Mode acknowledgements
        self.sockets: list[web.WebSocketResponse] = []
        self.changed = asyncio.Event()
        self.files: dict[str, dict[str, Any]] = {}  # id -> the file object events carry
        self.file_bytes: dict[str, bytes] = {}
        self.gone_files: set[str] = set()  # deleted: 404 and file_not_found
        self.file_redirects: dict[str, str] = {}  # id -> a URL its download redirects to
        self.file_hits: list[tuple[str, str | None]] = []
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_get("/api/{method}", self._handle)  # files.info is a GET in slack-sdk
        app.router.add_get("/files-pri/{key}/{rest:.+}", self._file)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_get("/link", self._socket)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/api/"))

    def response_url(self, name: str) -> str:
        return str(self.server.make_url(f"/respond/{name}"))

    async def __aenter__(self) -> FakeSlack:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for socket in list(self.sockets):
            await socket.close()
        await self.server.close()

    # -- what tests read -----------------------------------------------------------

    def posted(self) -> list[dict[str, Any]]:
        return [params for method, params in self.calls if method == "chat.postMessage"]

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    def visible(self) -> list[str]:
        """The text of each message the bot has on Slack, oldest first."""
        return [m["text"] for m in self.messages.values()]

    async def wait_for(self, count: int, seconds: float = 10) -> list[dict[str, Any]]:
        await wait_for(
            lambda: len(self.posted()) >= count,
            f"{count} message(s) posted to the fake Slack",
            seconds,
            changed=self.changed,
        )
        return self.posted()

    async def wait_until(self, condition: Any, what: str, seconds: float = 10) -> None:
        await wait_for(condition, what, seconds, changed=self.changed)

    # -- files -------------------------------------------------------------------------

    def add_file(
        self,
        name: str,
        data: bytes,
        mimetype: str = "application/octet-stream",
        **fields: Any,
    ) -> dict[str, Any]:
        """Keep ``data`` as a Slack file; the file object (``fields`` override it)."""
        file_id = f"F{next(self._file_ids):08d}"
        private = str(self.server.make_url(f"/files-pri/T1-{file_id}/{name}"))
        download = str(self.server.make_url(f"/files-pri/T1-{file_id}/download/{name}"))
        found = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rpartition(".")[2],
            "size": len(data),
            "mode": "hosted",
            "is_external": False,
            "url_private": private,
            "url_private_download": download,
            **fields,
        }
        self.files[file_id] = found
        self.file_bytes[file_id] = data
        return found

    async def _file(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.file_hits.append((request.path, auth))
        self.changed.set()
        file_id = request.match_info["key"].partition("-")[2]
        if file_id not in self.file_bytes or file_id in self.gone_files:
            return web.Response(status=404, text="file not found")
        if auth != f"Bearer {TOKEN}":
            return web.Response(status=403, text="not allowed")
        if file_id in self.file_redirects:
            raise web.HTTPFound(self.file_redirects[file_id])
        return web.Response(body=self.file_bytes[file_id], content_type="application/octet-stream")

    # -- Socket Mode ------------------------------------------------------------------

    async def push(self, kind: str, payload: dict[str, Any], envelope_id: str) -> dict[str, Any]:
        """Send an envelope to the connected app; its acknowledgement."""
        await self.wait_until(lambda: self.sockets, "a Socket Mode connection")
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        await self.sockets[-1].send_str(json.dumps(envelope))
        await self.wait_until(
            lambda: any(a.get("envelope_id") == envelope_id for a in self.acks),
            f"the ack of envelope {envelope_id}",
        )
        return next(a for a in self.acks if a.get("envelope_id") == envelope_id)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.sockets.append(socket)
        self.changed.set()
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        try:
            async for frame in socket:
                if frame.type is WSMsgType.TEXT:
                    self.acks.append(json.loads(frame.data))
                    self.changed.set()
        finally:
            self.sockets.remove(socket)
        return socket

    # -- the Web API ---------------------------------------------------------------------

    async def _respond(self, request: web.Request) -> web.Response:
        self.hooks.append({"id": request.match_info["id"], **(await request.json())})
        self.changed.set()
        return web.Response(text="ok")

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        wanted = APP_TOKEN if method == "apps.connections.open" else TOKEN
        if request.headers.get("Authorization") != f"Bearer {wanted}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params = {k: str(v) for k, v in (await request.post()).items()}
        params = {**request.query, **params}  # slack-sdk sends some methods' params in the URL
        if self.rate_limits.get(method):
            self.rate_limits[method] -= 1
            self.calls.append((f"{method}!429", params))
            self.changed.set()
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": RETRY_AFTER},
            )
        self.calls.append((method, params))
        self.changed.set()
        if method in self.refuse:
            return web.json_response({"ok": False, "error": self.refuse[method]})
        if self.refuse_markdown and "markdown_text" in params:
            return web.json_response({"ok": False, "error": "invalid_arguments"})
        headers = {"X-OAuth-Scopes": self.scopes} if self.scopes is not None else None
        return web.json_response({"ok": True, **self._apply(method, params)}, headers=headers)

    def _apply(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        text = params.get("markdown_text") or params.get("text") or ""
        ts = params.get("ts", "")
        if method == "auth.test":
            return {"user_id": BOT_USER, "user": "lane", "team_id": "T1", "bot_id": "B1"}
        if method == "files.info":
            found = self.files.get(params.get("file", ""))
            if found is None or found["id"] in self.gone_files:
                raise web.HTTPOk(
                    text=json.dumps({"ok": False, "error": "file_not_found"}),
                    content_type="application/json",
                )
            return {"file": found}
        if method == "apps.connections.open":
            return {"url": str(self.server.make_url("/link")).replace("http", "ws", 1)}
        if method in ("chat.postMessage", "chat.startStream"):
            ts = f"{time.time():.0f}.{next(self._ts):06d}"
            self.messages[ts] = {
                "channel": params.get("channel"),
                "thread_ts": params.get("thread_ts"),
                "text": text,
                "streaming": method == "chat.startStream",
            }
            return {"channel": params.get("channel"), "ts": ts}
        found = self.messages.get(ts)
        if method == "chat.update" and found:
            found["text"] = text
        elif method in ("chat.appendStream", "chat.stopStream") and found:
            if not found["streaming"]:
                raise web.HTTPOk(
                    text=json.dumps({"ok": False, "error": "message_not_in_streaming_state"}),
                    content_type="application/json",
                )
            found["text"] += text
            found["streaming"] = method == "chat.appendStream"
        elif method == "chat.delete":
            self.messages.pop(ts, None)
        return {"ts": ts} if ts else {}


def signed(
    payload: dict[str, Any], *, secret: str = SIGNING_SECRET, age: float = 0
) -> tuple[bytes, dict[str, str]]:
    return sign(json.dumps(payload).encode(), "application/json", secret=secret, age=age)


def signed_form(
    fields: dict[str, str], *, secret: str = SIGNING_SECRET
) -> tuple[bytes, dict[str, str]]:
    body = urllib.parse.urlencode(fields).encode()
    return sign(body, "application/x-www-form-urlencoded", secret=secret)


def sign(
    body: bytes, content_type: str, *, secret: str = SIGNING_SECRET, age: float = 0
) -> tuple[bytes, dict[str, str]]:
    timestamp = str(int(time.time() - age))
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return body, {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
        "Content-Type": content_type,
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


def command(
    fake: FakeSlack, text: str, *, trigger: str = "T-1", name: str = "/chatlane"
) -> dict[str, str]:
    return {
        "command": name,
        "text": text,
        "user_id": "U123",
        "channel_id": "C1",
        "team_id": "T1",
        "trigger_id": trigger,
        "response_url": fake.response_url(trigger),
    }
