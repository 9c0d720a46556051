"""Discord over discord.py: the gateway client runs inside ``chatlane serve``.

Direct messages are always answered; in a server channel, only messages
that mention the bot or reply to it. Messages need Discord's privileged
*message content* intent (enable it in the developer portal). Replies are
Discord Markdown, split at 2,000 characters without breaking code blocks,
with mentions disabled so the model cannot ping anyone. discord.py waits
out Discord's rate limits itself.

discord.py has no option for its endpoints, so ``DISCORD_API_BASE_URL`` and
``DISCORD_GATEWAY_URL`` are applied to ``discord.http.Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from bot.channel import ChannelHost, ChannelState, ChannelTraits, Reply, Sink, mask
from bot.config import Config
from bot.formatting import FormatMode, split_message
from bot.inbound import InboundMessage
from channels.discord_format import DISCORD

if TYPE_CHECKING:
    import discord  # about 8 MB: imported by from_env, only when the channel has a token

log = logging.getLogger(__name__)
logging.getLogger("discord").setLevel(logging.WARNING)  # discord.py logs every request

LIMIT = 2000
TRAITS = ChannelTraits(limit=LIMIT, tool_format=FormatMode.MARKDOWN, shows_reasoning=True)
DEFAULT_API = "https://discord.com/api/v10"
DEFAULT_GATEWAY = "wss://gateway.discord.gg/"


def point_at(env: Mapping[str, str]) -> None:
    import discord
    import yarl

    discord.http.Route.BASE = (env.get("DISCORD_API_BASE_URL") or DEFAULT_API).rstrip("/")
    gateway = env.get("DISCORD_GATEWAY_URL") or DEFAULT_GATEWAY
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)


def _no_pings() -> discord.AllowedMentions:
    """Mentions disabled, so the model cannot ping anyone."""
    import discord

    return discord.AllowedMentions.none()


class DiscordSink(Sink):
    name = "discord"
    traits = TRAITS

    def __init__(self, client: discord.Client) -> None:
        self.client = client

    def render(self, reply: Reply) -> list[Any]:
        text = DISCORD.compose(reply.markdown, reply.reasoning)
        parts: list[Any] = [{"text": p} for p in split_message(text, LIMIT)]
        if parts:
            parts[0]["first"] = True
        return parts

    def _channel(self, message: InboundMessage) -> discord.PartialMessageable:
        guild = message.context.get("guild_id")
        return self.client.get_partial_messageable(
            int(message.context["channel_id"]), guild_id=int(guild) if guild else None
        )

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        import discord

        if isinstance(part, str):
            part = {"text": part}
        channel = self._channel(message)
        if not part.get("first"):
            await channel.send(part["text"], allowed_mentions=_no_pings())
            return
        reference = discord.MessageReference(
            message_id=int(message.context["message_id"]),
            channel_id=int(message.context["channel_id"]),
            fail_if_not_exists=False,
        )
        await channel.send(
            part["text"], allowed_mentions=_no_pings(), reference=reference, mention_author=False
        )

    async def notify(self, message: InboundMessage, text: str) -> None:
        await self._channel(message).send(text, allowed_mentions=_no_pings())

    async def typing(self, message: InboundMessage) -> None:
        await self.client.http.send_typing(int(message.context["channel_id"]))


class DiscordChannel:
    name: ClassVar[str] = "discord"
    traits: ClassVar[ChannelTraits] = TRAITS

    def __init__(self, host: ChannelHost, token: str) -> None:
        self.host = host
        self.token = token
        import discord

        intents = discord.Intents.default()
        intents.message_content = True
        intents.dm_messages = True
        intents.guild_messages = True
        self.client = discord.Client(intents=intents)
        self.client.event(self.on_message)
        self.sink = DiscordSink(self.client)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> DiscordChannel | None:
        token = env.get("DISCORD_BOT_TOKEN")
        if not token:
            return None
        point_at(env)
        return cls(host, token)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        token = env.get("DISCORD_BOT_TOKEN")
        if not token:
            return ChannelState("discord", False, "DISCORD_BOT_TOKEN is not set")
        return ChannelState(
            "discord",
            True,
            f"gateway, token {mask(token)}; needs the message content intent "
            "(Developer Portal > Bot > Privileged Gateway Intents)",
        )

    def add_routes(self, app: web.Application) -> None:
        return None  # Discord comes over the gateway, not a webhook

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        import discord

        try:
            await self.client.start(self.token)
        except discord.LoginFailure:
            log.error("discord: the bot token was refused; check DISCORD_BOT_TOKEN")
        except discord.PrivilegedIntentsRequired:
            log.error(
                "discord: enable the message content intent for this bot in the "
                "Developer Portal (Bot > Privileged Gateway Intents)"
            )
        except (discord.DiscordException, OSError) as error:
            log.error("discord: the gateway connection failed: %s", error)

    async def stop(self) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def on_message(self, message: discord.Message) -> None:
        import discord

        me = self.client.user
        if me is None or message.author.bot or message.author.id == me.id:
            return
        text = message.content
        guild_id = getattr(message.guild, "id", None) or getattr(message.channel, "guild_id", None)
        if guild_id is not None:
            replied = (
                message.reference is not None
                and isinstance(message.reference.resolved, discord.Message)
                and message.reference.resolved.author.id == me.id
            )
            if me not in message.mentions and not replied:
                return
            text = re.sub(rf"<@!?{me.id}>", "", text).strip()
        if not text:
            return
        thread = message.channel.id if isinstance(message.channel, discord.Thread) else None
        inbound = InboundMessage(
            channel="discord",
            chat_id=str(message.channel.id),
            sender_id=str(message.author.id),
            text=text,
            message_id=str(message.id),
            thread_id=str(thread) if thread else None,
            sender_name=message.author.name,
            timestamp=message.created_at.timestamp(),
            context={
                "channel_id": message.channel.id,
                "message_id": message.id,
                "guild_id": guild_id,
            },
        )
        await self.host.dispatcher.submit(inbound)
