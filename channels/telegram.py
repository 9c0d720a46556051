"""Telegram over python-telegram-bot: a webhook at ``POST /telegram/webhook``, or long polling.

Webhook mode when ``PUBLIC_URL`` is set, polling otherwise
(``channels.telegram.mode`` decides when set). Private chats always; in
groups only when the bot is mentioned, replied to, or sent a command.
Replies go out as text plus entities (no parse mode, so no escaping can
fail), split at 4096 UTF-16 units; a part Telegram still rejects for its
entities is sent again as plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

# python-telegram-bot 22 warns on every RetryAfter unless durations are opted into as
# timedelta (its documented switch, the default in its next major version).
os.environ.setdefault("PTB_TIMEDELTA", "true")

from aiohttp import web
from telegram import Bot, BotCommand
from telegram.constants import ChatAction
from telegram.error import BadRequest, ChatMigrated, Forbidden, TelegramError

from bot.channel import (
    ChannelHost,
    ChannelState,
    ChannelTraits,
    Reply,
    ReplyStream,
    Sink,
    StreamOptions,
    mask,
)
from bot.config import Config, ConfigError
from bot.dispatch import Outcome
from bot.formatting import FormatMode
from bot.inbound import InboundMessage, MediaPart
from bot.media import MediaFetch
from channels.common import for_platforms, send_with_retries, webhook_answer
from channels.telegram_format import render_telegram
from channels.telegram_http import AiohttpRequest
from channels.telegram_media import fetch, media_parts
from channels.telegram_stream import (
    Pacer,
    TelegramStream,
    classify,
    digest,
    edit,
    is_gone,
    send,
)

log = logging.getLogger(__name__)
logging.getLogger("telegram").setLevel(logging.WARNING)  # python-telegram-bot logs every request

# About one update a second in a private chat; groups are paced slower by the stream.
TRAITS = ChannelTraits(
    limit=4096,
    tool_format=FormatMode.MARKDOWN,
    shows_reasoning=True,
    streams=True,
    stream_every=1.0,
)

DEFAULT_BASE = "https://api.telegram.org"
WEBHOOK_PATH = "/telegram/webhook"
POLL_TIMEOUT = 25
SECRET_FORM = re.compile(r"[A-Za-z0-9_-]{1,256}")
# The chat commands (bot/commands.py), as Telegram's "/" menu shows them.
COMMANDS = (
    ("new", "Start a new conversation"),
    ("reset", "Start a new conversation"),
    ("status", "Model, keys and context use"),
    ("think", "Show the model's reasoning: off, on or stream"),
    ("model", "Show or switch the model"),
    ("help", "What the bot can do"),
)


MALFORMED = (KeyError, TypeError, ValueError, AttributeError, OverflowError)


def whole(value: Any) -> int:
    """An id or number from an update: a JSON integer, nothing else (1e400, "7", true)."""
    if type(value) is not int:
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


def storable(text: str) -> str:
    """Text with lone surrogates (JSON ``"\\ud800"``) replaced: they cannot be stored."""
    if text.isascii():  # most text, and checked in O(1): no surrogates possible
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def parse(body: bytes) -> Any:
    """The JSON in a webhook body, or None. orjson reads valid UTF-8 JSON in a fifth of
    json's time; what it refuses (lone surrogates, 1e400, NaN, a BOM, nesting past 1024)
    goes to json, which reads it as it always did. One difference is left: integers past
    64 bits come back as floats, so an update with one is refused (400) where json's int
    could pass; Telegram's ids fit in 52 bits."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested thousands deep too
        return None


def check_secret(secret: str | None) -> None:
    """Webhook mode needs the secret Telegram sends back: without it anyone who finds
    the URL can post updates (and have the bot write into any chat)."""
    if secret is None:
        raise ConfigError(
            "TELEGRAM_WEBHOOK_SECRET is not set: Telegram webhook mode refuses to start"
            " without it (anyone could post forged updates). Set it to 1-256 characters of"
            ' A-Z a-z 0-9 _ - (e.g. python -c "import secrets;'
            ' print(secrets.token_urlsafe(32))"), or use polling'
            " (channels.telegram.mode: polling, or no PUBLIC_URL)."
        )
    if not SECRET_FORM.fullmatch(secret):
        raise ConfigError(
            "TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ - (Telegram"
            " refuses other characters)"
        )


def make_bot(token: str, env: Mapping[str, str], *, turns: int = 10) -> Bot:
    """One Bot (one HTTP client and pool) for the whole channel; ``turns`` running at
    once each send at most a reply and a typing signal, so the pool is sized for that."""
    base = (env.get("TELEGRAM_API_BASE_URL") or DEFAULT_BASE).rstrip("/")
    request = AiohttpRequest(connection_pool_size=min(2 * turns + 8, 512))
    return Bot(token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot", request=request)


class TelegramSink(Sink):
    name = "telegram"
    traits = TRAITS

    def __init__(self, bot: Bot, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.bot = bot
        self.pacer = Pacer()
        self.max_bytes = max_bytes  # agent.media.max_bytes

    async def media_fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch:
        """A file's URL on Telegram (``getFile``), for the media core to download."""
        return await fetch(self.bot, part, self.max_bytes)

    def render(self, reply: Reply) -> list[Any]:
        """The reply's parts; when it was streamed into messages (``reply.live``), the
        first parts edit those messages (or keep them, when they show that part already),
        and a streamed message left over is deleted."""
        parts: list[Any] = render_telegram(reply.markdown, reasoning=reply.reasoning)
        if parts:
            parts[0]["first"] = True
        live = reply.live or {}
        streamed = [int(i) for i in live.get("messages") or []]
        shown = list(live.get("shown") or [])
        for index, message_id in enumerate(streamed):
            if index >= len(parts):
                parts.append({"delete": message_id})
            elif index < len(shown) and shown[index] == digest(parts[index]):
                parts[index]["kept"] = message_id  # it shows this part already
            else:
                parts[index]["edit"] = message_id
        return parts

    def open_stream(self, message: InboundMessage, options: StreamOptions) -> ReplyStream:
        if not options.live:
            return super().open_stream(message, options)
        return TelegramStream(self.bot, message, options, self.pacer)

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        if isinstance(part, str):
            part = {"text": part, "entities": []}
        chat_id: int | str = message.context.get("chat_id", message.chat_id)
        if "kept" in part:
            return
        if "delete" in part:
            await self._delete(chat_id, int(part["delete"]))
            return
        migrated = False
        while True:
            try:
                if message.context.get("group"):
                    await self.pacer.wait(chat_id)
                    self.pacer.note(chat_id)
                await send_with_retries(
                    functools.partial(self._put, message, chat_id, part),
                    classify,
                    what=f"telegram {'editMessageText' if 'edit' in part else 'sendMessage'}",
                )
                return
            except ChatMigrated as moved:
                if migrated:
                    raise
                migrated, chat_id = True, moved.new_chat_id
                log.info("telegram chat migrated to a supergroup; sending there")
            except Forbidden as error:
                log.warning("telegram refused to deliver (%s); giving up", error.message)
                return

    async def _put(self, message: InboundMessage, chat_id: int | str, part: Any) -> None:
        """Edit the streamed message the part finishes, or send it; a streamed message
        that is gone (deleted by someone) is replaced by a new one."""
        if "edit" in part:
            try:
                await edit(self.bot, chat_id, int(part["edit"]), part)
                return
            except BadRequest as error:
                if not is_gone(error):
                    raise
                log.info("telegram: the streamed message is gone (%s); sending anew", error)
        await send(self.bot, message, chat_id, part, first=bool(part.get("first")))

    async def _delete(self, chat_id: int | str, message_id: int) -> None:
        try:
            await send_with_retries(
                lambda: self.bot.delete_message(chat_id=chat_id, message_id=message_id),
                classify,
                what="telegram deleteMessage",
            )
        except (BadRequest, Forbidden) as error:
            log.info("telegram: a streamed message could not be deleted (%s)", error)

    async def notify(self, message: InboundMessage, text: str) -> None:
        await self.send_part(message, {"text": text, "entities": []})

    async def typing(self, message: InboundMessage) -> None:
        await self.bot.send_chat_action(
            chat_id=message.context.get("chat_id", message.chat_id),
            action=ChatAction.TYPING,
            message_thread_id=message.context.get("thread_id"),
        )


class TelegramChannel:
    name: ClassVar[str] = "telegram"
    traits: ClassVar[ChannelTraits] = TRAITS

    def __init__(self, host: ChannelHost, bot: Bot, secret: str | None, mode: str) -> None:
        self.host = host
        self.bot = bot
        self.secret = secret
        self.mode = mode
        self.max_bytes = host.config.agent.media.max_bytes
        self.sink = TelegramSink(bot, self.max_bytes)
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> TelegramChannel | None:
        token = env.get("TELEGRAM_BOT_TOKEN")
        if not token:
            return None
        configured = host.config.channel("telegram").mode
        mode = configured or ("webhook" if env.get("PUBLIC_URL") else "polling")
        secret = env.get("TELEGRAM_WEBHOOK_SECRET") or None
        if mode == "webhook":
            check_secret(secret)
        bot = make_bot(token, env, turns=host.config.agent.queuing.max_concurrent_global)
        return cls(host, bot, secret, mode)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        token = env.get("TELEGRAM_BOT_TOKEN")
        if not token:
            return ChannelState("telegram", False, "TELEGRAM_BOT_TOKEN is not set")
        mode = config.channel("telegram").mode or (
            "webhook" if env.get("PUBLIC_URL") else "polling"
        )
        where = f" at {env['PUBLIC_URL'].rstrip('/')}{WEBHOOK_PATH}" if mode == "webhook" else ""
        secret = "set" if env.get("TELEGRAM_WEBHOOK_SECRET") else "not set"
        return ChannelState(
            "telegram", True, f"{mode}{where}, token {mask(token)}, webhook secret {secret}"
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(WEBHOOK_PATH, self.webhook)

    async def start(self) -> None:
        await self.bot.initialize()
        await self._set_commands()
        if self.mode == "polling":
            await self.bot.delete_webhook()
            self._poller = asyncio.ensure_future(self._poll())
        log.info("telegram: @%s in %s mode", self.bot.username, self.mode)

    async def _set_commands(self) -> None:
        """The chat commands in Telegram's "/" menu; a failure is logged, never fatal."""
        try:
            await self.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS])
        except TelegramError as error:
            log.warning("telegram: the command menu was not set (%s)", error)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.bot.shutdown()

    @for_platforms
    async def webhook(self, request: web.Request) -> web.Response:
        if self.secret is not None:
            given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
            # Bytes on both sides: a header that is not ASCII is simply wrong, not an error.
            if not hmac.compare_digest(given.encode("utf-8", "replace"), self.secret.encode()):
                return web.Response(status=403, text="bad secret token")
        data = parse(await request.read())
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.Response(status=400, text="not a Telegram update")
        try:
            inbound = self.inbound(data)
        except MALFORMED:
            return web.Response(status=400, text="malformed Telegram update")
        if inbound is None:
            return web.Response(status=200, text="ok")  # edits, service messages: nothing to answer
        return webhook_answer(await self.host.dispatcher.submit(inbound))

    def inbound(self, update: dict[str, Any]) -> InboundMessage | None:
        """The message in one Update (the Bot API's JSON, read directly: PTB's
        ``Update.de_json`` costs 15x as much, more than the rest of the webhook path;
        see docs/channels/telegram.md), or None when it is nothing to answer.
        A photo, voice note or file becomes an attachment (``telegram_media``), its
        caption the text. Wrong types raise ValueError or TypeError; text is made storable."""
        message = update.get("message")
        if not isinstance(message, dict):
            return None  # edited messages, channel posts...
        sender, chat = message.get("from"), message["chat"]
        attachments = media_parts(message, self.max_bytes)
        text = message.get("caption", "") if attachments else message.get("text")
        if not isinstance(text, str) or not isinstance(sender, dict):
            return None  # service messages, locations, polls...
        if not (text.strip() or attachments):
            return None
        text = storable(text)
        chat_id, sender_id = whole(chat["id"]), whole(sender["id"])
        group = chat["type"] in ("group", "supergroup")
        if group:
            entities = message.get("caption_entities" if attachments else "entities")
            addressed, text = self._addressed(message, text, entities)
            if not addressed or not (text or attachments):
                return None
        topic = whole(message["message_thread_id"]) if message.get("is_topic_message") else None
        username = sender.get("username")
        return InboundMessage(
            channel="telegram",
            chat_id=str(chat_id),
            sender_id=str(sender_id),
            text=text,
            message_id=str(whole(update["update_id"])),
            thread_id=str(topic) if topic else None,
            sender_name=storable(username) if isinstance(username, str) else None,
            timestamp=float(whole(message.get("date") or 0)),
            context={
                "chat_id": chat_id,
                "message_id": whole(message["message_id"]),
                "thread_id": topic or None,
                "group": group,
            },
            group=group,
            attachments=attachments,
        )

    def _addressed(self, message: dict[str, Any], text: str, entities: Any) -> tuple[bool, str]:
        """Whether a group message is for the bot, and its text without the mention."""
        me = (self.bot.username or "").lower()
        reply = message.get("reply_to_message") or {}
        replied = (reply.get("from") or {}).get("id") == self.bot.id
        encoded = text.encode("utf-16-le")  # entity offsets count UTF-16 units
        for entity in entities or []:
            start, end = (
                whole(entity["offset"]) * 2,
                (whole(entity["offset"]) + whole(entity["length"])) * 2,
            )
            piece = encoded[start:end].decode("utf-16-le")
            kind = entity.get("type")
            mentioned = (kind == "mention" and piece.lower() == f"@{me}") or (
                kind == "text_mention" and (entity.get("user") or {}).get("id") == self.bot.id
            )
            if mentioned:
                before = encoded[:start].decode("utf-16-le").rstrip()
                after = encoded[end:].decode("utf-16-le").lstrip()
                return True, f"{before} {after}".strip() if before and after else before + after
            if kind == "bot_command" and start == 0:
                target = piece.partition("@")[2].lower()
                if not target or target == me:
                    return True, text
                return False, text  # a command for another bot
        return replied, text

    async def _poll(self) -> None:
        offset: int | None = None
        failures = 0
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=POLL_TIMEOUT, allowed_updates=["message"]
                )
                for update in updates:
                    outcome = await self._take(update.to_dict())
                    if outcome is Outcome.DRAINING:
                        return  # not stored: Telegram keeps it for the next start
                    offset = update.update_id + 1  # stored (or deliberately ignored): acknowledge
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Telegram's or our storage's trouble: what was not acknowledged comes again.
                failures += 1
                retry = classify(error)
                wait = min(2.0**failures, 60.0)
                if retry is not None and retry.after is not None:
                    wait = retry.after
                log.warning("telegram polling failed (%s); retrying in %.0fs", error, wait)
                await asyncio.sleep(wait)

    async def _take(self, update: dict[str, Any]) -> Outcome:
        try:
            inbound = self.inbound(update)
        except MALFORMED:
            log.warning("telegram: skipped a malformed update %s", update.get("update_id"))
            return Outcome.ACCEPTED
        return Outcome.ACCEPTED if inbound is None else await self.host.dispatcher.submit(inbound)

    @classmethod
    async def set_webhook(cls, config: Config, env: Mapping[str, str]) -> int:
        token = env.get("TELEGRAM_BOT_TOKEN")
        public = (env.get("PUBLIC_URL") or "").rstrip("/")
        if not token:
            print("chatlane: set TELEGRAM_BOT_TOKEN first (from @BotFather)")
            return 1
        if not public.startswith("https://"):
            print(
                "chatlane: set PUBLIC_URL to the public https origin, e.g. https://bot.example.com"
            )
            return 1
        secret = env.get("TELEGRAM_WEBHOOK_SECRET") or None
        try:
            check_secret(secret)
        except ConfigError as error:
            print(f"chatlane: {error}", file=sys.stderr)
            return 1
        bot = make_bot(token, env)
        async with bot:
            await bot.set_webhook(
                url=public + WEBHOOK_PATH,
                secret_token=secret,
                allowed_updates=["message"],
                drop_pending_updates=False,
            )
        print(f"Telegram webhook set to {public}{WEBHOOK_PATH} (with a secret token)")
        return 0
