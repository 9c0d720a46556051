"""Discord end to end: discord.py against the fake gateway and REST.

Gateway events (MESSAGE_CREATE, INTERACTION_CREATE) go in; what a person would
see in the channel (messages sent, edited, deleted) comes out.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import discord
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.channel import Reply, StreamOptions
from bot.config import ConfigError, load_config
from bot.events import AgentEvent
from bot.formatting import split_message
from bot.inbound import InboundMessage, MediaPart
from bot.media import SUPPORTED, MediaError, MediaFetch
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from bot.storage import MemoryStorage, SQLiteStorage
from bot.streaming import LiveMemory
from channels.discord import DiscordChannel, DiscordConfig, media_parts, point_at
from channels.discord_format import DISCORD
from channels.discord_sink import LIMIT, DiscordSink
from tests.fakes.discord import BOT_ID, TOKEN, FakeDiscord
from tests.fakes.models import FakeAnthropic, FakeOpenAI
from tests.fakes.models import Reply as Scripted
from tests.helpers import wait_for
from tests.test_media import pdf

MESSAGE_CONTENT = 1 << 15
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket,
        "DEFAULT_GATEWAY",
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
    )
    async with FakeDiscord() as server:
        yield server


def env_for(fake: FakeDiscord) -> dict[str, str]:
    return {
        "DISCORD_BOT_TOKEN": TOKEN,
        "DISCORD_API_BASE_URL": fake.api,
        "DISCORD_GATEWAY_URL": fake.gateway,
    }


async def client_for(
    fake: FakeDiscord, data: dict[str, Any] | None = None, **runtime: Any
) -> TestClient[Any, Any]:
    agent = AgentRuntime(
        config=load_config(data=data or {}), demo_when_unconfigured=True, **runtime
    )
    client = TestClient(TestServer(create_app(agent, env=env_for(fake))))
    await client.start_server()
    async with asyncio.timeout(10):
        await fake.ready.wait()
    return client


async def test_direct_message_is_sent_then_edited_into_the_reply(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        message_id = await fake.dispatch("hello **bot**")
        await wait_for(
            lambda: any("You said: hello **bot**" in t for t in fake.visible()),
            "the whole reply visible",
            changed=fake.changed,
        )
        await client.app[HOST_KEY].dispatcher.drain(5)
        [shown] = fake.visible()  # streamed, then finished in place: one message
        assert "You said: hello **bot**" in shown
        [sent] = fake.sent
        assert sent["allowed_mentions"]["parse"] == []
        assert str(sent["message_reference"]["message_id"]) == message_id
        assert fake.edits  # the first text went out before the whole reply
        assert fake.typing
    finally:
        await client.close()


async def test_streaming_off_sends_the_reply_once_without_edits(fake: FakeDiscord) -> None:
    client = await client_for(fake, {"channels": {"discord": {"streaming": False}}})
    try:
        await fake.dispatch("hello")
        await fake.wait_for(1)
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert len(fake.sent) == 1 and not fake.edits
        assert "You said: hello" in fake.sent[0]["content"]
    finally:
        await client.close()


async def test_guild_messages_need_a_mention(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        await fake.dispatch("no mention here", guild="77", channel="600")
        await fake.dispatch(
            f"<@{BOT_ID}> are you there?", guild="77", channel="600", mention_bot=True
        )
        await fake.wait_for(1)
        await client.app[HOST_KEY].dispatcher.drain(5)
        [shown] = fake.visible("600")
        assert "You said: are you there?" in shown
    finally:
        await client.close()


async def test_identify_asks_for_no_message_content_by_default(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        [identify] = fake.identify
        assert identify["intents"] & MESSAGE_CONTENT == 0
        assert identify["intents"] & GUILD_MESSAGES and identify["intents"] & DIRECT_MESSAGES
    finally:
        await client.close()


async def test_read_all_messages_asks_for_content_and_answers_without_a_mention(
    fake: FakeDiscord,
) -> None:
    client = await client_for(fake, {"channels": {"discord": {"read_all_messages": True}}})
    try:
        assert fake.identify[0]["intents"] & MESSAGE_CONTENT
        await fake.dispatch("anyone here?", guild="77", channel="600")
        await fake.wait_for(1)
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert "You said: anyone here?" in fake.visible("600")[0]
    finally:
        await client.close()


async def test_redelivered_message_is_answered_once_and_429_waited_out(
    fake: FakeDiscord,
) -> None:
    fake.rate_limits = 1
    client = await client_for(fake)
    try:
        await fake.dispatch("once", message_id="123456789012345678")
        await fake.dispatch("once", message_id="123456789012345678")
        await fake.wait_for(1)
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert sum("You said: once" in m for m in fake.visible()) == 1
        assert fake.rate_limits == 0
    finally:
        await client.close()


async def test_long_reply_split_at_2000(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-discord-0000")
        long = "\n\n".join(f"**Point {i}**: " + "detail " * 40 for i in range(30))
        long += "\n\n```python\n" + "x = 1\n" * 500 + "```"
        model.script(Scripted(text=long, chunks=20))
        client = await client_for(fake, {"agent": {"model": "anthropic/claude-sonnet-4-6"}})
        try:
            await fake.dispatch("write it")
            await fake.wait_for(3, seconds=30)  # the first turn imports the anthropic SDK
            await client.app[HOST_KEY].dispatcher.drain(5)
            shown = fake.visible()
            assert shown == split_message(DISCORD.render(long), LIMIT)  # whole, in order, once
            for message in shown:
                assert len(message) <= 2000 and message.count("```") % 2 == 0
        finally:
            await client.close()


# -- slash commands ------------------------------------------------------------


async def test_slash_commands_are_registered_globally_at_start(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        await wait_for(lambda: "global" in fake.commands, "commands registered")
        names = {c["name"] for c in fake.commands["global"]}
        assert names == {"ask", "new", "status", "model"}
        ask = next(c for c in fake.commands["global"] if c["name"] == "ask")
        assert ask["options"][0]["name"] == "question" and ask["options"][0]["required"]
    finally:
        await client.close()


async def test_slash_commands_go_to_the_configured_guilds(fake: FakeDiscord) -> None:
    client = await client_for(fake, {"channels": {"discord": {"guilds": [77, "78"]}}})
    try:
        await wait_for(lambda: len(fake.commands) == 2, "commands registered in both guilds")
        assert set(fake.commands) == {"77", "78"}
        assert {c["name"] for c in fake.commands["77"]} == {"ask", "new", "status", "model"}
    finally:
        await client.close()


async def test_ask_is_deferred_then_answered_with_a_follow_up(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        interaction = await fake.interact("ask", {"question": "what is **up**?"})
        await wait_for(
            lambda: any("You said: what is **up**?" in t for t in fake.visible()),
            "the answer as a follow-up",
            changed=fake.changed,
        )
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert fake.callbacks == [{"id": interaction, "type": 5}]  # deferred: "thinking…"
        methods = [(method, path.split("/")[3]) for _, method, path in fake.calls]
        assert methods[0] == ("POST", "interactions")  # acknowledged before any follow-up
        assert all(kind == "webhooks" for _, kind in methods[1:])
        [shown] = fake.visible()
        assert "You said: what is **up**?" in shown
        assert fake.sent[0]["webhook"] and fake.sent[0]["allowed_mentions"]["parse"] == []
    finally:
        await client.close()


async def test_new_status_and_model_answer_as_the_chat_commands(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        await fake.interact("status")
        await wait_for(lambda: len(fake.visible()) == 1, "the status", changed=fake.changed)
        assert fake.visible()[0].startswith("Model: ")
        await fake.interact("model", {"name": "nobody/unknown-model"})
        await wait_for(lambda: len(fake.visible()) == 2, "the refusal", changed=fake.changed)
        assert "nobody/unknown-model" in fake.visible()[1]
        await fake.interact("new")
        await wait_for(lambda: len(fake.visible()) == 3, "the reset", changed=fake.changed)
        assert fake.visible()[2] == "Started a new conversation."
        assert [c["type"] for c in fake.callbacks] == [5, 5, 5]
        await fake.interact("new", guild="77", channel="600")  # a server: admins only
        await wait_for(lambda: fake.visible("600"), "the refusal", changed=fake.changed)
        assert fake.visible("600") == ["In a group chat only the bot's admins can change that."]
    finally:
        await client.close()


# -- the stream, on its own ----------------------------------------------------


@pytest.fixture
async def sink(fake: FakeDiscord) -> AsyncIterator[DiscordSink]:
    point_at(env_for(fake))
    client = discord.Client(intents=discord.Intents(guilds=True))
    await client.login(TOKEN)
    try:
        yield DiscordSink(client)
    finally:
        await client.close()


@pytest.fixture
async def memory() -> AsyncIterator[LiveMemory]:
    storage = MemoryStorage()
    await storage.open()
    yield LiveMemory(storage, "discord:1")
    await storage.close()


MESSAGE = InboundMessage(
    channel="discord",
    chat_id="555",
    sender_id="42",
    text="hi",
    message_id="1",
    context={"channel_id": 555, "message_id": 1, "guild_id": None},
)


def text(delta: str) -> AgentEvent:
    return AgentEvent("text", {"delta": delta})


async def finish(sink: DiscordSink, reply: Reply) -> None:
    for part in sink.render(reply):
        await sink.send_part(MESSAGE, part)


async def test_stream_edits_are_paced_and_continue_past_2000(
    fake: FakeDiscord, sink: DiscordSink, memory: LiveMemory
) -> None:
    stream = sink.open_stream(MESSAGE, StreamOptions(live=True, every=0.1, memory=memory))
    words = [f"word{n} " for n in range(450)]  # about 3,600 characters
    for start in range(0, len(words), 15):
        await stream.feed(text("".join(words[start : start + 15])))
        await asyncio.sleep(0.02)
    await wait_for(lambda: len(fake.sent) == 2, "a second message past 2,000 characters")
    live = await stream.close()
    # One update per 0.1 s; the update that passes 2,000 edits the first message and
    # sends the second at once.
    calls = [at for at, _, _ in fake.calls]
    updates = [b for a, b in itertools.pairwise(calls) if b - a > 0.05]
    assert len(updates) == len(calls) - 2  # all but the first call and the one send
    assert all(b - a >= 0.09 for a, b in itertools.pairwise([calls[0], *updates]))
    assert len(fake.calls) <= 12  # 30 pieces in 0.6 s: newest snapshot only
    assert live is not None and live["messages"] == list(fake.messages)
    assert await memory.recall() == live  # kept as it was sent
    whole = "".join(words).strip()
    await finish(sink, Reply(whole, live=live))
    assert fake.visible() == split_message(whole, LIMIT)  # finished in place, never twice
    assert len(fake.messages) == 2


async def test_a_429_mid_stream_slows_it_down_and_loses_nothing(
    fake: FakeDiscord, sink: DiscordSink, memory: LiveMemory
) -> None:
    fake.via, fake.retry_after, fake.edit_rate_limits = False, 0.3, 1
    stream = sink.open_stream(MESSAGE, StreamOptions(live=True, every=0.05, memory=memory))
    await stream.feed(text("one"))
    await wait_for(lambda: fake.sent, "the first text")
    await stream.feed(text(" two"))  # refused with 429: discord.py raises, the stream waits
    await wait_for(lambda: len(fake.calls) == 2, "the edit answered 429")
    await stream.feed(text(" three"))
    await wait_for(lambda: fake.edits, "an edit after the 429", timeout=2)
    refused_at, edited_at = fake.calls[1][0], fake.edits[0][0]
    assert edited_at - refused_at >= 0.29  # Retry-After respected
    assert fake.edits[0][2] == "one two three"
    await finish(sink, Reply("one two three four", live=await stream.close()))
    assert fake.visible() == ["one two three four"]


async def test_a_retry_after_a_crash_edits_the_same_message(
    fake: FakeDiscord, sink: DiscordSink, memory: LiveMemory
) -> None:
    first = sink.open_stream(MESSAGE, StreamOptions(live=True, every=0.05, memory=memory))
    await first.feed(text("half an ans"))
    await wait_for(lambda: fake.sent, "the first attempt's text")
    await wait_for(memory.recall, "the message id kept")
    # The process dies here: the first stream is never closed.
    options = StreamOptions(live=True, every=0.05, memory=memory, resumed=True)
    second = sink.open_stream(MESSAGE, options)
    await second.feed(text("A whole answer"))
    await wait_for(lambda: fake.edits, "the same message edited")
    await finish(sink, Reply("A whole answer, at last.", live=await second.close()))
    assert fake.visible() == ["A whole answer, at last."]
    quiet = sink.open_stream(MESSAGE, options)  # nothing streamed this time: still handed over
    assert await quiet.close() == {"messages": list(fake.messages)}


async def test_reasoning_and_tool_status_show_live_and_go_at_the_end(
    fake: FakeDiscord, sink: DiscordSink
) -> None:
    stream = sink.open_stream(MESSAGE, StreamOptions(live=True, every=0.05))
    await stream.feed(AgentEvent("thinking", {"content": "Which zone?", "mode": "stream"}))
    await stream.feed(AgentEvent("tool_call", {"id": "1", "name": "current_time", "arguments": {}}))
    await wait_for(lambda: fake.visible() and "-# Running" in fake.visible()[0], "the status")
    assert fake.visible()[0] == "> **Reasoning**\n> Which zone?\n\n-# Running current_time…"
    await stream.feed(text("It is **noon**."))
    await wait_for(lambda: "noon" in fake.visible()[0], "the answer under the reasoning")
    assert fake.visible()[0].startswith("> **Reasoning**") and "Running" not in fake.visible()[0]
    await finish(sink, Reply("It is **noon**.", live=await stream.close()))
    assert fake.visible() == ["It is **noon**."]


async def test_a_shorter_final_reply_deletes_what_the_stream_no_longer_needs(
    fake: FakeDiscord, sink: DiscordSink
) -> None:
    stream = sink.open_stream(MESSAGE, StreamOptions(live=True, every=0.05))
    await stream.feed(text("x " * 1500))
    await wait_for(lambda: len(fake.sent) == 2, "two messages")
    await finish(sink, Reply("Short after all.", live=await stream.close()))
    assert fake.visible() == ["Short after all."]


async def test_an_interaction_stream_edits_its_follow_up(fake: FakeDiscord) -> None:
    client = await client_for(fake, {"channels": {"discord": {"stream_every": 0.05}}})
    try:
        await fake.interact("ask", {"question": "stream please"})
        await wait_for(
            lambda: any("You said: stream please" in t for t in fake.visible()),
            "the answer",
            changed=fake.changed,
        )
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert len(fake.visible()) == 1 and len(fake.sent) == 1
        assert all("/webhooks/" in path for _, method, path in fake.calls if method == "PATCH")
    finally:
        await client.close()


async def test_an_expired_interaction_is_answered_in_the_channel(
    fake: FakeDiscord, sink: DiscordSink
) -> None:
    interaction = {"application_id": BOT_ID, "token": "expired-token"}
    message = InboundMessage(
        channel="discord",
        chat_id="555",
        sender_id="42",
        text="/status",
        message_id="2",
        context={"channel_id": 555, "guild_id": None, "interaction": interaction},
    )
    await sink.notify(message, "Still here.")
    assert fake.visible() == ["Still here."] and "webhook" not in fake.sent[0]


# -- shutdown --------------------------------------------------------------------


async def test_a_message_during_the_drain_is_stored_and_answered_after_restart(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-discord-0000")
        model.script(Scripted(text="First answer.", delay=0.5))
        model.script(Scripted(text="Answered after the restart."))
        data = {
            "agent": {"model": "anthropic/claude-sonnet-4-6"},
            "channels": {"discord": {"streaming": False}},
        }
        database = tmp_path / "chatlane.sqlite3"
        client = await client_for(fake, data, storage=SQLiteStorage(database))
        await fake.dispatch("first")
        async with asyncio.timeout(30):  # the first turn may import the anthropic SDK
            await model.arrived.wait()  # a turn in flight: the drain waits for it
        dispatcher = client.app[HOST_KEY].dispatcher
        closing = asyncio.ensure_future(client.close())
        await wait_for(lambda: dispatcher.draining, "the drain")
        await fake.dispatch("sent while draining")
        storage = client.app[HOST_KEY].runtime.storage

        async def both_stored() -> bool:
            return len(await storage.inbox_pending_ids()) == 2

        await wait_for(both_stored, "the message stored during the drain")
        await closing
        assert [m["content"] for m in fake.sent] == ["First answer."]
        again = await client_for(fake, data, storage=SQLiteStorage(database))
        try:
            await fake.wait_for(2)
            assert fake.sent[1]["content"] == "Answered after the restart."
            asked = model.requests[-1].json["messages"][-1]["content"]
            assert asked == [{"type": "text", "text": "sent while draining"}]
        finally:
            await again.close()


# -- attachments -----------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x01" * 40
OGG = b"OggS\x00\x02" + b"\x00" * 200
MB = 1024 * 1024
CLAUDE = {
    "agent": {"model": "anthropic/claude-sonnet-4-6", "media": {"max_bytes": MB}},
    "channels": {"discord": {"streaming": False}},
}


def path_of(attachment: dict[str, Any]) -> str:
    return urlsplit(attachment["url"]).path


async def test_a_photo_with_a_caption_reaches_the_model_as_an_image(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    photo = fake.attachment("cat.png", PNG, content_type="image/png")
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch(
            f"<@{BOT_ID}> what is in this picture?",
            attachments=[photo],
            guild="77",
            channel="600",
            mention_bot=True,
        )
        await fake.wait_for(1, seconds=30)  # the first turn imports the anthropic SDK
        assert fake.visible("600") == ["echo: what is in this picture?"]
        blocks = anthropic.requests[0].json["messages"][-1]["content"]
        image = next(b for b in blocks if b["type"] == "image")
        assert image["source"]["media_type"] == "image/png"
        assert base64.b64decode(image["source"]["data"]) == PNG
        assert fake.cdn_hits == [path_of(photo)]  # the payload's signed URL, once
    finally:
        await client.close()


async def test_a_voice_message_alone_is_transcribed_and_answered(
    fake: FakeDiscord,
    models: tuple[FakeAnthropic, FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anthropic, openai = models
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-discord-1111")
    voice = fake.attachment("voice-message.ogg", OGG, content_type="audio/ogg", voice=True)
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch("", attachments=[voice])  # no text: still answered
        await fake.wait_for(1, seconds=30)
        said = "[Voice note, transcribed]\nhello from a voice note"
        assert anthropic.requests[0].last_user_text == said
        assert fake.sent[0]["content"] == "echo: " + said
        [upload] = openai.transcriptions
        assert upload["filename"] == "voice.ogg" and upload["size"] == len(OGG)
        assert upload["model"] == "gpt-4o-mini-transcribe"
    finally:
        await client.close()


async def test_an_oversized_attachment_is_refused_without_downloading(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    big = fake.attachment("huge.jpg", b"\xff\xd8\xff" + b"\x00" * 64, size=25 * MB)
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch("", attachments=[big])
        await fake.wait_for(1)
        assert fake.sent[0]["content"] == "That file is too big for me: the limit is 1 MB."
        assert fake.cdn_hits == [] and anthropic.requests == []
    finally:
        await client.close()


async def test_a_size_that_lies_is_cut_while_downloading(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    liar = fake.attachment("small.png", PNG + b"\x00" * (2 * MB), size=len(PNG))
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch("", attachments=[liar])
        await fake.wait_for(1)
        assert fake.sent[0]["content"] == "That file is too big for me: the limit is 1 MB."
        assert fake.cdn_hits == [path_of(liar)] and anthropic.requests == []
    finally:
        await client.close()


async def test_a_url_in_the_text_is_never_fetched(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    # A file the fake CDN would serve (signed and all), named only in the text.
    bait = fake.attachment("bait.png", PNG, content_type="image/png")
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch(f"look at {bait['url']} please")
        await fake.wait_for(1, seconds=30)
        assert fake.cdn_hits == []
        assert anthropic.requests[0].json["messages"][-1]["content"] == [
            {"type": "text", "text": f"look at {bait['url']} please"}
        ]
    finally:
        await client.close()


async def test_a_text_file_and_a_pdf_reach_the_model_as_text(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    notes = fake.attachment("notes.txt", b"Shopping: eggs, milk\n", content_type="text/plain")
    paper = fake.attachment("q3.pdf", pdf("Quarterly"), content_type="application/pdf")
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch("sum these up", attachments=[notes, paper])
        await fake.wait_for(1, seconds=30)
        said = anthropic.requests[0].last_user_text
        assert said.startswith("sum these up\n\n[File notes.txt]\nShopping: eggs, milk")
        assert "[PDF q3.pdf]\nQuarterly" in said
    finally:
        await client.close()


async def test_a_sticker_or_an_unsupported_file_gets_the_one_line_reply(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    archive = fake.attachment("photos.zip", b"PK\x03\x04" + b"\x00" * 100)
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch("", stickers=["wave"])
        await fake.wait_for(1)
        await fake.dispatch("", attachments=[archive])
        await fake.wait_for(2)
        assert fake.sent[0]["content"] == f"I can't read stickers. I can take {SUPPORTED}."
        assert (
            fake.sent[1]["content"]
            == f"I can't read application/zip files. I can take {SUPPORTED}."
        )
        assert anthropic.requests == []
    finally:
        await client.close()


async def test_a_message_with_neither_text_nor_file_is_not_answered(fake: FakeDiscord) -> None:
    client = await client_for(fake, {"channels": {"discord": {"streaming": False}}})
    try:
        await fake.dispatch("")  # an embed-only message, say: nothing to answer
        await fake.dispatch("and now?")
        await fake.wait_for(1)
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert [m["content"].rpartition("You said: ")[2] for m in fake.sent] == ["and now?"]
    finally:
        await client.close()


async def test_ask_takes_a_file(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    photo = fake.attachment("chart.png", PNG, content_type="image/png")
    client = await client_for(fake, CLAUDE)
    try:
        await wait_for(lambda: "global" in fake.commands, "commands registered")
        ask = next(c for c in fake.commands["global"] if c["name"] == "ask")
        assert [(o["name"], o["type"], o.get("required", False)) for o in ask["options"]] == [
            ("question", 3, True),
            ("file", 11, False),
        ]
        await fake.interact("ask", {"question": "read this chart"}, files={"file": photo})
        await fake.wait_for(1, seconds=30)
        assert fake.sent[0]["content"] == "echo: read this chart" and fake.sent[0]["webhook"]
        blocks = anthropic.requests[0].json["messages"][-1]["content"]
        assert any(b["type"] == "image" for b in blocks)
        assert fake.cdn_hits == [path_of(photo)]
    finally:
        await client.close()


async def test_attachments_are_fetched_only_from_discords_cdn(sink: DiscordSink) -> None:
    ex = f"{int(time.time()) + 3600:x}"
    signed = f"https://cdn.discordapp.com/attachments/1/2/a.png?ex={ex}&is=2&hm=3&"
    part = MediaPart("image", url=signed)
    assert await sink.media_fetch(MESSAGE, part) == MediaFetch(signed)  # no token sent
    proxied = f"https://media.discordapp.net/attachments/1/2/a.png?ex={ex}"
    assert (await sink.media_fetch(MESSAGE, MediaPart("image", url=proxied))).url == proxied
    for elsewhere in (
        "https://cdn.discordapp.com.example.com/a.png",
        "https://cdn.discordapp.com@example.com/a.png",
        "http://cdn.discordapp.com/a.png",
        "https://example.com/a.png",
        "https://cdn.discordapp.com:99999/a.png",
        "",
    ):
        with pytest.raises(MediaError):
            await sink.media_fetch(MESSAGE, MediaPart("image", url=elsewhere))
    own = DiscordSink(sink.client, api_base="http://127.0.0.1:8123/api/v10")
    assert (await own.media_fetch(MESSAGE, MediaPart("image", url="http://127.0.0.1:8123/x"))).url


async def test_an_expired_attachment_url_is_signed_anew_before_the_download(
    fake: FakeDiscord, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    old = fake.attachment("late.png", PNG, content_type="image/png", expired=True)
    client = await client_for(fake, CLAUDE)
    try:
        await fake.dispatch("still there?", attachments=[old])
        await fake.wait_for(1, seconds=30)
        assert fake.sent[0]["content"] == "echo: still there?"
        assert fake.refreshed == [old["url"]]
        assert fake.cdn_hits == [path_of(old)]  # only the fresh URL was asked for
        blocks = anthropic.requests[0].json["messages"][-1]["content"]
        assert any(b["type"] == "image" for b in blocks)
    finally:
        await client.close()


async def test_an_expired_url_that_cannot_be_refreshed_is_told(
    fake: FakeDiscord, sink: DiscordSink
) -> None:
    sink = DiscordSink(sink.client, api_base=fake.api)  # the fake's CDN is its own address
    gone = fake.attachment("gone.png", PNG, expired=True)
    del fake.files[path_of(gone)]  # deleted since: Discord signs nothing
    with pytest.raises(MediaError, match="link to it has expired"):
        await sink.media_fetch(MESSAGE, MediaPart("image", url=gone["url"]))
    fake.refresh_status = 403
    kept = fake.attachment("kept.png", PNG, expired=True)
    with pytest.raises(MediaError, match="link to it has expired"):
        await sink.media_fetch(MESSAGE, MediaPart("image", url=kept["url"]))
    assert fake.refreshed == [gone["url"]] and fake.cdn_hits == []


def test_media_parts_name_each_kind_from_the_payload() -> None:
    state: Any = types.SimpleNamespace(http=None)  # what an Attachment keeps of the client
    payloads = [
        {"id": 1, "filename": "a.jpg", "size": 10, "url": "u1", "content_type": "image/jpeg"},
        {
            "id": 2,
            "filename": "voice-message.ogg",
            "size": 20,
            "url": "u2",
            "content_type": "audio/ogg",
            "duration_secs": 1.5,
            "waveform": "AAAA",
        },
        {"id": 3, "filename": "song.mp3", "size": 30, "url": "u3", "content_type": "audio/mpeg"},
        {
            "id": 4,
            "filename": "a.txt",
            "size": 5,
            "url": "u4",
            "content_type": "text/plain; charset=utf-8",
        },
        {"id": 5, "filename": "clip.mp4", "size": 5, "url": "u5", "content_type": "video/mp4"},
        {"id": 6, "filename": "blob", "size": 5, "url": "u6"},
    ]
    for payload in payloads:
        payload["proxy_url"] = payload["url"]
    parts = media_parts([discord.Attachment(data=p, state=state) for p in payloads])  # type: ignore[arg-type]
    assert [(p.kind, p.mime, p.size, p.name, p.url) for p in parts] == [
        ("image", "image/jpeg", 10, "a.jpg", "u1"),
        ("voice", "audio/ogg", 20, "voice-message.ogg", "u2"),
        ("audio", "audio/mpeg", 30, "song.mp3", "u3"),
        ("document", "text/plain", 5, "a.txt", "u4"),
        ("video", "video/mp4", 5, "clip.mp4", "u5"),
        ("document", "", 5, "blob", "u6"),
    ]
    many = [discord.Attachment(data={**payloads[0], "id": n}, state=state) for n in range(12)]  # type: ignore[arg-type]
    assert len(media_parts(many)) == 10


# -- config ----------------------------------------------------------------------


def test_guilds_must_be_server_ids() -> None:
    config = load_config(data={"channels": {"discord": {"guilds": [123]}}})
    assert isinstance(config.channel("discord"), DiscordConfig)
    assert config.channel("discord").guilds == ("123",)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as bad:
        load_config(data={"channels": {"discord": {"guilds": ["my server"]}}})
    assert "channels.discord.guilds" in str(bad.value) and "Copy Server ID" in str(bad.value)


def test_describe() -> None:
    state = DiscordChannel.describe(load_config(), {"DISCORD_BOT_TOKEN": TOKEN})
    assert state.enabled and TOKEN not in state.detail and "no privileged intent" in state.detail
    config = load_config(data={"channels": {"discord": {"read_all_messages": True}}})
    assert (
        "message content intent"
        in DiscordChannel.describe(config, {"DISCORD_BOT_TOKEN": TOKEN}).detail
    )
    assert not DiscordChannel.describe(load_config(), {}).enabled
