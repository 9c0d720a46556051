"""The streaming benchmark's platforms, each a process of its own.

``python -m bench._stream_platforms PORT discord|telegram`` runs the test
suite's fake (``tests/fakes/discord.py``: REST and gateway; ``tests/fakes/
telegram.py``: the Bot API with drafts and edits) on PORT, and notes every
message call as it arrives: ``[time, chat k, kind, status, complete, length]``
(``time.monotonic()``, one clock for the machine; ``complete`` when its text
holds the reply's end marker ``END<k>.``). Chat k is Discord channel
``BASE + k``, Telegram private chat ``BASE + k`` or group ``-(BASE + k)``.

It is also the load: ``POST /bench/go`` ``{first, count, spread, kind, url,
secret}`` sends ``count`` messages ``q<k>z ...`` (kind ``dm``: Discord
MESSAGE_CREATE over the gateway; ``private`` / ``group``: signed Telegram
webhook updates to ``url``), due ``spread`` seconds apart in all, and notes
how late each went out (the generator's lag). ``GET /bench/records`` gives
the calls, the lags, the loop's own lag (``LagMonitor``) and the number of
chats whose complete reply arrived; ``POST /bench/reset`` clears them;
``GET /bench/ready`` is 200 once Discord's gateway is connected.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import ClientSession, TCPConnector, web
from aiohttp.test_utils import TestServer

from bench._stream_model import LagMonitor, end_marker
from tests.fakes.discord import FakeDiscord
from tests.fakes.telegram import FakeTelegram, update

BASE = 5_000_000
TELEGRAM_TOKEN = "123456:STREAM-TOKEN"
VISIBLE = {"send", "edit", "sendMessage", "editMessageText", "sendMessageDraft"}
FINAL = {"send", "edit", "sendMessage", "editMessageText"}  # a draft is never the final text
WRITES = VISIBLE | {"delete", "deleteMessage"}


class Recorder:
    """What the platform saw, and what the generator did."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.lag: list[float] = []
        self.complete: set[int] = set()
        self.loop = LagMonitor()
        self.tasks: set[asyncio.Task[None]] = set()

    def note(self, at: float, k: int, kind: str, status: int, text: str | None) -> None:
        done = text is not None and end_marker(k) in text
        self.calls.append([at, k, kind, status, int(done), len(text or "")])
        if done and kind in FINAL and status < 300:
            self.complete.add(k)

    async def due(self, at: float) -> None:
        wait = at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.lag.append(time.monotonic() - at)

    def routes(self, app: web.Application, go: Any) -> None:
        async def records(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "calls": self.calls,
                    "lag": self.lag,
                    "loop_lag": self.loop.take(),
                    "complete": len(self.complete),
                }
            )

        async def stats(request: web.Request) -> web.Response:
            return web.json_response({"complete": len(self.complete), "calls": len(self.calls)})

        async def reset(request: web.Request) -> web.Response:
            self.calls, self.lag = [], []
            self.complete.clear()
            self.loop.take()
            return web.json_response({})

        async def start(request: web.Request) -> web.Response:
            task = asyncio.ensure_future(go(await request.json()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return web.json_response({})

        app.router.add_get("/bench/records", records)
        app.router.add_get("/bench/stats", stats)
        app.router.add_post("/bench/reset", reset)
        app.router.add_post("/bench/go", start)


class BenchDiscord(FakeDiscord):
    def __init__(self, port: int) -> None:
        super().__init__()
        self.record = Recorder()
        app = self.server.app
        self.record.routes(app, self.go)
        app.router.add_get("/bench/ready", self.is_ready)
        self.server = TestServer(app, host="127.0.0.1", port=port)

    async def is_ready(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=200 if self.ready.is_set() else 503)

    async def _create(self, request: web.Request, channel: str, webhook: bool) -> web.Response:
        at = time.monotonic()
        response = await super()._create(request, channel, webhook)
        text = (await request.json()).get("content")
        self.record.note(at, int(channel) - BASE, "send", response.status, text)
        return response

    async def _edit(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        response = await super()._edit(request)
        text = (await request.json()).get("content")
        channel = int(request.match_info.get("channel", 0))
        self.record.note(at, channel - BASE, "edit", response.status, text)
        return response

    async def _delete(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        response = await super()._delete(request)
        channel = int(request.match_info.get("channel", 0))
        self.record.note(at, channel - BASE, "delete", response.status, None)
        return response

    async def _typing(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        self.record.note(at, int(request.match_info["channel"]) - BASE, "typing", 204, None)
        return await super()._typing(request)

    async def go(self, plan: dict[str, Any]) -> None:
        first, count, spread = int(plan["first"]), int(plan["count"]), float(plan["spread"])
        began = time.monotonic()
        for n in range(count):
            k = first + n
            await self.record.due(began + spread * n / count)
            await self.dispatch(f"q{k}z please write", channel=str(BASE + k), author=BASE + k)


class BenchTelegram(FakeTelegram):
    def __init__(self, port: int) -> None:
        super().__init__(token=TELEGRAM_TOKEN)
        self.record = Recorder()
        app = self.server.app
        self.record.routes(app, self.go)
        self.server = TestServer(app, host="127.0.0.1", port=port)
        self.http: ClientSession | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        response = await super()._handle(request)
        method = request.match_info["method"]
        if method in WRITES or method == "sendChatAction":
            params = await self._params(request)  # the body is read once, kept by aiohttp
            k = abs(int(params.get("chat_id") or 0)) - BASE
            self.record.note(at, k, method, response.status, params.get("text"))
        return response

    async def go(self, plan: dict[str, Any]) -> None:
        first, count, spread = int(plan["first"]), int(plan["count"]), float(plan["spread"])
        if self.http is None:
            self.http = ClientSession(connector=TCPConnector(limit=0))
        headers = {"X-Telegram-Bot-Api-Secret-Token": plan["secret"]}
        group = plan["kind"] == "group"
        began = time.monotonic()
        sends = []
        for n in range(count):
            k = first + n
            chat = -(BASE + k) if group else BASE + k
            text = f"@lane_bot q{k}z please write" if group else f"q{k}z please write"
            entities = [{"type": "mention", "offset": 0, "length": 9}] if group else None
            body = update(
                k + 1,
                text,
                chat_id=chat,
                user_id=BASE + k,
                chat_type="supergroup" if group else "private",
                entities=entities,
            )
            await self.record.due(began + spread * n / count)
            sends.append(asyncio.ensure_future(self._post(plan["url"], body, headers)))
        await asyncio.gather(*sends)

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        assert self.http is not None
        async with self.http.post(url, data=json.dumps(body), headers=headers) as response:
            await response.read()
            if response.status >= 300:
                print(f"webhook answered {response.status}", file=sys.stderr, flush=True)


async def main(port: int, kind: str) -> None:
    fake: BenchDiscord | BenchTelegram = (
        BenchDiscord(port) if kind == "discord" else BenchTelegram(port)
    )
    async with fake:
        fake.record.loop.start()
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
