"""The built-in web chat: ``GET /`` serves the page, ``POST /api/chat`` streams a turn as NDJSON.

The page needs nothing from the internet. Each line of the stream is one
``AgentEvent`` as ``{"type": ..., "data": ...}``; the ``done`` event also
carries ``html``, the final answer rendered and sanitized server-side.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web

from bot.access import Verdict
from bot.channel import ChannelHost, ChannelState
from bot.commands import handle_command
from bot.config import Config
from bot.events import EventType
from bot.formatting import render_html
from bot.inbound import InboundMessage
from bot.storage.base import UNAVAILABLE

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(files("bot") / "static"))
MAX_TEXT = 20_000


class WebChannel:
    name: ClassVar[str] = "web"

    def __init__(self, host: ChannelHost) -> None:
        self.host = host

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> WebChannel:
        return cls(host)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        if not config.channel("web").enabled:
            return ChannelState("web", False, "disabled in config")
        return ChannelState("web", True, "served at / by chatlane serve")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
        app.router.add_get("/api/info", self.info)
        app.router.add_post("/api/chat", self.chat)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def info(self, request: web.Request) -> web.Response:
        runtime = self.host.runtime
        return web.json_response(
            {
                "model": runtime.model,
                "demo": runtime.models.demo_reason,
                "thinking_mode": runtime.thinking_mode.value,
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text='send JSON: {"session_id": ..., "text": ...}') from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="send a JSON object")
        session = body.get("session_id")
        text = body.get("text")
        if not isinstance(session, str) or not session or len(session) > 200:
            raise web.HTTPBadRequest(text="session_id must be a non-empty string")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise web.HTTPBadRequest(text=f"text must be 1 to {MAX_TEXT} characters")
        if self.host.draining:
            raise web.HTTPServiceUnavailable(text="the server is restarting; try again shortly")
        sender = request.remote or "unknown"
        inbound = InboundMessage("web", session, sender, text, message_id=f"{time.time_ns()}")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        await response.prepare(request)
        verdict = self.host.dispatcher.access.check(inbound)
        if verdict.verdict is not Verdict.ALLOWED:
            await _send(response, "error", {"message": verdict.notice or "Not allowed."})
            return response
        runtime = self.host.runtime
        session_id = inbound.session_id
        answer = await handle_command(runtime, session_id, text)
        if answer is not None:
            await _send(response, "command", {"text": answer, "html": render_html(answer)})
            return response
        try:
            async for event in runtime.run(session_id, text, channel="web"):
                data = dict(event.data)
                if event.type is EventType.DONE:
                    data["html"] = render_html(data["text"])
                elif event.type is EventType.ERROR:
                    data.pop("error", None)
                await _send(response, event.type.value, data)
        except UNAVAILABLE as error:
            log.warning("storage unreachable during a web chat turn (%s)", error)
            await _send(
                response,
                "error",
                {"message": "The bot's storage is unreachable just now. Please try again shortly."},
            )
        return response


async def _send(response: web.StreamResponse, kind: str, data: dict[str, Any]) -> None:
    line = json.dumps({"type": kind, "data": data}, ensure_ascii=False, default=str)
    await response.write(line.encode() + b"\n")
