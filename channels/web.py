"""The built-in web chat: ``GET /`` serves the page, ``POST /api/chat`` streams a turn as NDJSON.

A message goes through the dispatcher like any other channel's (access,
commands, the inbox, the chat's lane); the turn's events stream back on the
request that sent it. Each line of the stream is one ``AgentEvent`` as
``{"type": ..., "data": ...}``; the ``done`` line also carries ``html``, the
final answer rendered and sanitized server-side, and a chat command's answer
comes as one ``command`` line. The page needs nothing from the internet.

Events are queued per request, never written from the turn itself, so a slow
browser does not slow the turn down. A browser that leaves stops its turn (as
the turn timeout would), so abandoned turns hold no lane slots.

Who may use it, and what a page from elsewhere may not do: ``channels.web_access``;
how a file sent with a message is read and stored: ``channels.web_upload``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web

from bot.channel import (
    ChannelHost,
    ChannelState,
    ChannelTraits,
    Reply,
    ReplyKind,
    ReplyStream,
    Sink,
    StreamOptions,
)
from bot.config import ChannelConfig, Config
from bot.dispatch import Outcome
from bot.events import AgentEvent, EventType
from bot.formatting import FormatMode, render_html
from bot.inbound import InboundMessage, JSONPart, MediaPart
from bot.media import MediaFetch
from channels.web_access import (
    WebConfig,
    WebGuard,
    browser_id,
    new_browser_cookie,
    security_headers,
)
from channels.web_upload import Upload, UploadRefused, Uploads, media_fetch, reads_own_body

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(files("bot") / "static"))
MAX_TEXT = 20_000
GRACE = 30.0  # seconds a request waits beyond the turn timeout before it gives up
LEFT_EVERY = 1.0  # seconds between looks at whether a waiting browser is still there
BODY_TIMEOUT = 10.0  # seconds for a JSON body (this route reads its own body: uploads)

TRAITS = ChannelTraits(
    tool_format=FormatMode.MARKDOWN, shows_reasoning=True, streams=True, queue_mode="followup"
)


@dataclass(slots=True)
class _Waiter:
    """One open ``/api/chat`` request: the lines for it, then None when it is settled."""

    lines: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    done: dict[str, Any] = field(default_factory=dict)  # the turn's done data, for the reply
    wrote: bool = False
    failed: bool = False

    def put(self, kind: str, data: dict[str, Any]) -> None:
        self.wrote = True
        self.lines.put_nowait({"type": kind, "data": data})


class WebSink(Sink):
    name = "web"
    traits = TRAITS

    def __init__(self, tool_results: str = "summary") -> None:
        self.waiting: dict[str, _Waiter] = {}
        self.tool_results = tool_results  # agent.show_tool_results: off | summary | full

    def expect(self, message: InboundMessage) -> _Waiter:
        waiter = self.waiting[message.dedupe_key] = _Waiter()
        return waiter

    def forget(self, message: InboundMessage) -> None:
        self.waiting.pop(message.dedupe_key, None)

    def render(self, reply: Reply) -> list[JSONPart]:
        return [{"kind": reply.kind.value, "text": reply.text, "reasoning": reply.reasoning}]

    async def send_part(self, message: InboundMessage, part: JSONPart) -> None:
        waiter = self.waiting.get(message.dedupe_key)
        if waiter is None:  # the browser left, or this process restarted since
            return
        kind, text = part["kind"], part["text"]
        if kind == ReplyKind.COMMAND.value:
            waiter.put("command", {"text": text, "html": render_html(text)})
        elif kind == ReplyKind.ERROR.value:
            if not waiter.failed:  # the turn's error event was streamed already
                waiter.put("error", {"message": text})
        else:
            data = {**waiter.done, "text": text, "html": render_html(text)}
            if part.get("reasoning") and not data.get("thinking"):
                data["thinking"] = part["reasoning"]
            waiter.put("done", data)

    async def notify(self, message: InboundMessage, text: str) -> None:
        waiter = self.waiting.get(message.dedupe_key)
        if waiter is not None:
            waiter.put("error", {"message": text})

    async def media_fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch:
        return await media_fetch(message, part)  # uploads are read from the media store

    def open_stream(self, message: InboundMessage, options: StreamOptions) -> ReplyStream:
        stream = _WebStream(self.waiting.get(message.dedupe_key), live=options.live)
        stream.tool_results = self.tool_results
        return stream

    async def settled(self, message: InboundMessage) -> None:
        waiter = self.waiting.get(message.dedupe_key)
        if waiter is None:
            return
        if not waiter.wrote:
            waiter.put("error", {"message": "No answer was given to this message."})
        waiter.lines.put_nowait(None)


class _WebStream:
    """Every event of the turn, as it comes, except ``done`` (sent with the rendered reply)."""

    tool_results = "summary"

    def __init__(self, waiter: _Waiter | None, *, live: bool) -> None:
        self.waiter = waiter
        self.live = live  # False (channels.web.streaming: false): the answer comes whole

    async def feed(self, event: AgentEvent) -> None:
        waiter = self.waiter
        if waiter is None or (not self.live and event.type in QUIET):
            return
        data = dict(event.data)
        if event.type is EventType.DONE:
            waiter.done = data
            return
        if event.type is EventType.ERROR:
            data.pop("error", None)
            waiter.failed = True
        if event.type is EventType.TOOL_RESULT:
            if self.tool_results == "off":
                return
            if self.tool_results != "full":
                data["content"] = ""  # what the model read; the person gets ``display``
        waiter.put(event.type.value, data)

    async def close(self) -> dict[str, Any] | None:
        return None


QUIET = (EventType.TEXT, EventType.THINKING)  # not sent when not streaming


class WebChannel:
    name: ClassVar[str] = "web"
    traits: ClassVar[ChannelTraits] = TRAITS
    config_model: ClassVar[type[ChannelConfig]] = WebConfig

    def __init__(self, host: ChannelHost, env: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.sink = WebSink(host.config.agent.show_tool_results)
        self.guard = WebGuard.from_env(host.config.channel("web"), env or {}, host.public_url)
        media = host.config.agent.media
        self.uploads = Uploads(host.dispatcher.media.store, max_bytes=media.max_bytes)

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> WebChannel:
        return cls(host, env)

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
        app.on_response_prepare.append(security_headers)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def info(self, request: web.Request) -> web.Response:
        runtime = self.host.runtime
        self.guard.admit(request, demo=runtime.models.demo_reason is not None)
        return web.json_response(
            {
                "model": runtime.model,
                "demo": runtime.models.demo_reason,
                "thinking_mode": runtime.thinking_mode.value,
                "max_bytes": self.uploads.max_bytes,  # the largest file the page may send
            }
        )

    @reads_own_body
    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.guard.same_origin(request, uploads=True)
        self.guard.admit(request, demo=self.host.runtime.models.demo_reason is not None)
        if self.host.draining:
            raise web.HTTPServiceUnavailable(text="the server is restarting; try again shortly")
        try:
            upload = await self._read(request)
        except UploadRefused as refused:
            return refused.response(request)
        sender = self.guard.client_address(request)
        browser = browser_id(request)
        cookie: web.StreamResponse | None = None
        if browser is None:  # a browser's first message: its conversations are its own
            cookie = web.StreamResponse()
            browser = new_browser_cookie(cookie, secure=request.secure)
        inbound = InboundMessage(
            "web",
            f"{browser}:{upload.session}",
            sender,
            upload.text,
            message_id=f"{time.time_ns()}",
            attachments=upload.parts,
        )
        waiter = self.sink.expect(inbound)
        try:
            # Stored before the stream starts: a store that is down answers 503.
            outcome = await self._submit(inbound, upload)
            if outcome is Outcome.DRAINING:
                raise web.HTTPServiceUnavailable(text="the server is restarting; try again shortly")
            response = await _open_stream(request, cookie)
            if outcome is Outcome.DUPLICATE:
                waiter.put("error", {"message": "This message was sent before."})
                waiter.lines.put_nowait(None)
            if not await self._pump(request, waiter, response):
                self.host.dispatcher.abandon(inbound)
            return response
        finally:
            self.sink.forget(inbound)

    async def _read(self, request: web.Request) -> Upload:
        """The message's session, text and file (a file is stored before the message)."""
        if request.content_type == "multipart/form-data":
            return await self.uploads.read(request)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                session, text = await _read_body(request)
        except TimeoutError:
            raise UploadRefused(408, "the request body did not arrive in time") from None
        return Upload(session, text)

    async def _submit(self, inbound: InboundMessage, upload: Upload) -> Outcome:
        """Store the message; a file it brought is removed again if it is not taken."""
        outcome = None
        try:
            outcome = await self.host.dispatcher.submit(inbound, answer_here=True)
            return outcome
        finally:
            if outcome is not Outcome.ACCEPTED:
                await self.uploads.discard(upload)

    async def _pump(
        self, request: web.Request, waiter: _Waiter, response: web.StreamResponse
    ) -> bool:
        """Stream the lines until the turn settles; False if the browser left first."""
        limit = self.host.config.agent.queuing.turn_timeout + GRACE
        try:
            async with asyncio.timeout(limit):
                while True:
                    try:
                        line = await asyncio.wait_for(waiter.lines.get(), LEFT_EVERY)
                    except TimeoutError:
                        if _left(request):
                            return False
                        continue
                    if line is None:
                        return True
                    try:
                        await _send(response, line)
                    except ConnectionError:
                        return False
        except TimeoutError:
            log.warning("a web chat turn gave no answer within %.0fs", limit)
            await _send(
                response,
                {"type": "error", "data": {"message": "No answer came in time; try again."}},
            )
            return False


async def _read_body(request: web.Request) -> tuple[str, str]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise web.HTTPBadRequest(text='send JSON: {"session_id": ..., "text": ...}') from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="send a JSON object")
    session = body.get("session_id")
    text = body.get("text")
    if not isinstance(session, str) or not session or len(session) > 200:
        raise web.HTTPBadRequest(text="session_id must be a non-empty string")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise web.HTTPBadRequest(text=f"text must be 1 to {MAX_TEXT} characters")
    return session, text


def _left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _open_stream(
    request: web.Request, cookie: web.StreamResponse | None = None
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    if cookie is not None:
        response.cookies.update(cookie.cookies)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, line: dict[str, Any]) -> None:
    encoded = json.dumps(line, ensure_ascii=False, default=str)
    await response.write(encoded.encode() + b"\n")
