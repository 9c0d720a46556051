"""The load benchmark's baseline: the best a hand-written Telegram-to-Claude relay can do.

``python -m bench._load_relay PORT CAP`` (the rest from the environment
``chatlane serve`` reads: TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET,
TELEGRAM_API_BASE_URL, ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY). The same
webhook route and secret check as chatlane; the update is acknowledged at
once and answered by a task: one turn per chat at a time (an
``asyncio.Lock``), at most CAP model calls at a time (an
``asyncio.Semaphore``), one streamed call with the bare ``anthropic`` SDK,
then sendMessage with plain aiohttp. No storage, no history, no typing
signal, no retries: nothing a crash would need. The SDK runs on its default
transport (httpx), or with RELAY_HTTP=aiohttp on its aiohttp one, as
chatlane's providers do (``python -m bench.load --relay-http aiohttp``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
from typing import Any

import anthropic
from aiohttp import ClientSession, web

MODEL = "claude-sonnet-4-6"


class Relay:
    def __init__(self, cap: int) -> None:
        self.secret = os.environ["TELEGRAM_WEBHOOK_SECRET"].encode()
        base = os.environ["TELEGRAM_API_BASE_URL"].rstrip("/")
        self.send_url = f"{base}/bot{os.environ['TELEGRAM_BOT_TOKEN']}/sendMessage"
        self.model = anthropic.AsyncAnthropic(
            api_key=os.environ["ANTHROPIC_API_KEY"],
            base_url=os.environ["ANTHROPIC_BASE_URL"],
            max_retries=0,
            **(
                {"http_client": anthropic.DefaultAioHttpClient()}
                if os.environ.get("RELAY_HTTP") == "aiohttp"
                else {}
            ),
        )
        self.slots = asyncio.Semaphore(cap)
        self.chats: dict[
            int, tuple[asyncio.Lock, list[int]]
        ] = {}  # lock, [turns holding or waiting]
        self.tasks: set[asyncio.Task[None]] = set()
        self.http: ClientSession | None = None

    async def webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
        if not hmac.compare_digest(given, self.secret):
            return web.Response(status=403, text="bad secret token")
        try:
            message = json.loads(await request.read())["message"]
            chat_id, text = int(message["chat"]["id"]), str(message["text"])
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not a Telegram text message")
        task = asyncio.ensure_future(self.answer(chat_id, text))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.Response(text="ok")

    async def answer(self, chat_id: int, text: str) -> None:
        lock, users = self.chats.setdefault(chat_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                async with self.slots:
                    reply = await self.ask(text)
                assert self.http is not None
                async with self.http.post(
                    self.send_url, json={"chat_id": chat_id, "text": reply}
                ) as response:
                    await response.read()
        except Exception as error:  # a relay has nobody to tell; the benchmark counts it lost
            print(f"relay: answering {chat_id} failed: {error!r}", file=sys.stderr)
        finally:
            users[0] -= 1
            if not users[0]:
                del self.chats[chat_id]

    async def ask(self, text: str) -> str:
        pieces: list[str] = []
        stream: Any = await self.model.messages.create(
            model=MODEL,
            max_tokens=1024,
            messages=[{"role": "user", "content": text}],
            stream=True,
        )
        async with stream:
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    pieces.append(event.delta.text)
        return "".join(pieces)

    async def lifecycle(self, app: web.Application) -> Any:
        self.http = ClientSession()
        yield
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.close()
        await self.model.close()


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main(argv: list[str]) -> None:
    relay = Relay(int(argv[1]))
    app = web.Application()
    app.router.add_post("/telegram/webhook", relay.webhook)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(relay.lifecycle)
    web.run_app(app, host="127.0.0.1", port=int(argv[0]), print=None, access_log=None)


if __name__ == "__main__":
    main(sys.argv[1:])
