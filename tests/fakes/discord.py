"""A fake Discord: the REST API discord.py calls, and a minimal v10 JSON gateway.

The gateway sends HELLO, answers IDENTIFY with READY and heartbeats with ACK,
then dispatches the MESSAGE_CREATE events a test pushes with ``dispatch``.
REST records ``POST /channels/{id}/messages`` and typing; ``rate_limit_once``
makes the next message call answer 429 with ``retry_after``. Content-Type is
exactly ``application/json``, as discord.py requires.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.helpers import wait_for

BOT_ID = 900000000000000001
TOKEN = "discord-bot-token.0123456789"
_ids = itertools.count(1_000_000_000_000_000_000)


def snowflake() -> str:
    return str(next(_ids))


def user(user_id: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class FakeDiscord:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.typing: list[str] = []
        self.rate_limits = 0
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self._socket: web.WebSocketResponse | None = None
        self._sequence = 0
        app = web.Application()
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_get("/api/v10/oauth2/applications/@me", self._application)
        app.router.add_get("/api/v10/gateway", self._gateway_url)
        app.router.add_get("/api/v10/gateway/bot", self._gateway_url)
        app.router.add_post("/api/v10/channels/{channel}/messages", self._message)
        app.router.add_post("/api/v10/channels/{channel}/typing", self._typing)
        app.router.add_get("/gateway", self._gateway)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def api(self) -> str:
        return str(self.server.make_url("/api/v10"))

    @property
    def gateway(self) -> str:
        return str(self.server.make_url("/gateway")).replace("http://", "ws://")

    async def __aenter__(self) -> FakeDiscord:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        # exactly "application/json": discord.py compares the header for equality
        return web.Response(
            body=json.dumps(data).encode(),
            status=status,
            headers={**(headers or {}), "Content-Type": "application/json"},
        )

    async def _me(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        return self._json(user(BOT_ID, "lane", bot=True))

    async def _application(self, request: web.Request) -> web.Response:
        return self._json(
            {
                "id": str(BOT_ID),
                "name": "lane",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user(1, "owner"),
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def _gateway_url(self, request: web.Request) -> web.Response:
        return self._json(
            {
                "url": self.gateway,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _message(self, request: web.Request) -> web.Response:
        body = await request.json()
        channel = request.match_info["channel"]
        if self.rate_limits:
            self.rate_limits -= 1
            return self._json(
                {"message": "You are being rate limited.", "retry_after": 0.2, "global": False},
                429,
                {"Retry-After": "0.2", "X-RateLimit-Scope": "user", "Via": "1.1 google"},
            )
        self.sent.append({"channel_id": channel, **body})
        self.changed.set()
        return self._json(
            {
                "id": snowflake(),
                "channel_id": channel,
                "type": 0,
                "author": user(BOT_ID, "lane", bot=True),
                "content": body.get("content"),
                "timestamp": now(),
                "edited_timestamp": None,
                "tts": False,
                "mention_everyone": False,
                "mentions": [],
                "mention_roles": [],
                "attachments": [],
                "embeds": [],
                "pinned": False,
            }
        )

    async def _typing(self, request: web.Request) -> web.Response:
        self.typing.append(request.match_info["channel"])
        return web.Response(status=204)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        await socket.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for message in socket:
            if message.type is not WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["op"] == 2:
                await self._send(
                    "READY",
                    {
                        "v": 10,
                        "user": user(BOT_ID, "lane", bot=True),
                        "guilds": [],
                        "session_id": "session-1",
                        "resume_gateway_url": self.gateway,
                        "application": {"id": str(BOT_ID), "flags": 0},
                    },
                )
                self.ready.set()
            elif data["op"] == 1:
                await socket.send_str(json.dumps({"op": 11}))
        return socket

    async def _send(self, event: str, data: dict[str, Any]) -> None:
        assert self._socket is not None
        self._sequence += 1
        await self._socket.send_str(
            json.dumps({"op": 0, "t": event, "s": self._sequence, "d": data})
        )

    async def dispatch(
        self,
        content: str,
        *,
        channel: str = "555",
        author: int = 42,
        guild: str | None = None,
        mention_bot: bool = False,
        message_id: str | None = None,
    ) -> str:
        message_id = message_id or snowflake()
        data: dict[str, Any] = {
            "id": message_id,
            "channel_id": channel,
            "type": 0,
            "author": user(author, "ada"),
            "content": content,
            "timestamp": now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [user(BOT_ID, "lane", bot=True)] if mention_bot else [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
        }
        if guild:
            data["guild_id"] = guild
            data["member"] = {"roles": [], "joined_at": now(), "deaf": False, "mute": False}
        await self._send("MESSAGE_CREATE", data)
        return message_id

    async def wait_for(self, count: int, seconds: float = 10) -> list[dict[str, Any]]:
        await wait_for(
            lambda: len(self.sent) >= count,
            f"{count} message(s) sent to the fake Discord",
            seconds,
            changed=self.changed,
        )
        return self.sent
