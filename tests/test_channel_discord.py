"""Discord end to end: a gateway MESSAGE_CREATE to the recorded REST message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from channels.discord import DiscordChannel
from tests.fakes.discord import BOT_ID, TOKEN, FakeDiscord
from tests.fakes.models import FakeAnthropic, Reply


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


async def client_for(fake: FakeDiscord, data: dict[str, Any] | None = None) -> TestClient[Any, Any]:
    env = {
        "DISCORD_BOT_TOKEN": TOKEN,
        "DISCORD_API_BASE_URL": fake.api,
        "DISCORD_GATEWAY_URL": fake.gateway,
    }
    runtime = AgentRuntime(config=load_config(data=data or {}), demo_when_unconfigured=True)
    client = TestClient(TestServer(create_app(runtime, env=env)))
    await client.start_server()
    async with asyncio.timeout(10):
        await fake.ready.wait()
    return client


async def test_direct_message_is_answered(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        message_id = await fake.dispatch("hello **bot**")
        sent = await fake.wait_for(1)
        assert sent[0]["channel_id"] == "555"
        assert "You said: hello **bot**" in sent[0]["content"]
        assert sent[0]["allowed_mentions"]["parse"] == []
        assert str(sent[0]["message_reference"]["message_id"]) == message_id
        assert fake.typing
    finally:
        await client.close()


async def test_guild_messages_need_a_mention(fake: FakeDiscord) -> None:
    client = await client_for(fake)
    try:
        await fake.dispatch("no mention here", guild="77", channel="600")
        await fake.dispatch(
            f"<@{BOT_ID}> are you there?", guild="77", channel="600", mention_bot=True
        )
        sent = await fake.wait_for(1)
        await client.app[HOST_KEY].dispatcher.drain(5)
        assert len(fake.sent) == 1
        assert "You said: are you there?" in sent[0]["content"]
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
        assert sum("You said: once" in m["content"] for m in fake.sent) == 1
        assert fake.rate_limits == 0
    finally:
        await client.close()


async def test_long_reply_split_at_2000(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-discord-0000")
        long = "\n\n".join(f"**Point {i}**: " + "detail " * 40 for i in range(30))
        long += "\n\n```python\n" + "x = 1\n" * 500 + "```"
        model.script(Reply(text=long, chunks=20))
        client = await client_for(fake, {"agent": {"model": "anthropic/claude-sonnet-4-6"}})
        try:
            await fake.dispatch("write it")
            await fake.wait_for(3)
            await client.app[HOST_KEY].dispatcher.drain(5)
            for message in fake.sent:
                assert len(message["content"]) <= 2000
                assert message["content"].count("```") % 2 == 0
            assert "**Point 29**" in "\n".join(m["content"] for m in fake.sent)
        finally:
            await client.close()


def test_describe() -> None:
    state = DiscordChannel.describe(load_config(), {"DISCORD_BOT_TOKEN": TOKEN})
    assert state.enabled and TOKEN not in state.detail and "message content" in state.detail
    assert not DiscordChannel.describe(load_config(), {}).enabled
