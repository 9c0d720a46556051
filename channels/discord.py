"""Discord over discord.py: the gateway client runs inside ``chatlane serve``.

Direct messages are always answered; in a server channel, messages that
mention the bot or reply to it (every message with
``channels.discord.read_all_messages: true``). DMs and mentions carry their
text without Discord's privileged *message content* intent, so the bot asks
for it only when ``read_all_messages`` is on.

Slash commands ``/ask``, ``/new``, ``/status`` and ``/model`` are registered at
start (globally, or in the servers listed in ``channels.discord.guilds``,
where they appear at once). Each is stored, then acknowledged with a deferred
response ("thinking…"), and answered with follow-ups through the dispatcher:
``/ask`` as a message to the model, the others as the chat commands.

Attachments (photos, voice messages, audio, text files, PDFs; stickers) become
the message's ``MediaPart``s, taken only from the gateway payload: the
attachment's ``url`` on Discord's CDN, its ``size``, ``content_type`` and file
name; a voice message is an attachment with ``duration_secs`` and ``waveform``.
``/ask`` takes one as its ``file`` option. A message with only an attachment is
answered like any other; the core (``bot.media``) does the rest.

During a shutdown's drain, messages and commands are still stored (Discord
never delivers them again to the next process) and answered after the restart.

discord.py has no option for its endpoints, so ``DISCORD_API_BASE_URL`` and
``DISCORD_GATEWAY_URL`` are applied to ``discord.http.Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web
from pydantic import field_validator

from bot.channel import ChannelHost, ChannelState, ChannelTraits, mask
from bot.config import ChannelConfig, Config
from bot.inbound import InboundMessage, MediaPart
from channels.discord_sink import LIMIT, TRAITS, DiscordSink

if TYPE_CHECKING:
    import discord  # about 8 MB: imported by from_env, only when the channel has a token
    from discord import app_commands

__all__ = ["LIMIT", "DiscordChannel", "DiscordConfig", "DiscordSink", "media_parts", "point_at"]

log = logging.getLogger(__name__)
logging.getLogger("discord").setLevel(logging.WARNING)  # discord.py logs every request

DEFAULT_API = "https://discord.com/api/v10"
DEFAULT_GATEWAY = "wss://gateway.discord.gg/"
MAX_ATTACHMENTS = 10  # Discord takes at most ten files a message


class DiscordConfig(ChannelConfig):
    """``channels.discord``: the keys every channel has, and Discord's own."""

    # Servers (guild ids) to register the slash commands in, where they show at once;
    # empty: registered globally (every server and DMs; Discord may take a while).
    guilds: tuple[str, ...] = ()
    # Answer every message in the server channels the bot can read, not only mentions
    # and replies; needs the privileged message content intent in the Developer Portal.
    read_all_messages: bool = False

    @field_validator("guilds", mode="before")
    @classmethod
    def _guild_ids(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            value = tuple(str(v) for v in value)
            for guild in value:
                if not guild.isdigit():
                    raise ValueError(
                        f"{guild!r} is not a server id; give the numeric ids (Developer "
                        "Mode on, then right-click the server > Copy Server ID)"
                    )
        return value


def point_at(env: Mapping[str, str]) -> None:
    import discord
    import yarl

    discord.http.Route.BASE = (env.get("DISCORD_API_BASE_URL") or DEFAULT_API).rstrip("/")
    gateway = env.get("DISCORD_GATEWAY_URL") or DEFAULT_GATEWAY
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)


def media_parts(
    attachments: Sequence[discord.Attachment],
    stickers: Sequence[discord.StickerItem] = (),
) -> tuple[MediaPart, ...]:
    """A message's files as the gateway payload describes them (never a URL from its text)."""
    parts = []
    for attachment in attachments[:MAX_ATTACHMENTS]:
        mime = (attachment.content_type or "").partition(";")[0].strip().lower()
        if attachment.is_voice_message():  # duration_secs and waveform: recorded in Discord
            kind = "voice"
        else:
            kind = next((k for k in ("image", "audio", "video") if mime.startswith(k + "/")), "")
        parts.append(
            MediaPart(
                kind or "document",
                mime=mime,
                size=attachment.size,
                name=attachment.filename,
                url=attachment.url,
            )
        )
    parts.extend(MediaPart("sticker", name=sticker.name) for sticker in stickers)
    return tuple(parts)


def intents(settings: DiscordConfig) -> discord.Intents:
    """Servers, their messages and DMs; message content only when every message is read."""
    import discord

    return discord.Intents(
        guilds=True,
        guild_messages=True,
        dm_messages=True,
        message_content=settings.read_all_messages,
    )


def _client(channel: DiscordChannel, wanted: discord.Intents) -> discord.Client:
    import discord

    class Client(discord.Client):
        async def setup_hook(self) -> None:  # logged in, not yet on the gateway
            await channel.register_commands()

    return Client(intents=wanted)


class DiscordChannel:
    name: ClassVar[str] = "discord"
    traits: ClassVar[ChannelTraits] = TRAITS
    config_model: ClassVar[type[ChannelConfig]] = DiscordConfig

    def __init__(self, host: ChannelHost, token: str, *, api_base: str | None = None) -> None:
        self.host = host
        self.token = token
        found = host.config.channel(self.name)
        self.settings = found if isinstance(found, DiscordConfig) else DiscordConfig()
        self.client = _client(self, intents(self.settings))
        self.client.event(self.on_message)
        self.tree = self._commands()
        self.sink = DiscordSink(self.client, api_base=api_base)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> DiscordChannel | None:
        token = env.get("DISCORD_BOT_TOKEN")
        if not token:
            return None
        point_at(env)
        return cls(host, token, api_base=env.get("DISCORD_API_BASE_URL"))

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        token = env.get("DISCORD_BOT_TOKEN")
        if not token:
            return ChannelState("discord", False, "DISCORD_BOT_TOKEN is not set")
        settings = config.channel("discord")
        if isinstance(settings, DiscordConfig) and settings.read_all_messages:
            reads = (
                "reads every message: needs the message content intent "
                "(Developer Portal > Bot > Privileged Gateway Intents)"
            )
        else:
            reads = "answers DMs, mentions and replies (no privileged intent needed)"
        guilds = getattr(settings, "guilds", ())
        where = "in servers " + ", ".join(guilds) if guilds else "globally"
        return ChannelState(
            "discord",
            True,
            f"gateway, token {mask(token)}; {reads}; slash commands {where}",
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
                "discord: channels.discord.read_all_messages needs the message content "
                "intent: enable it in the Developer Portal (Bot > Privileged Gateway "
                "Intents), or set read_all_messages: false"
            )
        except (discord.DiscordException, OSError) as error:
            log.error("discord: the gateway connection failed: %s", error)
        except Exception:
            log.exception("discord: the gateway client stopped on an unexpected error")

    async def stop(self) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- slash commands ----------------------------------------------------------

    def _commands(self) -> app_commands.CommandTree[Any]:
        import discord
        from discord import app_commands

        tree: app_commands.CommandTree[Any] = app_commands.CommandTree(self.client)

        async def ask(
            interaction: discord.Interaction,
            question: str,
            file: discord.Attachment | None = None,
        ) -> None:
            await self.on_command(interaction, question, media_parts([file] if file else []))

        # discord.py reads the option types from the annotations, in this module's
        # globals, where discord is not imported: given as objects instead.
        ask.__annotations__["file"] = discord.Attachment | None
        tree.command(name="ask", description="Ask the bot")(
            app_commands.describe(
                question="What you want to ask",
                file="A photo, voice message or file to go with it",
            )(ask)
        )

        @tree.command(name="new", description="Start a new conversation")
        async def new(interaction: discord.Interaction) -> None:
            await self.on_command(interaction, "/new")

        @tree.command(name="status", description="Model, keys and context use")
        async def status(interaction: discord.Interaction) -> None:
            await self.on_command(interaction, "/status")

        @tree.command(name="model", description="Show or switch the model")
        @app_commands.describe(name="provider/model, or default to go back")
        async def model(interaction: discord.Interaction, name: str | None = None) -> None:
            await self.on_command(interaction, f"/model {name}" if name else "/model")

        return tree

    async def register_commands(self) -> None:
        """In each server of ``channels.discord.guilds`` (shown at once), else globally."""
        import discord

        try:
            if not self.settings.guilds:
                await self.tree.sync()
            for guild_id in self.settings.guilds:
                guild = discord.Object(id=int(guild_id))
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        except discord.HTTPException as error:
            log.error(
                "discord: the slash commands were not registered (%s); invite the bot "
                "with the applications.commands scope, and check channels.discord.guilds",
                error,
            )

    async def on_command(
        self, interaction: discord.Interaction, text: str, media: tuple[MediaPart, ...] = ()
    ) -> None:
        """Stored first, then acknowledged ("thinking…"); answered by the dispatcher with
        follow-ups, which wait for the acknowledgement."""
        inbound = self._from_interaction(interaction, text, media)
        acked = self.sink.acks.setdefault(inbound.message_id, asyncio.Event())
        try:
            await self.host.dispatcher.submit(inbound, when_draining=True)
            await interaction.response.defer(thinking=True)
        finally:
            acked.set()
            self.sink.acks.pop(inbound.message_id, None)

    def _from_interaction(
        self, interaction: discord.Interaction, text: str, media: tuple[MediaPart, ...]
    ) -> InboundMessage:
        import discord

        channel_id = interaction.channel_id
        thread = isinstance(interaction.channel, discord.Thread)
        return InboundMessage(
            channel="discord",
            chat_id=str(channel_id),
            sender_id=str(interaction.user.id),
            text=text,
            message_id=str(interaction.id),
            thread_id=str(channel_id) if thread else None,
            sender_name=interaction.user.name,
            timestamp=interaction.created_at.timestamp(),
            group=interaction.guild_id is not None,
            context={
                "channel_id": channel_id,
                "guild_id": interaction.guild_id,
                "interaction": {
                    "application_id": interaction.application_id,
                    "token": interaction.token,
                },
            },
            attachments=media,
        )

    # -- messages ------------------------------------------------------------------

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
            if me not in message.mentions and not replied and not self.settings.read_all_messages:
                return
            text = re.sub(rf"<@!?{me.id}>", "", text).strip()
        media = media_parts(message.attachments, message.stickers)
        if not text.strip() and not media:
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
            group=guild_id is not None,
            context={
                "channel_id": message.channel.id,
                "message_id": message.id,
                "guild_id": guild_id,
            },
            attachments=media,
        )
        # Also while draining: Discord never delivers this message again, so it is
        # stored now and answered after the restart.
        await self.host.dispatcher.submit(inbound, when_draining=True)
