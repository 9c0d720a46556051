"""Telegram end to end: a signed webhook POST (or a polled update) to the recorded sendMessage."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from telegram import Bot, Update, User

from bot.channel import Reply as ReplyModel
from bot.channel import StreamOptions
from bot.config import ConfigError, load_config
from bot.inbound import InboundMessage
from bot.logs import JSONFormatter
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from bot.storage import MemoryStorage
from bot.streaming import LiveMemory, RetryLater, Snapshot
from channels.telegram import TelegramChannel, TelegramSink, make_bot, parse
from channels.telegram_format import render_live, tail_markdown
from channels.telegram_stream import Pacer, TelegramStream, edit
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


async def test_webhook_answers_go_without_the_browser_headers(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        ack = await client.post("/telegram/webhook", json=update(60, "hi"), headers=headers)
        assert ack.status == 200 and "Content-Security-Policy" not in ack.headers
        for path in ("/healthz", "/telegram/webhook"):  # a page; a GET there (405)
            assert "img-src 'self' data:" in (await client.get(path)).headers.get(
                "Content-Security-Policy", ""
            ), path
    finally:
        await client.close()


async def test_log_lines_carry_request_and_turn_ids(telegram: FakeTelegram) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # the line a stored message logs is DEBUG
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
    # At INFO an operator still sees every turn, with the stored message's id.
    done = [line for line in lines if line["message"].startswith("turn done")]
    assert [(line["level"], line["turn"]) for line in done] == [("info", item)]
    assert stored[0]["level"] == "debug"


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
            await telegram.wait_for("sendMessage", 3, seconds=30)  # the SDK's first import
            await client.app[HOST_KEY].dispatcher.drain(5)
            drafts = telegram.sent("sendMessageDraft")
            assert drafts and all(len(d["text"]) <= 4096 for d in drafts)
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


# -- streaming ------------------------------------------------------------------------

FAST = {"channels": {"telegram": {"stream_every": 0.02}}}
CODE_REPLY = "Here is the code:\n\n```python\n" + "".join(f"x{n} = {n}\n" for n in range(12))
CODE_REPLY += "```\n\nSee **README.md** and docs/setup.py for more."


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-tg-0000")
        yield fake


def with_model(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "agent": {"model": "anthropic/claude-sonnet-4-6", **data.get("agent", {})}}


def failed(fake: FakeTelegram) -> list[str]:
    return [f"{c.method}: {c.error}" for c in fake.calls if c.method.endswith("!failed")]


async def test_private_reply_grows_as_a_draft_then_arrives_once(
    telegram: FakeTelegram, model: FakeAnthropic
) -> None:
    model.script(Reply(text=CODE_REPLY, chunks=12, pace=0.03))
    client = await app_client(telegram, with_model(FAST))
    try:
        await post(client, update(100, "show me code"))
        await telegram.wait_for("sendMessage")
        drafts = [d["text"] for d in telegram.sent("sendMessageDraft")]
        assert len(drafts) >= 3, drafts  # visible while it was written
        assert len(set(d["draft_id"] for d in telegram.sent("sendMessageDraft"))) == 1
        final = telegram.sent()
        assert len(final) == 1 and telegram.visible(42) == [final[0]["text"]]
        assert final[0]["text"].endswith("See README.md and docs/setup.py for more.")
        assert all(len(d) < len(final[0]["text"]) for d in drafts[:-1])
        assert failed(telegram) == []  # no entity ever rejected mid-stream
        code = [e for e in final[0]["entities"] if e["type"] == "code"]
        assert len(code) == 2  # README.md and docs/setup.py: never links
    finally:
        await client.close()


async def test_group_reply_is_one_message_edited_as_it_grows(
    telegram: FakeTelegram, model: FakeAnthropic
) -> None:
    model.script(Reply(text=CODE_REPLY, chunks=12, pace=0.03))
    client = await app_client(telegram, with_model(FAST))
    try:
        await post(
            client,
            update(101, "code please", chat_id=-100, chat_type="supergroup", reply_to_bot=True),
        )
        await telegram.wait_until(
            lambda: any(t.endswith("for more.") for t in telegram.visible(-100)), "the answer"
        )
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert len(telegram.sent()) == 1  # the first text; the rest were edits
        edits = telegram.sent("editMessageText")
        assert len(edits) >= 2
        assert telegram.sent("sendMessageDraft") == []  # no drafts in groups
        assert len(telegram.visible(-100)) == 1  # never two copies
        assert failed(telegram) == []
        partial = [e for e in edits if "x3 = 3" in e["text"] and "Done" not in e["text"]]
        assert any(en["type"] == "pre" for e in partial for en in e.get("entities") or [])
    finally:
        await client.close()


async def test_group_stream_past_4096_goes_on_in_a_new_message(
    telegram: FakeTelegram, model: FakeAnthropic
) -> None:
    long = "\n\n".join(f"Paragraph {n}: " + "word " * 60 for n in range(30))
    model.script(Reply(text=long, chunks=30, pace=0.01))
    client = await app_client(telegram, with_model(FAST))
    try:
        await post(client, update(102, "long", chat_id=-100, chat_type="group", reply_to_bot=True))
        await telegram.wait_until(
            lambda: any("Paragraph 29: " in t for t in telegram.visible(-100)), "the end"
        )
        await client.app[HOST_KEY].dispatcher.drain(5)
        shown = telegram.visible(-100)
        assert len(shown) == 3, [len(t) for t in shown]
        assert all(len(t.encode("utf-16-le")) // 2 <= 4096 for t in shown)
        assert sum(t.count("Paragraph") for t in shown) == 30  # each once
        assert failed(telegram) == []
    finally:
        await client.close()


async def test_streaming_false_sends_the_reply_whole(
    telegram: FakeTelegram, model: FakeAnthropic
) -> None:
    model.script(Reply(text=CODE_REPLY, chunks=12, pace=0.02))
    client = await app_client(
        telegram, with_model({"channels": {"telegram": {"streaming": False}}})
    )
    try:
        await post(client, update(103, "code", chat_id=-100, chat_type="group", reply_to_bot=True))
        await telegram.wait_for("sendMessage")
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert telegram.sent("editMessageText") == [] and telegram.sent("sendMessageDraft") == []
    finally:
        await client.close()


async def test_reasoning_and_tools_show_live_apart_from_the_answer(
    telegram: FakeTelegram, model: FakeAnthropic
) -> None:
    model.script(
        Reply(
            thinking="Let me check the clock first.",
            tool_calls=[("c1", "current_time", {})],
            pace=0.05,
        )
    )
    model.script(Reply(text="It is late. " * 10, chunks=8, pace=0.03))
    data = with_model({**FAST, "agent": {"thinking_mode": "stream"}})
    client = await app_client(telegram, data)
    try:
        await post(
            client, update(104, "time?", chat_id=-100, chat_type="supergroup", reply_to_bot=True)
        )
        final = "It is late. " * 9 + "It is late."
        await telegram.wait_until(
            lambda: any(t.endswith(final) and "Reasoning" not in t for t in telegram.visible()),
            "the final answer, without the reasoning",
            30,
        )
        await client.app[HOST_KEY].dispatcher.drain(5)
        live = [*telegram.sent(), *telegram.sent("editMessageText")]
        quoted = [m for m in live if m["text"].startswith("Reasoning:\nLet me check")]
        assert quoted and quoted[0]["entities"][0]["type"] == "expandable_blockquote"
        status = ("Running current_time…", "Checked the time")  # the tool, then its result
        assert any(x in m["text"] for m in quoted for x in status)  # shown mid-reply
        assert len(telegram.visible(-100)) == 1 and failed(telegram) == []
    finally:
        await client.close()


# -- the stream against the Bot API's answers -------------------------------------------


def group_message(chat_id: int = -100, key: str = "7") -> InboundMessage:
    return InboundMessage(
        "telegram",
        str(chat_id),
        "42",
        "hi",
        message_id=key,
        context={"chat_id": chat_id, "message_id": 5, "group": chat_id < 0},
        group=chat_id < 0,
    )


@pytest.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[Any]:
    made = make_bot(telegram.token, {"TELEGRAM_API_BASE_URL": telegram.base_url})
    async with made:
        yield made


async def test_rejections_not_modified_and_429_while_streaming(
    telegram: FakeTelegram, bot: Any
) -> None:
    stream = TelegramStream(bot, group_message(), StreamOptions(live=True, every=0.01), Pacer())
    await stream.show(Snapshot("**bold** start"))
    telegram.fail("editMessageText", 400, "Bad Request: can't parse entities: Unsupported")
    await stream.show(Snapshot("**bold** start and more"))
    assert telegram.visible(-100) == ["bold start and more"]
    assert "entities" not in telegram.sent("editMessageText")[-1]  # the plain fallback
    await stream.show(Snapshot("**bold** start and more"))  # unchanged: no call
    assert len(telegram.sent("editMessageText")) == 1
    part = {"text": "bold start and more", "entities": []}
    await edit(bot, -100, stream.sent[0], part)  # "message is not modified": no error
    telegram.fail("editMessageText", 429, "Too Many Requests: retry after 5", retry_after=5)
    with pytest.raises(RetryLater) as slow:
        await stream.show(Snapshot("**bold** start and more, later"))
    assert slow.value.seconds == 5
    assert await stream.handover() == {"messages": stream.sent, "shown": stream.shown}


async def test_drafts_fall_back_to_plain_then_to_messages(telegram: FakeTelegram, bot: Any) -> None:
    stream = TelegramStream(bot, group_message(42), StreamOptions(live=True), Pacer())
    telegram.fail("sendMessageDraft", 400, "Bad Request: can't parse entities: Unsupported")
    await stream.show(Snapshot("**hello**"))
    assert telegram.drafts[42] == "hello" and "entities" not in telegram.sent("sendMessageDraft")[0]
    telegram.fail("sendMessageDraft", 400, "Bad Request: method not available")
    await stream.show(Snapshot("**hello** there"))
    assert telegram.visible(42) == ["hello there"]  # shown as a message instead
    assert (await stream.handover() or {})["messages"] == stream.sent


async def test_a_retry_after_a_crash_edits_the_same_message(
    telegram: FakeTelegram, bot: Any
) -> None:
    memory = LiveMemory(MemoryStorage(), "telegram:-100:7")
    first = TelegramStream(bot, group_message(), StreamOptions(live=True, memory=memory), Pacer())
    await first.show(Snapshot("half a rep"))
    # the process dies here; the next attempt is told it resumes
    options = StreamOptions(live=True, memory=memory, resumed=True)
    second = TelegramStream(bot, group_message(), options, Pacer())
    await second.show(Snapshot("half a reply, all of it"))
    assert telegram.visible(-100) == ["half a reply, all of it"]
    live = await second.handover()
    sink = TelegramSink(bot)
    parts = sink.render(ReplyModel("A whole **reply**.", live=live))
    assert parts[0]["edit"] == first.sent[0]
    for part in parts:
        await sink.send_part(group_message(), part)
    assert telegram.visible(-100) == ["A whole reply."]
    assert len(telegram.sent()) == 1


async def test_final_reply_shorter_than_the_stream_deletes_the_rest(
    telegram: FakeTelegram, bot: Any
) -> None:
    stream = TelegramStream(bot, group_message(), StreamOptions(live=True), Pacer())
    await stream.show(Snapshot("x" * 5000))
    assert len(telegram.visible(-100)) == 2
    sink = TelegramSink(bot)
    telegram.fail("deleteMessage", 400, "Bad Request: message can't be deleted")
    parts = sink.render(ReplyModel("short", live=await stream.handover()))
    assert [p.get("edit") for p in parts] == [stream.sent[0], None]
    assert parts[1] == {"delete": stream.sent[1]}
    for part in parts:
        await sink.send_part(group_message(), part)  # the failed delete is logged, not raised
    await sink.send_part(group_message(), {"delete": stream.sent[1]})
    assert telegram.visible(-100) == ["short"]
    telegram.messages.clear()  # someone deleted the streamed message: sent anew
    await sink.send_part(group_message(), {"text": "again", "entities": [], "edit": 5})
    assert telegram.visible(-100) == ["again"]


def test_a_draft_renders_the_tail_of_a_long_reply() -> None:
    assert tail_markdown("short") == "short"
    text = "intro\n\n```python\n" + "x = 1\n" * 3000
    tail = tail_markdown(text)
    assert tail.startswith("```\nx = 1") and len(tail) < 9000
    assert render_live(tail)[-1]["entities"][0]["type"] == "pre"


def test_the_pacer_keeps_a_group_under_its_limit() -> None:
    pacer = Pacer(limit=3, window=60)
    assert pacer.delay(-1) == 0
    for _ in range(2):
        pacer.note(-1)
    assert pacer.delay(-1) == 0 and pacer.delay(-1, reserve=1) > 59
    pacer.note(-1)
    assert pacer.delay(-1) > 59 and pacer.delay(-2) == 0


# -- platform-native ------------------------------------------------------------------


async def test_the_command_menu_is_set_at_start(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        names = [c["command"] for c in telegram.commands]
        assert names == ["new", "reset", "status", "think", "model", "help"]
    finally:
        await client.close()
    telegram.fail("setMyCommands", 400, "Bad Request: BOT_COMMAND_INVALID")
    client = await app_client(telegram)  # a refused menu does not stop the channel
    try:
        assert await post(client, update(110, "still here")) == 200
        await telegram.wait_for("sendMessage")
    finally:
        await client.close()


def test_hand_parsing_agrees_with_ptb() -> None:
    """The webhook reads the JSON directly (15x cheaper than Update.de_json): same result."""
    channel = TelegramChannel.__new__(TelegramChannel)
    channel.bot = Bot("1:T")
    channel.bot._bot_user = User(BOT_ID, "Lane", True, username="lane_bot")
    channel.max_bytes = 10 * 1024 * 1024
    mention = [{"type": "mention", "offset": 0, "length": 9}]
    for raw in (
        update(1, "hello 🙂"),
        update(2, "@lane_bot hi", chat_id=-100, chat_type="supergroup", entities=mention),
    ):
        ours = channel.inbound(raw)
        ptb = Update.de_json(raw, channel.bot)
        assert ours is not None and ptb is not None and ptb.message is not None
        assert ptb.message.from_user is not None
        assert ours.chat_id == str(ptb.message.chat.id)
        assert ours.sender_id == str(ptb.message.from_user.id)
        assert ours.sender_name == ptb.message.from_user.username
        assert ours.context["message_id"] == ptb.message.message_id
        assert ptb.message.text is not None and ours.text in ptb.message.text


# -- safe by default -------------------------------------------------------------------


async def test_webhook_mode_without_a_secret_refuses_to_start(
    telegram: FakeTelegram, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    env = {**env_for(telegram), "TELEGRAM_WEBHOOK_SECRET": ""}
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        create_app(runtime, env=env)
    with pytest.raises(ConfigError, match="A-Z a-z 0-9"):
        create_app(runtime, env={**env, "TELEGRAM_WEBHOOK_SECRET": "bad secret!"})
    polling = load_config(data={"channels": {"telegram": {"mode": "polling"}}})
    assert TelegramChannel.describe(polling, env).enabled
    assert await TelegramChannel.set_webhook(load_config(), env) == 1
    assert "TELEGRAM_WEBHOOK_SECRET" in capsys.readouterr().err
    assert telegram.sent("setWebhook") == []


HOSTILE = [
    b'{"update_id": 1e400, "message": {}}',
    b'{"update_id": 9, "message": {"message_id": 1, "date": 0, "text": "hi",'
    b' "chat": {"id": 1e400, "type": "private"}, "from": {"id": 1, "is_bot": false}}}',
    b'{"update_id": 9, "message": {"message_id": "7", "date": 0, "text": "hi",'
    b' "chat": {"id": 1, "type": "private"}, "from": {"id": 1, "is_bot": false}}}',
    b'{"update_id": 9, "message": {"message_id": 1, "date": 0, "text": 5,'
    b' "chat": {"id": 1, "type": "private"}, "from": [1]}}',
    b'{"update_id": 9, "message": {"message_id": 1, "date": 0, "text": "@x hi",'
    b' "chat": {"id": -1, "type": "group"}, "from": {"id": 1}, "entities": [7, {"offset": "a"}]}}',
    b'{"update_id": 9, "message": {"message_id": 1, "date": 0, "text": "hi",'
    b' "chat": "x", "from": {"id": 1}}}',
    b'{"update_id": ' + b"9" * 5000 + b"}",
    b"\xff\xfe not utf-8",
]


@pytest.mark.parametrize(
    "body",
    [
        b'{"update_id": 7, "message": {"text": "a\\ud800b \xc3\xa9"}}',  # orjson refuses these
        b'{"update_id": 1e400, "x": NaN, "y": -Infinity}',
        b'\xef\xbb\xbf{"update_id": 7}',
        json.dumps({"update_id": 7, "text": "hi"}).encode("utf-16"),
        b'{"a": ' * 200 + b"1" + b"}" * 200,
        b'{"update_id": 7, "a": {"b": [1, 2.5, -0.0, null, true]}, "a": "last"}',
    ],
)
def test_webhook_json_reads_as_json_does(body: bytes) -> None:
    assert repr(parse(body)) == repr(json.loads(body))


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe not utf-8", b"[" * 1100 + b"]" * 1100])
def test_webhook_json_that_is_not(body: bytes) -> None:
    assert parse(body) is None


@pytest.mark.parametrize("body", HOSTILE)
async def test_hostile_updates_are_4xx_never_5xx(telegram: FakeTelegram, body: bytes) -> None:
    client = await app_client(telegram)
    try:
        response = await client.post(
            "/telegram/webhook", data=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        assert response.status in (200, 400), await response.text()
    finally:
        await client.close()


async def test_lone_surrogates_and_html_looking_text_are_kept(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        body = json.dumps(update(120, "Use <div> for containers \ud800 ok"))
        assert "\\ud800" in body
        response = await client.post(
            "/telegram/webhook",
            data=body.encode(),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
        )
        assert response.status == 200
        sent = await telegram.wait_for("sendMessage")
        assert "You said: Use <div> for containers \ufffd ok" in sent[0]["text"]
    finally:
        await client.close()
