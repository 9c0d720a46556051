"""A fake Twilio REST API on 127.0.0.1: ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

Records every message; ``fail(status, code)`` queues an error answer for the next call.
MMS media: ``add_media(name, data)`` serves bytes at
``/2010-04-01/Accounts/{sid}/Messages/MM1/Media/{name}`` to the account's basic auth only,
through a 307 redirect to ``/cdn/{name}`` (as Twilio does); ``media_hits`` counts fetches.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers import wait_for

SID = "AC" + "1" * 32
TOKEN = "twilio-auth-token-0123456789"
FROM = "+15550009999"


class FakeTwilio:
    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.failed: list[dict[str, str]] = []
        self.failures: list[tuple[int, int]] = []
        self.changed = asyncio.Event()
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/MM1/Media/{name}", self._media)
        app.router.add_get("/cdn/{name}", self._cdn)
        # chatlane check --live: the account and its numbers
        app.router.add_get("/2010-04-01/Accounts/{sid}.json", self._account)
        app.router.add_get("/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json", self._numbers)
        self.media: dict[str, bytes] = {}
        self.media_hits: list[str] = []
        self.cdn_headers: list[dict[str, str]] = []
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def __aenter__(self) -> FakeTwilio:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    def add_media(self, name: str, data: bytes) -> str:
        self.media[name] = data
        return f"{self.base_url}/2010-04-01/Accounts/{SID}/Messages/MM1/Media/{name}"

    async def _media(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        name = request.match_info["name"]
        self.media_hits.append(name)
        if name not in self.media:
            return web.json_response({"code": 20404, "message": "not found"}, status=404)
        raise web.HTTPTemporaryRedirect(f"/cdn/{name}")

    async def _cdn(self, request: web.Request) -> web.Response:
        self.cdn_headers.append(dict(request.headers))
        return web.Response(body=self.media[request.match_info["name"]])

    def _authorized(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        return request.headers.get("Authorization") == expected

    async def _account(self, request: web.Request) -> web.Response:
        if not self._authorized(request) or request.match_info["sid"] != SID:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        return web.json_response({"sid": SID, "friendly_name": "Lane", "status": "active"})

    async def _numbers(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        wanted = request.query.get("PhoneNumber")
        found = [{"phone_number": FROM}] if wanted in (None, FROM) else []
        return web.json_response({"incoming_phone_numbers": found})

    def fail(self, status: int, code: int) -> None:
        self.failures.append((status, code))

    async def wait_for(self, count: int, seconds: float = 10) -> list[dict[str, str]]:
        await wait_for(
            lambda: len(self.messages) >= count,
            f"{count} SMS sent through the fake Twilio",
            seconds,
            changed=self.changed,
        )
        return self.messages

    async def _create(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected or request.match_info["sid"] != SID:
            return web.json_response(
                {"code": 20003, "message": "Authenticate", "status": 401}, status=401
            )
        form = {k: str(v) for k, v in (await request.post()).items()}
        if self.failures:
            status, code = self.failures.pop(0)
            self.failed.append(form)
            return web.json_response(
                {"code": code, "message": "scripted", "status": status}, status=status
            )
        self.messages.append(form)
        self.changed.set()
        body: dict[str, Any] = {
            "sid": f"SM{len(self.messages):032d}",
            "status": "queued",
            "to": form.get("To"),
            "from": form.get("From"),
            "body": form.get("Body"),
            "account_sid": SID,
        }
        return web.json_response(body, status=201)
