"""A fake Telegram Bot API on 127.0.0.1: ``/bot{token}/{method}``, as python-telegram-bot calls it.

Records every call; ``fail(method, status, description, retry_after=None)``
queues an error answer for the next call of ``method``; ``push_update`` feeds
``getUpdates`` (long polling).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers import wait_for

BOT_ID = 777000
BOT_USERNAME = "lane_bot"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    via: str = ""  # the path prefix the client was given (``base_url_for``), if any


@dataclass
class FakeTelegram:
    token: str = "123456:TEST-TOKEN"
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, list[tuple[int, str, dict[str, Any]]]] = field(default_factory=dict)
    updates: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_post("/via/{via}/bot{token}/{method}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        self._next_message = 1000

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def base_url_for(self, via: str) -> str:
        """A base URL whose calls are recorded with ``via``: tells clients apart."""
        return f"{self.base_url}/via/{via}"

    async def __aenter__(self) -> FakeTelegram:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    def fail(
        self,
        method: str,
        status: int,
        description: str,
        retry_after: int | None = None,
        **parameters: Any,
    ) -> None:
        """Answer the next call of ``method`` with this error; ``parameters`` are the
        Bot API's ResponseParameters (``migrate_to_chat_id``...)."""
        if retry_after is not None:
            parameters["retry_after"] = retry_after
        self.failures.setdefault(method, []).append((status, description, parameters))

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.method == method]

    async def wait_for(
        self, method: str, count: int = 1, seconds: float = 10
    ) -> list[dict[str, Any]]:
        await wait_for(
            lambda: len(self.sent(method)) >= count,
            f"{count} {method} call(s) to the fake Telegram",
            seconds,
            changed=self.changed,
        )
        return self.sent(method)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            data = await request.json()
            return dict(data or {})
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            text = str(value)
            try:
                params[key] = json.loads(text)
            except ValueError:
                params[key] = text
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        via = request.match_info.get("via", "")
        params = await self._params(request)
        queued = self.failures.get(method)
        if queued:
            status, description, parameters = queued.pop(0)
            self.calls.append(Call(f"{method}!failed", params, via))
            body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
            if parameters:
                body["parameters"] = parameters
            return web.json_response(body, status=status)
        if method == "getUpdates":
            timeout = float(params.get("timeout") or 0)
            try:
                async with asyncio.timeout(min(timeout, 1.0)):
                    first = await self.updates.get()
            except TimeoutError:
                return web.json_response({"ok": True, "result": []})
            self.calls.append(Call(method, params, via))
            return web.json_response({"ok": True, "result": [first]})
        self.calls.append(Call(method, params, via))
        self.changed.set()
        return web.json_response({"ok": True, "result": self._result(method, params)})

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "Lane",
                "username": BOT_USERNAME,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        if method == "sendMessage":
            self._next_message += 1
            return {
                "message_id": self._next_message,
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Lane"},
                "text": params.get("text", ""),
            }
        return True


def update(
    update_id: int,
    text: str,
    *,
    chat_id: int = 42,
    user_id: int = 42,
    chat_type: str = "private",
    username: str = "ada",
    entities: list[Any] | None = None,
    reply_to_bot: bool = False,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": update_id + 500,
        "date": int(time.time()),
        "chat": {
            "id": chat_id,
            "type": chat_type,
            **({"title": "Group"} if chat_type != "private" else {"first_name": "Ada"}),
        },
        "from": {"id": user_id, "is_bot": False, "first_name": "Ada", "username": username},
        "text": text,
    }
    if entities:
        message["entities"] = entities
    if reply_to_bot:
        message["reply_to_message"] = {
            "message_id": 1,
            "date": int(time.time()),
            "chat": message["chat"],
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Lane"},
            "text": "earlier",
        }
    return {"update_id": update_id, "message": message}
