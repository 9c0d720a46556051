"""A fake Telegram Bot API on 127.0.0.1: ``/bot{token}/{method}``, as python-telegram-bot calls it.

Records every call; ``fail(method, status, description, retry_after=None)``
queues an error answer for the next call of ``method``; ``push_update`` feeds
``getUpdates`` (long polling).

It keeps the chats as a user would see them (``visible(chat_id)``: each
message's current text after edits and deletions; ``drafts``: the last draft
per chat) and answers as the Bot API does: ``editMessageText`` with the same
content is 400 "message is not modified", an unknown message 400 "message to
edit not found", entities outside the text 400 "can't parse entities", text
over 4096 UTF-16 units 400 "message is too long", a draft outside a private
chat 400, a malformed command menu 400 "BOT_COMMAND_INVALID".

Files: ``add_file(data)`` keeps bytes and returns the file object an update
carries (``file_id``, ``file_unique_id``, ``file_size``); ``getFile`` answers
its ``file_path`` (400 "invalid file_id" for an unknown one, "file is too big"
past 20 MB, as the Bot API does) and ``GET /file/bot{token}/{file_path}``
serves the bytes (404 for a file added with ``refused=True``, 401 for a wrong
token), each download recorded in ``file_hits``. ``media_update`` builds an
update carrying a photo, voice note, document...
"""

from __future__ import annotations

import asyncio
import json
import re
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
    error: str = ""  # the description of the error it was answered with


@dataclass
class FakeTelegram:
    token: str = "123456:TEST-TOKEN"
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, list[tuple[int, str, dict[str, Any]]]] = field(default_factory=dict)
    updates: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: (chat_id, message_id) -> {"text", "entities"}: what the chat shows now
    messages: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    drafts: dict[int, str] = field(default_factory=dict)  # chat_id -> last draft text
    commands: list[dict[str, Any]] = field(default_factory=list)
    migrated: dict[int, int] = field(default_factory=dict)  # group id -> its supergroup's
    files: dict[str, tuple[str, bytes, int, bool]] = field(default_factory=dict)
    file_hits: list[str] = field(default_factory=list)  # file paths downloaded
    gate: asyncio.Event | None = None  # when set to an Event, downloads wait for it

    def __post_init__(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_post("/via/{via}/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
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

    def add_file(
        self,
        data: bytes,
        name: str = "file",
        *,
        size: int | None = None,
        refused: bool = False,
        path: str = "",
    ) -> dict[str, Any]:
        """Keep ``data`` to serve; the file object for an update. ``size`` is what
        Telegram declares (default: the real size); ``refused`` files are 404; ``path``
        replaces the ``file_path`` getFile answers (a local Bot API server's own)."""
        number = len(self.files) + 1
        file_id = f"FILE{number:04d}-{name}"
        declared = len(data) if size is None else size
        file_path = path or f"documents/file_{number}_{name}"
        self.files[file_id] = (file_path, data, declared, refused)
        return {"file_id": file_id, "file_unique_id": f"U{number}", "file_size": declared}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401, text="Unauthorized")
        path = request.match_info["path"]
        self.file_hits.append(path)
        self.changed.set()
        if self.gate is not None:
            await self.gate.wait()
        for file_path, data, _, refused in self.files.values():
            if file_path == path and not refused:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    def _file(self, params: dict[str, Any]) -> dict[str, Any] | str:
        """getFile's result, or the Bot API's refusal."""
        known = self.files.get(str(params.get("file_id")))
        if known is None:
            return "invalid file_id"
        file_path, _, size, _ = known
        if size > 20 * 1024 * 1024:
            return "file is too big"
        unique = f"U{list(self.files).index(str(params['file_id'])) + 1}"
        return {
            "file_id": params["file_id"],
            "file_unique_id": unique,
            "file_size": size,
            "file_path": file_path,
        }

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.method == method]

    def visible(self, chat_id: int | None = None) -> list[str]:
        """The bot's messages as the chat shows them now, oldest first."""
        return [
            shown["text"]
            for (chat, _), shown in sorted(self.messages.items(), key=lambda kv: kv[0][1])
            if chat_id is None or chat == chat_id
        ]

    async def wait_until(self, check: Any, what: str, seconds: float = 10) -> None:
        await wait_for(check, what, seconds, changed=self.changed)

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
        moved = self.migrated.get(int(params.get("chat_id") or 0))
        if moved is not None:  # every call to the old group, as Telegram answers it
            queued = [(400, "Bad Request: group chat was upgraded to a supergroup chat", {})]
            queued[0][2]["migrate_to_chat_id"] = moved
        if queued:
            status, description, parameters = queued.pop(0)
            self.calls.append(Call(f"{method}!failed", params, via, description))
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
        refused = self._refusal(method, params)
        if refused is not None:
            self.calls.append(Call(f"{method}!failed", params, via, refused))
            return web.json_response(
                {"ok": False, "error_code": 400, "description": f"Bad Request: {refused}"},
                status=400,
            )
        self.calls.append(Call(method, params, via))
        result = self._result(method, params)
        self.changed.set()
        return web.json_response({"ok": True, "result": result})

    def _refusal(self, method: str, params: dict[str, Any]) -> str | None:
        """What the Bot API says to a call it refuses, or None."""
        if method in ("sendMessage", "editMessageText", "sendMessageDraft"):
            text = str(params.get("text") or "")
            size = len(text.encode("utf-16-le")) // 2
            if not text.strip() and method != "sendMessageDraft":
                return "message text is empty"
            if size > 4096:
                return "message is too long"
            for entity in params.get("entities") or []:
                if entity["offset"] < 0 or entity["offset"] + entity["length"] > size:
                    return "can't parse entities: entity beyond the end of the text"
        key = (int(params.get("chat_id") or 0), int(params.get("message_id") or 0))
        if method == "editMessageText":
            shown = self.messages.get(key)
            if shown is None:
                return "message to edit not found"
            if (shown["text"], shown["entities"]) == (params["text"], params.get("entities") or []):
                return (
                    "message is not modified: specified new message content and reply markup"
                    " are exactly the same as a current content and reply markup of the message"
                )
        if method == "deleteMessage" and key not in self.messages:
            return "message to delete not found"
        if method == "sendMessageDraft" and (key[0] <= 0 or not params.get("draft_id")):
            return "TEXTDRAFT_PEER_INVALID" if key[0] <= 0 else "draft_id must be non-zero"
        if method == "getFile":
            found = self._file(params)
            return found if isinstance(found, str) else None
        if method == "setMyCommands":
            commands = params.get("commands")
            valid = isinstance(commands, list) and all(
                re.fullmatch(r"[a-z0-9_]{1,32}", str(c.get("command")))
                and 1 <= len(str(c.get("description") or "")) <= 256
                for c in commands
            )
            if not valid:
                return "BOT_COMMAND_INVALID"
        return None

    def _message(self, params: dict[str, Any], message_id: int) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Lane"},
            "text": params.get("text", ""),
        }

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        shown = {"text": params.get("text", ""), "entities": params.get("entities") or []}
        key = (int(params.get("chat_id") or 0), int(params.get("message_id") or 0))
        if method == "editMessageText":
            self.messages[key] = shown
            return self._message(params, key[1])
        if method == "deleteMessage":
            del self.messages[key]
        if method == "sendMessageDraft":
            self.drafts[key[0]] = shown["text"]
        if method == "setMyCommands":
            self.commands = params["commands"]
        if method == "getFile":
            return self._file(params)
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
            self.messages[(key[0], self._next_message)] = shown
            self.drafts.pop(key[0], None)  # the message takes the draft's place
            return self._message(params, self._next_message)
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


def media_update(
    update_id: int,
    caption: str | None = None,
    *,
    chat_id: int = 42,
    chat_type: str = "private",
    caption_entities: list[Any] | None = None,
    **media: Any,
) -> dict[str, Any]:
    """An update whose message carries a file instead of text: ``photo=[sizes]``,
    ``voice={...}``, ``document={...}``, ``sticker={...}`` (file objects from
    ``FakeTelegram.add_file`` plus the fields the Bot API sends with them)."""
    body = update(update_id, "", chat_id=chat_id, chat_type=chat_type)
    message = body["message"]
    del message["text"]
    if caption is not None:
        message["caption"] = caption
    if caption_entities:
        message["caption_entities"] = caption_entities
    message.update(media)
    return body
