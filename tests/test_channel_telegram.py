"""Telegram end to end: a signed webhook POST (or a polled update) to the recorded sendMessage."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import load_config
from bot.logs import JSONFormatter
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from channels.telegram import TelegramChannel
from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.telegram import BOT_ID, FakeTelegram, update
from tests.helpers import wait_for

SECRET = "s3cret-token_value"


def env_for(fake: FakeTelegram, **extra: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "PUBLIC_URL": "https://bot.example.com",
        **extra,
    }


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


async def app_client(
    fake: FakeTelegram, data: dict[str, Any] | None = None, **extra: str
) -> TestClient[Any, Any]:
    runtime = AgentRuntime(config=load_config(data=data or {}), demo_when_unconfigured=True)
    client = TestClient(TestServer(create_app(runtime, env=env_for(fake, **extra))))
    await client.start_server()
    return client


async def post(client: TestClient[Any, Any], body: Any, secret: str | None = SECRET) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    response = await client.post("/telegram/webhook", json=body, headers=headers)
    return response.status


async def test_private_message_gets_a_reply(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        assert await post(client, update(1, "hello bot")) == 200
        sent = await telegram.wait_for("sendMessage")
        assert "You said: hello bot" in sent[0]["text"]
        assert sent[0]["chat_id"] == 42
        assert any(c.method == "getMe" for c in telegram.calls)
        assert telegram.sent("sendChatAction")
    finally:
        await client.close()


@pytest.mark.parametrize("secret", [None, "wrong"])
async def test_forged_updates_are_refused(telegram: FakeTelegram, secret: str | None) -> None:
    client = await app_client(telegram)
    try:
        assert await post(client, update(2, "hi"), secret=secret) == 403
        storage = client.app[HOST_KEY].runtime.storage
        assert await storage.inbox_pending() == []
        assert await storage.load_messages("telegram:42") == []
    finally:
        await client.close()


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"message": {}}'])
async def test_malformed_updates_are_400(telegram: FakeTelegram, body: bytes) -> None:
    client = await app_client(telegram)
    try:
        response = await client.post(
            "/telegram/webhook", data=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        assert response.status == 400
    finally:
        await client.close()


async def test_redelivery_is_answered_once(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        assert await post(client, update(5, "once")) == 200
        assert await post(client, update(5, "once")) == 200
        await telegram.wait_for("sendMessage")
        await post(client, update(6, "twice?"))
        sent = await telegram.wait_for("sendMessage", 2)
        assert sum("You said: once" in m["text"] for m in sent) == 1
    finally:
        await client.close()


async def test_groups_need_a_mention_or_reply(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        group = {"chat_id": -100, "chat_type": "supergroup"}
        await post(client, update(10, "just chatting", **group))
        mention = [{"type": "mention", "offset": 0, "length": 9}]
        await post(client, update(11, "@lane_bot what's up", entities=mention, **group))
        await post(client, update(12, "and you?", reply_to_bot=True, **group))
        await telegram.wait_until(
            lambda: sum("You said" in t for t in telegram.visible(-100)) == 2, "two answers"
        )
        texts = telegram.visible(-100)
        assert any("You said: what's up" in t for t in texts)
        assert any("You said: and you?" in t for t in texts)
        assert not any("just chatting" in t for t in texts)
        assert all(m.get("reply_parameters") for m in telegram.sent())
    finally:
        await client.close()


async def test_rate_limit_is_waited_out(telegram: FakeTelegram) -> None:
    telegram.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    client = await app_client(telegram)
    try:
        await post(client, update(20, "hello"))
        sent = await telegram.wait_for("sendMessage")
        assert "You said: hello" in sent[0]["text"]
        assert [c.method for c in telegram.calls].count("sendMessage!failed") == 1
    finally:
        await client.close()


async def test_entity_rejection_falls_back_to_plain(telegram: FakeTelegram) -> None:
    telegram.fail("sendMessage", 400, "Bad Request: can't parse entities: wrong offset")
    client = await app_client(telegram)
    try:
        await post(client, update(30, "**bold** please"))
        sent = await telegram.wait_for("sendMessage")
        assert "entities" not in sent[0]  # sent again as plain text
        assert "You said" in sent[0]["text"]
    finally:
        await client.close()


async def test_migrated_group_is_answered_in_the_supergroup(telegram: FakeTelegram) -> None:
    telegram.migrated[-9] = -1009
    client = await app_client(telegram)
    try:
        await post(
            client, update(31, "still there?", chat_id=-9, chat_type="group", reply_to_bot=True)
        )
        await telegram.wait_until(
            lambda: any("You said: still there?" in t for t in telegram.visible(-1009)),
            "the answer in the supergroup",
        )
        assert all(m["chat_id"] == -1009 for m in telegram.sent())
    finally:
        await client.close()


async def test_blocked_user_is_not_retried(telegram: FakeTelegram) -> None:
    telegram.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    client = await app_client(telegram)
    try:
        await post(client, update(32, "bye"))
        storage = client.app[HOST_KEY].runtime.storage

        async def closed() -> bool:
            return not await storage.inbox_pending()

        await wait_for(closed, "the blocked user's message to be closed", 10)
        assert [c.method for c in telegram.calls].count("sendMessage!failed") == 1
        assert telegram.sent("sendMessage") == []
    finally:
        await client.close()


async def test_mentions_and_commands_in_groups(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        group = {"chat_id": -100, "chat_type": "supergroup"}
        other = [{"type": "bot_command", "offset": 0, "length": 17}]
        await post(client, update(40, "/status@other_bot", entities=other, **group))
        middle = [{"type": "mention", "offset": 7, "length": 9}]
        await post(client, update(41, "hey 🙂 @lane_bot how are you", entities=middle, **group))
        await telegram.wait_until(
            lambda: any("You said: hey 🙂 how are you" in t for t in telegram.visible()),
            "the answer without the mention",
        )
        ours = [{"type": "bot_command", "offset": 0, "length": 16}]
        await post(client, update(42, "/status@lane_bot", entities=ours, **group))
        await telegram.wait_until(lambda: len(telegram.visible()) == 2, "the /status answer")
        assert "You said" not in telegram.visible()[1]
    finally:
        await client.close()


async def test_log_lines_carry_request_and_turn_ids(telegram: FakeTelegram) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    telegram.fail("sendMessage", 502, "Bad Gateway")  # the turn logs its retry
    client = await app_client(telegram)
    try:
        response = await client.post(
            "/telegram/webhook",
            json=update(50, "trace me"),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "X-Request-ID": "req-abc123"},
        )
        assert response.status == 200
        await telegram.wait_for("sendMessage")
    finally:
        await client.close()
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    stored = [line for line in lines if line["message"].startswith("stored telegram message")]
    assert len(stored) == 1 and stored[0]["request"] == "req-abc123"
    item = stored[0]["message"].rsplit(" ", 1)[1]
    retried = [line for line in lines if "sendMessage failed" in line["message"]]
    assert retried and retried[0]["turn"] == item and "request" not in retried[0]


async def test_per_sender_limit_and_allow_list(telegram: FakeTelegram) -> None:
    data = {"channels": {"telegram": {"allow_from": ["@ada"], "rate_limit_per_minute": 1}}}
    client = await app_client(telegram, data)
    try:
        await post(client, update(40, "hi", user_id=99, username="mallory", chat_id=99))
        await post(client, update(41, "first"))
        await post(client, update(42, "second"))
        sent = await telegram.wait_for("sendMessage", 3)
        texts = [m["text"] for m in sent]
        assert "Sorry, this bot is private." in texts
        assert any("too quickly" in t for t in texts)
        assert sum("You said" in t for t in texts) == 1
    finally:
        await client.close()


async def test_long_markdown_reply_is_split(
    telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-tg-0000")
        long = "# Report\n\n" + "\n\n".join(
            f"Paragraph {i} with **bold** text. " * 20 for i in range(20)
        )
        long += "\n\n```python\n" + "print('x')\n" * 400 + "```"
        model.script(Reply(text=long, chunks=50))
        client = await app_client(telegram, {"agent": {"model": "anthropic/claude-sonnet-4-6"}})
        try:
            await post(client, update(50, "write a long report"))
            await telegram.wait_for("sendMessage", 3)
            await client.app[HOST_KEY].dispatcher.drain(5)
            sent = telegram.sent()
            assert len(sent) >= 3
            for message in sent:
                assert len(message["text"].encode("utf-16-le")) // 2 <= 4096
                assert "**" not in message["text"]
            assert any(e["type"] == "pre" for m in sent for e in m.get("entities") or [])
        finally:
            await client.close()


async def test_polling_mode(telegram: FakeTelegram) -> None:
    client = await app_client(telegram, PUBLIC_URL="")
    try:
        assert any(c.method == "deleteWebhook" for c in telegram.calls)
        await telegram.updates.put(update(60, "polled"))
        sent = await telegram.wait_for("sendMessage")
        assert "You said: polled" in sent[0]["text"]
    finally:
        await client.close()


async def test_set_webhook_command(
    telegram: FakeTelegram, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await TelegramChannel.set_webhook(load_config(), env_for(telegram))
    assert code == 0
    call = telegram.sent("setWebhook")[0]
    assert call["url"] == "https://bot.example.com/telegram/webhook"
    assert call["secret_token"] == SECRET
    out = capsys.readouterr().out
    assert SECRET not in out and telegram.token not in out
    assert await TelegramChannel.set_webhook(load_config(), {"PUBLIC_URL": "x"}) == 1


def test_describe_masks_the_token() -> None:
    state = TelegramChannel.describe(load_config(), {"TELEGRAM_BOT_TOKEN": "123456:ABCDEFSECRET"})
    assert state.enabled and "polling" in state.detail and "ABCDEFSECRET" not in state.detail
    assert not TelegramChannel.describe(load_config(), {}).enabled
    assert BOT_ID


async def test_split_web_and_worker(telegram: FakeTelegram) -> None:
    """A web process that only stores, and a worker that answers what it stored."""
    import asyncio

    from bot.worker import run_worker

    data = {"server": {"process_inbox": False}}
    client = await app_client(telegram, data)
    try:
        assert await post(client, update(70, "for the worker")) == 200
        assert len(await client.app[HOST_KEY].runtime.storage.inbox_pending()) == 1
        assert telegram.sent() == []
    finally:
        await client.close()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(load_config(), env_for(telegram), stop))
    try:
        sent = await telegram.wait_for("sendMessage")
        assert "You said: for the worker" in sent[0]["text"]
    finally:
        stop.set()
        assert await worker == 0
