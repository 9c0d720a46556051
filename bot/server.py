"""``chatlane serve``: one aiohttp process serving every configured channel.

The process is built by ``bot.wiring.wire``; start-up and shutdown are one
``cleanup_ctx`` generator around ``Wiring.start`` and ``Wiring.stop``: open
storage, start each channel and the dispatcher; on the way out (SIGTERM
included) stop taking new turns, let running ones finish within
``server.shutdown_grace``, stop channels, close storage.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from bot.channel import ChannelHost
from bot.config import Config, data_dir
from bot.datadir import WriteProbe
from bot.logs import request_id
from bot.metrics import CONTENT_TYPE, refusal, scrape
from bot.runtime import AgentRuntime
from bot.storage.base import UNAVAILABLE
from bot.wiring import Wiring, wire

log = logging.getLogger(__name__)

# Our own request ids: this process's prefix and a count (a uuid4 each took a getrandom
# call per request).
_PROCESS_PREFIX = uuid.uuid4().hex[:8]
_request_count = itertools.count(1)

BODY_TIMEOUT = 10.0  # seconds for a request's whole body to arrive (DESIGN 7.6)
MOST_BODY_READS = 128  # bodies read at once; a stalled crowd beyond it is turned away at once
YOUNG_OBJECTS = 10_000  # allocations (net) that start a young collection; CPython's default is 700

WIRING_KEY = web.AppKey("wiring", Wiring)
HOST_KEY = web.AppKey("host", ChannelHost)
METRICS_ACCESS_KEY = web.AppKey("metrics_access", tuple)  # (token or None, public)
DISK_KEY = web.AppKey("disk", WriteProbe)


def create_app(
    runtime: AgentRuntime | None = None,
    *,
    config: Config | None = None,
    env: Mapping[str, str] | None = None,
    body_timeout: float = BODY_TIMEOUT,
    most_body_reads: int = MOST_BODY_READS,
) -> web.Application:
    wiring = wire(config, env, runtime=runtime)
    bodies = body_deadline(body_timeout, most_body_reads)
    app = web.Application(
        client_max_size=1024**2, middlewares=[request_ids, bodies, storage_unavailable]
    )
    app[WIRING_KEY] = wiring
    app[HOST_KEY] = wiring.host
    wiring.add_routes(app)
    app.router.add_get("/healthz", healthz)
    source = os.environ if env is None else env
    app[METRICS_ACCESS_KEY] = (source.get("CHATLANE_METRICS_TOKEN"), bool(source.get("PUBLIC_URL")))
    app[DISK_KEY] = WriteProbe(data_dir(source))
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_lifecycle)
    return app


@web.middleware
async def request_ids(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every log line of a request carries its id: the router's ``X-Request-ID``
    (Heroku and most PaaS routers set one) or a fresh one."""
    given = request.headers.get("X-Request-ID", "")
    if given and given.isprintable():
        ident = given[:64]
    else:
        ident = f"{_PROCESS_PREFIX}-{next(_request_count):x}"
    token = request_id.set(ident)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    finally:
        request_id.reset(token)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body_deadline(timeout: float, most: int) -> Any:
    """Read every request body before its handler runs, within ``timeout`` seconds (408
    otherwise), and at most ``most`` at once (503 beyond that): a crowd of clients that
    send headers and then stall cannot hold sockets and file descriptors open. Each
    webhook's body is unauthenticated until it has been read (the signature covers it),
    so the cap covers every read that waits. A body that arrived whole with its headers
    (most webhooks) is read at once, with no clock to set: it cannot stall. Handlers
    then read the cached body."""
    reading = 0

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal reading
        # A route marked reads_own_body streams and times its body itself (web uploads).
        own = getattr(request.match_info.handler, "reads_own_body", False)
        if not request.can_read_body or own:
            return await handler(request)
        if request.content.is_eof():  # all of it came with the headers: nothing to wait for
            try:
                await request.read()
            except RequestPayloadError as error:
                return _unreadable(request, error)
            return await handler(request)
        if reading >= most:
            log.warning("%d request bodies being read already; answered 503", most)
            return _cut(request, 503, "too many requests being read; try again shortly")
        reading += 1
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            log.warning("request body not received within %ss; answered 408", timeout)
            return _cut(request, 408, f"the request body did not arrive within {timeout:g} s")
        except RequestPayloadError as error:
            return _unreadable(request, error)
        finally:
            reading -= 1
        return await handler(request)

    return middleware


def _unreadable(request: web.Request, error: RequestPayloadError) -> web.Response:
    """A body that could not be read: e.g. a Content-Encoding its bytes do not match."""
    log.info("unreadable request body on %s (%s); answered 400", request.path, error)
    return _cut(request, 400, "the request body could not be read")


def _cut(request: web.Request, status: int, text: str) -> web.Response:
    """An answer that closes the connection, without waiting for the rest of the body."""
    request.content.feed_eof()  # else aiohttp lingers up to 10 s reading what is left
    response = web.Response(status=status, text=text, headers={"Retry-After": "1"})
    response.force_close()
    return response


@web.middleware
async def storage_unavailable(request: web.Request, handler: Any) -> web.StreamResponse:
    """A request that cannot be stored gets 503, so the platform delivers it again
    later; nothing was acknowledged, so nothing is lost."""
    try:
        response: web.StreamResponse = await handler(request)
    except UNAVAILABLE as error:
        log.warning(
            "storage unreachable (%s: %s); answered %s with 503",
            type(error).__name__,
            error,
            request.path,
        )
        return web.Response(
            status=503,
            text="storage unavailable; deliver again shortly",
            headers={"Retry-After": "5"},
        )
    return response


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    wiring = app[WIRING_KEY]
    await wiring.start()
    if wiring.models.demo_reason:
        log.warning("chatlane is running on the offline demo model: %s", wiring.models.demo_reason)
    log.info(
        "chatlane serving channels: %s; model %s",
        ", ".join(a.name for a in wiring.started) or "none",
        wiring.runtime.model,
    )
    # What start-up built lives as long as the server: the cyclic collector need not walk
    # it again on every full collection (under webhook load those cost ~10 us a request).
    # And requests in flight hold more than the default 700 new objects at once, so young
    # collections ran again and again finding nothing to free.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, *thresholds[1:])
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    await wiring.stop()


async def healthz(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    runtime = host.runtime
    storage_ok = await runtime.storage.ping()
    lanes = runtime.queue.redis
    if lanes is not None:
        redis = "ok" if await lanes.ping() else "unreachable"
    else:
        redis = "not configured"
    disk = await request.app[DISK_KEY].problem()
    healthy = storage_ok and redis != "unreachable" and disk is None
    body = {
        "status": "ok" if healthy else "unavailable",
        "storage": "ok" if storage_ok else "unreachable",
        "disk": "ok" if disk is None else f"writes fail: {disk}",
        "redis": redis,
        "backend": type(runtime.storage).__name__,
        "draining": host.draining,
        "model": host.runtime.model,
        "demo": host.runtime.models.demo_reason is not None,
    }
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text (``bot.metrics``); ``CHATLANE_METRICS_TOKEN`` as a bearer token when set."""
    token, public = request.app[METRICS_ACCESS_KEY]
    refused = refusal(request.headers.get("Authorization"), token=token, public=public)
    if refused == "unauthorized":
        return web.Response(
            status=401,
            text="metrics need the bearer token set in CHATLANE_METRICS_TOKEN",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if refused:
        return web.Response(
            status=404,
            text="metrics are off on a public server; set CHATLANE_METRICS_TOKEN to serve them",
        )
    wiring = request.app[WIRING_KEY]
    body = await scrape(
        wiring.dispatcher.metrics,
        mailbox=wiring.dispatcher.mailbox,
        storage=wiring.storage,
        rotation=wiring.models.rotation,
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
