"""A fake Discord: the REST API discord.py calls, and a minimal v10 JSON gateway.

The gateway sends HELLO, answers IDENTIFY with READY (the IDENTIFY payload is
kept in ``identify``, its intents included) and heartbeats with ACK, then
dispatches the MESSAGE_CREATE (``dispatch``) and INTERACTION_CREATE
(``interact``) events a test pushes.

REST keeps every message as the platform would show it (``messages``: sent,
edited, deleted), whether sent in a channel (``POST /channels/{id}/messages``)
or as an interaction's follow-up (``POST /webhooks/{app}/{token}``); ``sent``
lists the sends, ``edits`` the edits with the time each arrived, ``calls``
every message call. Interaction callbacks (the deferred response) land in
``callbacks``, registered slash commands in ``commands`` (by scope: "global"
or the guild id). ``rate_limits`` makes the next message sends answer 429,
``edit_rate_limits`` the next edits; ``via=False`` leaves out the ``Via``
header, as an answer from outside Discord's API (discord.py then raises
instead of waiting). Content-Type is exactly ``application/json``, as
discord.py requires.

Attachments: ``attachment(name, data)`` gives the payload of a file as the
gateway describes it (id, filename, size, content_type, and a signed ``url``
served by the fake's CDN route ``/attachments/{channel}/{id}/{name}``; a voice
message has ``duration_secs`` and ``waveform``), to pass to ``dispatch`` or
``interact``. The CDN answers only a signed URL that has not expired (404
otherwise, as Discord does: ``ex`` is the hex expiry time, ``hm`` signs path
and expiry); ``expired=True`` gives one a day old, which
``POST /attachments/refresh-urls`` signs anew (``refreshed`` lists the URLs it
was asked for). ``cdn_hits`` lists every path asked for.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import json
import time
from typing import Any
from urllib.parse import urlsplit

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
        self.messages: dict[str, dict[str, Any]] = {}
        self.edits: list[tuple[float, str, str]] = []  # (loop time, message id, content)
        self.calls: list[tuple[float, str, str]] = []  # (loop time, method, path)
        self.callbacks: list[dict[str, Any]] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.identify: list[dict[str, Any]] = []
        self.typing: list[str] = []
        self.rate_limits = 0
        self.edit_rate_limits = 0
        self.retry_after = 0.2
        self.via = True
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self._socket: web.WebSocketResponse | None = None
        self._sequence = 0
        self._webhooks: dict[str, str] = {}  # interaction token -> its channel
        api = "/api/v10"
        app = web.Application()
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_get(f"{api}/gateway", self._gateway_url)
        app.router.add_get(f"{api}/gateway/bot", self._gateway_url)
        app.router.add_post(f"{api}/channels/{{channel}}/messages", self._message)
        app.router.add_patch(f"{api}/channels/{{channel}}/messages/{{id}}", self._edit)
        app.router.add_delete(f"{api}/channels/{{channel}}/messages/{{id}}", self._delete)
        app.router.add_post(f"{api}/channels/{{channel}}/typing", self._typing)
        app.router.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        app.router.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._followup)
        app.router.add_patch(f"{api}/webhooks/{{app}}/{{token}}/messages/{{id}}", self._edit)
        app.router.add_delete(f"{api}/webhooks/{{app}}/{{token}}/messages/{{id}}", self._delete)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._register)
        app.router.add_put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._register)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{name}", self._cdn)
        app.router.add_post(f"{api}/attachments/refresh-urls", self._refresh)
        self.files: dict[str, bytes] = {}
        self.cdn_hits: list[str] = []
        self.refreshed: list[str] = []
        self.refresh_status: int | None = None  # refresh-urls answers this error when set
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

    def attachment(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        size: int | None = None,
        voice: bool = False,
        channel: str = "555",
        expired: bool = False,
    ) -> dict[str, Any]:
        """A file as a MESSAGE_CREATE lists it; ``size`` as declared (the bytes' by default)."""
        attachment_id = snowflake()
        path = f"/attachments/{channel}/{attachment_id}/{name}"
        self.files[path] = data
        url = self._signed(path, time.time() - 86400 if expired else time.time() + 86400)
        payload: dict[str, Any] = {
            "id": attachment_id,
            "filename": name,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
        }
        if content_type:
            payload["content_type"] = content_type
        if voice:
            payload["duration_secs"] = 2.5
            payload["waveform"] = base64.b64encode(bytes(range(0, 256, 8))).decode()
        return payload

    def _signed(self, path: str, expires: float) -> str:
        ex = f"{int(expires):x}"
        issued = f"{int(expires) - 86400:x}"
        return str(self.server.make_url(path)) + f"?ex={ex}&is={issued}&hm={_sign(path, ex)}&"

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self.cdn_hits.append(request.path)
        self.changed.set()
        data = self.files.get(request.path)
        ex = request.query.get("ex", "")
        signed = request.query.get("hm") == _sign(request.path, ex)
        if data is None or not signed or int(ex or "0", 16) < time.time():
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _refresh(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        if self.refresh_status is not None:
            return self._json({"message": "Missing Access", "code": 50001}, self.refresh_status)
        urls = (await request.json())["attachment_urls"]
        self.refreshed.extend(urls)
        later = time.time() + 86400
        return self._json(
            {
                "refreshed_urls": [
                    {"original": url, "refreshed": self._signed(urlsplit(url).path, later)}
                    for url in urls
                    if urlsplit(url).path in self.files
                ]
            }
        )

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

    def _too_fast(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after), "X-RateLimit-Scope": "user"}
        if self.via:
            headers["Via"] = "1.1 google"
        return self._json(
            {
                "message": "You are being rate limited.",
                "retry_after": self.retry_after,
                "global": False,
            },
            429,
            headers,
        )

    def _record(self, request: web.Request) -> None:
        self.calls.append((asyncio.get_running_loop().time(), request.method, request.path))
        self.changed.set()

    def _payload(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": message["id"],
            "channel_id": message["channel_id"],
            "type": 0,
            "author": user(BOT_ID, "lane", bot=True),
            "content": message["content"],
            "timestamp": now(),
            "edited_timestamp": now() if message["edits"] else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
        }

    async def _create(self, request: web.Request, channel: str, webhook: bool) -> web.Response:
        body = await request.json()
        self._record(request)
        if self.rate_limits:
            self.rate_limits -= 1
            return self._too_fast()
        self.sent.append({"channel_id": channel, **body, **({"webhook": True} if webhook else {})})
        message = {
            "id": snowflake(),
            "channel_id": channel,
            "content": body.get("content"),
            "edits": 0,
            "deleted": False,
            "webhook": webhook,
            "reference": (body.get("message_reference") or {}).get("message_id"),
        }
        self.messages[message["id"]] = message
        return self._json(self._payload(message))

    async def _message(self, request: web.Request) -> web.Response:
        return await self._create(request, request.match_info["channel"], webhook=False)

    async def _followup(self, request: web.Request) -> web.Response:
        channel = self._webhooks.get(request.match_info["token"])
        if channel is None:
            return self._json({"message": "Unknown Webhook", "code": 10015}, 404)
        return await self._create(request, channel, webhook=True)

    async def _edit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request)
        if self.edit_rate_limits:
            self.edit_rate_limits -= 1
            return self._too_fast()
        message = self.messages.get(request.match_info["id"])
        if message is None or message["deleted"]:
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        if "content" in body:
            message["content"] = body["content"]
        message["edits"] += 1
        self.edits.append((asyncio.get_running_loop().time(), message["id"], message["content"]))
        return self._json(self._payload(message))

    async def _delete(self, request: web.Request) -> web.Response:
        self._record(request)
        message = self.messages.get(request.match_info["id"])
        if message is None or message["deleted"]:
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        message["deleted"] = True
        return web.Response(status=204)

    async def _callback(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request)
        self.callbacks.append({"id": request.match_info["id"], **body})
        return self._json(
            {
                "interaction": {
                    "id": request.match_info["id"],
                    "type": 2,
                    "response_message_loading": body.get("type") == 5,
                    "response_message_ephemeral": False,
                },
            }
        )

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        scope = request.match_info.get("guild", "global")
        self.commands[scope] = body
        registered = [
            {
                **command,
                "id": snowflake(),
                "application_id": str(BOT_ID),
                "version": "1",
                **({"guild_id": scope} if scope != "global" else {}),
            }
            for command in body
        ]
        self.changed.set()
        return self._json(registered)

    def visible(self, channel: str = "555") -> list[str]:
        """What a person sees in ``channel``: the bot's messages, oldest first."""
        return [
            m["content"]
            for m in self.messages.values()
            if m["channel_id"] == channel and not m["deleted"]
        ]

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
                self.identify.append(data["d"])
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
        attachments: list[dict[str, Any]] | None = None,
        stickers: list[str] | None = None,
    ) -> str:
        """A person writes: MESSAGE_CREATE over the gateway (a voice message when one of
        ``attachments`` has a waveform); its id."""
        message_id = message_id or snowflake()
        files = attachments or []
        voice = any("waveform" in f for f in files)
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
            "attachments": files,
            "embeds": [],
            "pinned": False,
            "flags": 1 << 13 if voice else 0,  # IS_VOICE_MESSAGE
        }
        if stickers:
            data["sticker_items"] = [
                {"id": snowflake(), "name": name, "format_type": 1} for name in stickers
            ]
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

    async def interact(
        self,
        command: str,
        options: dict[str, str] | None = None,
        *,
        channel: str = "555",
        author: int = 42,
        guild: str | None = None,
        files: dict[str, dict[str, Any]] | None = None,
    ) -> str:
        """A person runs a slash command: INTERACTION_CREATE over the gateway; its id.
        ``files``: attachment options (name to ``attachment(...)``), as ``resolved``."""
        interaction_id = snowflake()
        token = f"interaction-token-{interaction_id}"
        self._webhooks[token] = channel
        data: dict[str, Any] = {
            "id": interaction_id,
            "application_id": str(BOT_ID),
            "type": 2,
            "data": {
                "id": snowflake(),
                "name": command,
                "type": 1,
                "options": [
                    {"name": name, "type": 3, "value": value}
                    for name, value in (options or {}).items()
                ]
                + [
                    {"name": name, "type": 11, "value": file["id"]}
                    for name, file in (files or {}).items()
                ],
                "resolved": {"attachments": {f["id"]: f for f in (files or {}).values()}},
            },
            "channel_id": channel,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": "0",
            "attachment_size_limit": 8388608,
            "entitlements": [],
            "authorizing_integration_owners": {},
        }
        if guild:
            data["guild_id"] = guild
            data["channel"] = {
                "id": channel,
                "type": 0,
                "guild_id": guild,
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            }
            data["member"] = {
                "user": user(author, "ada"),
                "roles": [],
                "joined_at": now(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": "0",
            }
            data["context"] = 0
        else:
            data["channel"] = {"id": channel, "type": 1, "recipients": [user(author, "ada")]}
            data["user"] = user(author, "ada")
            data["context"] = 1
        await self._send("INTERACTION_CREATE", data)
        return interaction_id


def _sign(path: str, ex: str) -> str:
    return hashlib.sha256(f"fake-cdn:{path}:{ex}".encode()).hexdigest()
