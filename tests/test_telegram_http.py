"""PTB's HTTP layer on aiohttp: the Bot API's answers, errors and timeouts as PTB expects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from telegram import Bot
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from channels.telegram_http import AiohttpRequest
from tests.fakes.telegram import FakeTelegram
from tests.procs import free_port


def bot_at(base: str, token: str, **request: Any) -> Bot:
    return Bot(token, base_url=f"{base}/bot", request=AiohttpRequest(**request))


async def test_calls_answers_and_errors_reach_ptb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # as channels.telegram opts in
    async with FakeTelegram() as telegram, bot_at(telegram.base_url, telegram.token) as bot:
        sent = await bot.send_message(chat_id=42, text="hello")
        assert sent.text == "hello"
        assert telegram.sent()[-1]["text"] == "hello"
        telegram.fail("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)
        with pytest.raises(RetryAfter) as waited:
            await bot.send_message(chat_id=42, text="again")
        assert waited.value.retry_after.total_seconds() == 3  # type: ignore[union-attr]
        telegram.fail("sendMessage", 400, "Bad Request: can't parse entities")
        with pytest.raises(BadRequest, match="parse entities"):
            await bot.send_message(chat_id=42, text="bold")
        await bot.send_document(chat_id=42, document=b"file body", filename="a.txt")
        assert telegram.calls[-1].method == "sendDocument"


async def test_connection_trouble_is_a_network_error_and_slowness_a_timeout() -> None:
    refused = bot_at(f"http://127.0.0.1:{free_port()}", "1:T")
    await refused.request.initialize()
    try:
        with pytest.raises(NetworkError):
            await refused.get_me()
    finally:
        await refused.request.shutdown()

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_post("/bot{token}/{method}", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        bot = bot_at(str(server.make_url("")).rstrip("/"), "1:T", read_timeout=0.2)
        await bot.request.initialize()  # not bot.initialize(): its getMe would hang too
        try:
            with pytest.raises(TimedOut):
                await bot.send_message(chat_id=1, text="x")
        finally:
            await bot.request.shutdown()
    finally:
        await server.close()


async def test_an_uninitialized_request_says_so() -> None:
    with pytest.raises(RuntimeError, match="not initialized"):
        await AiohttpRequest().do_request("http://127.0.0.1:1/x", "POST")
