"""Discord replies: rendered, sent, and shown while they are written.

A reply goes to the channel the message came from (the first part answers
it), or, for a slash command, through the interaction's webhook (follow-ups
to the deferred response). Mentions are disabled, so the model cannot ping
anyone.

Streaming is send, then edit: the first text at once, then one update per
``stream_every`` (Discord allows 5 message edits per 5 s per channel); past
2,000 characters the reply continues in a new message. The ids of what the
stream sent are kept (``LiveMemory``) as they are sent, and handed to
``render`` (``Reply.live``), whose parts edit those messages into the final
text, send what does not fit, and delete what is left over: the reply
appears once, also when a retry after a crash finishes it.

Attachments are fetched from their URL in the gateway payload, and only from
Discord's CDN (``cdn.discordapp.com``, ``media.discordapp.net``, or the origin
of ``DISCORD_API_BASE_URL`` when it is set): the URLs are signed, so no token
is sent with them. They expire after about a day (``ex``, hex seconds): an
older one (a message stored during a shutdown, answered much later) is signed
anew first (``POST /attachments/refresh-urls``, with the bot token, to the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from bot.channel import ChannelTraits, Reply, ReplyStream, Sink, StreamOptions
from bot.formatting import FormatMode, split_message
from bot.inbound import InboundMessage, JSONPart, MediaPart
from bot.media import MediaError, MediaFetch
from bot.streaming import LiveStream, RetryLater, Snapshot
from channels import discord_format

if TYPE_CHECKING:
    import discord  # about 8 MB: imported only once the channel has a token

log = logging.getLogger(__name__)

LIMIT = 2000
# Discord takes 5 edits per 5 s in a channel: 4 for the stream, room for the final one.
STREAM_EVERY = 1.25
TRAITS = ChannelTraits(
    limit=LIMIT,
    tool_format=FormatMode.MARKDOWN,
    shows_reasoning=True,
    streams=True,
    stream_every=STREAM_EVERY,
)
ACK_WAIT = 5.0  # seconds a reply waits for its interaction to be acknowledged
CDN = frozenset({"https://cdn.discordapp.com", "https://media.discordapp.net"})


def _expires(url: str) -> float | None:
    """When a signed CDN URL stops working (its ``ex``), or None when it does not say."""
    try:
        return float(int(parse_qs(urlsplit(url).query)["ex"][0], 16))
    except (KeyError, ValueError):
        return None


def _origin(url: str) -> str:
    try:
        found = urlsplit(url)
        port = found.port
    except ValueError:
        return ""
    default = {"https": 443, "http": 80}.get(found.scheme)
    where = found.hostname or ""
    return f"{found.scheme}://{where}" + (f":{port}" if port and port != default else "")


def _no_pings() -> discord.AllowedMentions:
    import discord

    return discord.AllowedMentions.none()


def slow_down(error: Exception) -> RetryLater | None:
    """Discord's "slow down", as ``RetryLater``: discord.py waits out a 429 by itself
    and raises only when it cannot (``RateLimited`` past ``max_ratelimit_timeout``, or
    an ``HTTPException`` with status 429 when the answer did not come from Discord's
    API, or after its retries)."""
    import discord

    if isinstance(error, discord.RateLimited):
        return RetryLater(error.retry_after)
    if isinstance(error, discord.HTTPException) and error.status == 429:
        header = error.response.headers.get("Retry-After", "")
        try:
            return RetryLater(float(header))
        except ValueError:
            return RetryLater(1.0)
    return None


class Target(Protocol):
    """Where a reply's messages go."""

    async def send(self, text: str, *, first: bool) -> str: ...

    async def edit(self, message_id: str, text: str) -> None: ...

    async def delete(self, message_id: str) -> None: ...


class ChannelTarget:
    """The channel a message came from; the first part answers that message."""

    def __init__(self, client: discord.Client, message: InboundMessage) -> None:
        guild = message.context.get("guild_id")
        self.channel = client.get_partial_messageable(
            int(message.context["channel_id"]), guild_id=int(guild) if guild else None
        )
        self.message = message

    async def send(self, text: str, *, first: bool) -> str:
        import discord

        reply_to = self.message.context.get("message_id")
        if not first or reply_to is None:
            sent = await self.channel.send(text, allowed_mentions=_no_pings())
            return str(sent.id)
        reference = discord.MessageReference(
            message_id=int(reply_to), channel_id=self.channel.id, fail_if_not_exists=False
        )
        sent = await self.channel.send(
            text, allowed_mentions=_no_pings(), reference=reference, mention_author=False
        )
        return str(sent.id)

    async def edit(self, message_id: str, text: str) -> None:
        partial = self.channel.get_partial_message(int(message_id))
        await partial.edit(content=text, allowed_mentions=_no_pings())

    async def delete(self, message_id: str) -> None:
        await self.channel.get_partial_message(int(message_id)).delete()


class InteractionTarget:
    """A slash command's follow-ups (the first one replaces "thinking…"), sent once the
    interaction is acknowledged; its token lasts 15 minutes, then the channel is used."""

    def __init__(
        self, client: discord.Client, message: InboundMessage, acked: asyncio.Event | None
    ) -> None:
        import discord

        found = message.context["interaction"]
        self.webhook = discord.Webhook.partial(
            int(found["application_id"]), found["token"], client=client
        )
        self.fallback = ChannelTarget(client, message)
        self.acked = acked

    async def _ready(self) -> None:
        if self.acked is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_WAIT):
                    await self.acked.wait()

    async def send(self, text: str, *, first: bool) -> str:
        import discord

        await self._ready()
        try:
            sent = await self.webhook.send(text, wait=True, allowed_mentions=_no_pings())
        except (discord.NotFound, discord.Forbidden) as error:  # expired or never acknowledged
            log.info("discord: interaction follow-up refused (%s); sending in the channel", error)
            return await self.fallback.send(text, first=False)
        return str(sent.id)

    async def edit(self, message_id: str, text: str) -> None:
        await self._ready()
        await self.webhook.edit_message(int(message_id), content=text, allowed_mentions=_no_pings())

    async def delete(self, message_id: str) -> None:
        await self.webhook.delete_message(int(message_id))


class DiscordSink(Sink):
    name = "discord"
    traits = TRAITS

    def __init__(self, client: discord.Client, *, api_base: str | None = None) -> None:
        self.client = client
        self.acks: dict[str, asyncio.Event] = {}  # interactions not acknowledged yet
        self.cdn = CDN | ({_origin(api_base)} if api_base else set())

    async def media_fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch:
        """An attachment's URL from the gateway payload, only on Discord's CDN; signed by
        Discord, so fetched without the bot token."""
        if _origin(part.url) not in self.cdn:
            log.warning("discord: refused an attachment URL outside Discord's CDN")
            raise MediaError("I couldn't download that file from Discord.")
        expires = _expires(part.url)
        if expires is not None and expires < time.time() + 60:
            return MediaFetch(await self._refreshed(part.url))
        return MediaFetch(part.url)

    async def _refreshed(self, url: str) -> str:
        """``url`` signed anew by Discord's API (it was expired, or about to be)."""
        import discord

        expired = "I couldn't download that file: Discord's link to it has expired."
        route = discord.http.Route("POST", "/attachments/refresh-urls")
        try:
            answer = await self.client.http.request(route, json={"attachment_urls": [url]})
        except (discord.DiscordException, OSError) as error:
            log.warning("discord: an expired attachment URL was not refreshed (%s)", error)
            raise MediaError(expired) from None
        found = answer.get("refreshed_urls") if isinstance(answer, dict) else None
        for item in found if isinstance(found, list) else []:
            fresh = str(item.get("refreshed") or "") if isinstance(item, dict) else ""
            if _origin(fresh) in self.cdn:
                return fresh
        log.warning("discord: the refreshed attachment URL was missing or off the CDN")
        raise MediaError(expired)

    def target(self, message: InboundMessage) -> Target:
        if "interaction" in message.context:
            return InteractionTarget(self.client, message, self.acks.get(message.message_id))
        return ChannelTarget(self.client, message)

    def render(self, reply: Reply) -> list[JSONPart]:
        """Parts in order: ``{"edit": id, "text"}`` finishes a message the stream left,
        ``{"text", "first"}`` sends one, ``{"delete": id}`` removes one no longer needed."""
        text = discord_format.DISCORD.compose(reply.markdown, reply.reasoning)
        chunks = split_message(text, LIMIT, markers=discord_format.MARKERS)
        left = [str(m) for m in (reply.live or {}).get("messages", [])]
        parts: list[JSONPart] = []
        for index, chunk in enumerate(chunks):
            if index < len(left):
                parts.append({"edit": left[index], "text": chunk})
            else:
                parts.append({"text": chunk, "first": index == 0})
        parts.extend({"delete": gone} for gone in left[len(chunks) :])
        return parts

    async def send_part(self, message: InboundMessage, part: JSONPart) -> None:
        import discord

        if isinstance(part, str):
            part = {"text": part}
        assert isinstance(part, dict)
        target = self.target(message)
        if "delete" in part:
            with contextlib.suppress(discord.NotFound):
                await target.delete(str(part["delete"]))
        elif "edit" in part:
            try:
                await target.edit(str(part["edit"]), part["text"])
            except discord.NotFound:  # deleted meanwhile: the text still goes out
                await target.send(part["text"], first=False)
        else:
            await target.send(part["text"], first=bool(part.get("first")))

    async def notify(self, message: InboundMessage, text: str) -> None:
        await self.target(message).send(text, first=False)

    async def typing(self, message: InboundMessage) -> None:
        if "interaction" not in message.context:  # a deferred interaction shows "thinking…"
            await self.client.http.send_typing(int(message.context["channel_id"]))

    def open_stream(self, message: InboundMessage, options: StreamOptions) -> ReplyStream:
        if not options.live:
            return super().open_stream(message, options)
        return DiscordStream(self.target(message), options)


class DiscordStream(LiveStream):
    """Send, then edit; a new message past 2,000 characters. What it sent is remembered
    at once, so a retry after a crash edits the same messages."""

    def __init__(self, target: Target, options: StreamOptions) -> None:
        super().__init__(options)
        self.target = target
        self.ids: list[str] = []
        self.shown: list[str] = []
        self._recalled = not options.resumed

    async def show(self, snapshot: Snapshot) -> None:
        import discord

        await self._recall()
        text = discord_format.live(snapshot.text, snapshot.reasoning, snapshot.status)
        chunks = split_message(text, LIMIT, markers=discord_format.MARKERS)
        try:
            for index, chunk in enumerate(chunks):
                await self._show_chunk(index, chunk)
        except discord.DiscordException as error:
            slow = slow_down(error)
            if slow is None:
                raise
            raise slow from error

    async def _show_chunk(self, index: int, chunk: str) -> None:
        import discord

        if index < len(self.ids):
            if self.shown[index] == chunk:
                return
            try:
                await self.target.edit(self.ids[index], chunk)
            except discord.NotFound:  # deleted by someone: start that part again
                self.ids[index] = await self.target.send(chunk, first=index == 0)
                await self._remember()
            self.shown[index] = chunk
            return
        self.ids.append(await self.target.send(chunk, first=index == 0))
        self.shown.append(chunk)
        await self._remember()

    async def handover(self) -> dict[str, Any] | None:
        await self._recall()
        return {"messages": list(self.ids)} if self.ids else None

    async def _recall(self) -> None:
        if self._recalled:
            return
        self._recalled = True
        memory = self.options.memory
        found = await memory.recall() if memory is not None else None
        if found:
            self.ids = [str(m) for m in found.get("messages", [])]
            self.shown = [""] * len(self.ids)  # not known: each is edited when next shown

    async def _remember(self) -> None:
        if self.options.memory is not None:
            await self.options.memory.remember({"messages": list(self.ids)})
