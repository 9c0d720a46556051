"""Telegram replies shown while they are written, and the pace Telegram allows.

Private chats get a draft (``sendMessageDraft``, Bot API 10.0) that grows with
the reply; the final ``sendMessage`` replaces it. Groups, where drafts do not
exist, get the first text as a message that is then edited
(``editMessageText``); past 4096 units the stream goes on in a new message.
The ids of those messages are kept in ``LiveMemory`` while the turn runs, so
an attempt after a crash edits the same messages instead of leaving a half
reply, and ``TelegramSink.render`` edits them into the final parts.

``Pacer`` keeps each group under Telegram's 20 messages a minute (edits
count): live updates stop short of it and leave room for the final parts,
which wait for their turn instead of meeting a 429.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import zlib
from collections import deque
from dataclasses import replace
from typing import Any

from telegram import Bot, Message, MessageEntity, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.channel import StreamOptions
from bot.inbound import InboundMessage
from bot.streaming import LiveStream, RetryLater, Snapshot
from channels.common import Retry
from channels.telegram_format import render_live, tail_markdown

log = logging.getLogger(__name__)

GROUP_SLOWER = 3  # groups: 20 messages a minute, all told; a live update every 3 s by default
GROUP_WINDOW = 60.0
GROUP_MESSAGES = 20  # per group and minute, edits included
GROUP_RESERVE = 4  # of those, kept for the final parts


def retry_seconds(error: RetryAfter) -> float:
    wait = error.retry_after
    return wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait)


def classify(exc: BaseException) -> Retry | None:
    if isinstance(exc, RetryAfter):
        return Retry(retry_seconds(exc))
    if isinstance(exc, TimedOut | NetworkError) and not isinstance(exc, BadRequest | Forbidden):
        return Retry()
    return None


def is_formatting_error(error: BadRequest) -> bool:
    text = error.message.lower()
    return "entit" in text or "parse" in text


def is_not_modified(error: BadRequest) -> bool:
    return "not modified" in error.message.lower()


def is_gone(error: BadRequest) -> bool:
    """The message to edit was deleted, or is too old to edit."""
    text = error.message.lower()
    return "not found" in text or "can't be edited" in text


def digest(part: dict[str, Any]) -> str:
    """What a part shows, in short: a message showing it already needs no edit."""
    shown = json.dumps([part["text"], part.get("entities") or []], sort_keys=True)
    return hashlib.sha1(shown.encode("utf-8", "replace")).hexdigest()[:16]


def entities_of(part: dict[str, Any], bot: Bot) -> list[MessageEntity]:
    found = (MessageEntity.de_json(e, bot) for e in part.get("entities") or [])
    return [e for e in found if e is not None]


class Pacer:
    """Sends per group chat within Telegram's limit, counted over the last minute."""

    def __init__(self, limit: int = GROUP_MESSAGES, window: float = GROUP_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._sent: dict[int | str, deque[float]] = {}

    def delay(self, chat_id: int | str, *, reserve: int = 0) -> float:
        """Seconds until one more send fits, keeping ``reserve`` sends free."""
        sent = self._sent.get(chat_id)
        if sent is None:
            return 0.0
        now = time.monotonic()
        while sent and now - sent[0] >= self.window:
            sent.popleft()
        if not sent:
            del self._sent[chat_id]
            return 0.0
        over = len(sent) - (self.limit - reserve) + 1
        return 0.0 if over <= 0 else sent[over - 1] + self.window - now

    def note(self, chat_id: int | str) -> None:
        self._sent.setdefault(chat_id, deque()).append(time.monotonic())

    async def wait(self, chat_id: int | str) -> None:
        seconds = self.delay(chat_id)
        if seconds > 0:
            await asyncio.sleep(seconds)


def draft_id(message: InboundMessage) -> int:
    """A non-zero id per reply: the same on every attempt at it."""
    return zlib.crc32(message.dedupe_key.encode()) or 1


class TelegramStream(LiveStream):
    """A reply as a draft (private chats) or a message edited as it grows (groups)."""

    def __init__(
        self, bot: Bot, message: InboundMessage, options: StreamOptions, pacer: Pacer
    ) -> None:
        self.group = bool(message.context.get("group"))
        if self.group:
            options = replace(options, every=options.every * GROUP_SLOWER)
        super().__init__(options)
        self.bot = bot
        self.message = message
        self.pacer = pacer
        self.chat_id: int | str = message.context.get("chat_id", message.chat_id)
        self.thread_id: int | None = message.context.get("thread_id")
        self.drafts = not self.group
        self.sent: list[int] = []  # ids of the messages this reply is shown in
        self.shown: list[str] = []  # what each shows now
        self._recalled = False

    async def show(self, snapshot: Snapshot) -> None:
        text = tail_markdown(snapshot.text) if self.drafts else snapshot.text
        parts = render_live(text, reasoning=snapshot.reasoning, status=snapshot.status)
        if not parts:
            return
        try:
            if self.drafts:
                await self._draft(parts[-1])  # the newest text, when it needs two messages
            else:
                await self._messages(parts)
        except RetryAfter as slow:
            raise RetryLater(retry_seconds(slow)) from slow
        except ChatMigrated as moved:  # a group became a supergroup: shown there next time
            self.chat_id = moved.new_chat_id
            raise RetryLater(0) from moved

    async def handover(self) -> dict[str, Any] | None:
        await self._recall()
        return {"messages": list(self.sent), "shown": list(self.shown)} if self.sent else None

    async def _draft(self, part: dict[str, Any]) -> None:
        entities = entities_of(part, self.bot)
        try:
            await self._send_draft(part["text"], entities)
        except BadRequest as error:
            if entities and is_formatting_error(error):
                await self._send_draft(part["text"], [])
                return
            # Drafts not offered here (an older Bot API server, a chat type without them):
            # this reply is shown as a message that grows instead.
            log.info("telegram: no draft (%s); showing the reply as an edited message", error)
            self.drafts = False
            await self._messages([part])

    async def _send_draft(self, text: str, entities: list[MessageEntity]) -> None:
        await self.bot.send_message_draft(
            chat_id=int(self.chat_id),
            draft_id=draft_id(self.message),
            text=text,
            message_thread_id=self.thread_id,
            entities=entities or None,
        )

    async def _messages(self, parts: list[dict[str, Any]]) -> None:
        await self._recall()
        for index, part in enumerate(parts):
            key = digest(part)
            if index < len(self.sent) and self.shown[index] == key:
                continue
            if self.group and (wait := self.pacer.delay(self.chat_id, reserve=GROUP_RESERVE)):
                raise RetryLater(wait)
            if index < len(self.sent):
                await edit(self.bot, self.chat_id, self.sent[index], part)
            else:
                sent = await send(self.bot, self.message, self.chat_id, part, first=index == 0)
                self.sent.append(sent.message_id)
                self.shown.append("")
                if self.options.memory is not None:
                    await self.options.memory.remember({"messages": self.sent})
            if self.group:
                self.pacer.note(self.chat_id)
            self.shown[index] = key

    async def _recall(self) -> None:
        """After a crash mid-stream: the messages the earlier attempt left, to reuse."""
        if self._recalled or not self.options.resumed or self.options.memory is None:
            self._recalled = True
            return
        self._recalled = True
        found = await self.options.memory.recall()
        ids = (found or {}).get("messages") or []
        kept = [int(i) for i in ids if isinstance(i, int)]
        if kept and not self.sent:
            self.sent, self.shown = kept, [""] * len(kept)
            self.drafts = False


async def send(
    bot: Bot, message: InboundMessage, chat_id: int | str, part: dict[str, Any], *, first: bool
) -> Message:
    """One message (a reply to the asker's message in groups), plain text if Telegram
    rejects its entities."""
    reply = None
    if first and message.context.get("group") and message.context.get("message_id"):
        reply = ReplyParameters(
            message_id=int(message.context["message_id"]), allow_sending_without_reply=True
        )
    entities = entities_of(part, bot)
    try:
        return await bot.send_message(
            chat_id=chat_id,
            text=part["text"],
            entities=entities or None,
            message_thread_id=message.context.get("thread_id"),
            reply_parameters=reply,
        )
    except BadRequest as error:
        if not entities or not is_formatting_error(error):
            raise
        log.warning("telegram rejected the formatting (%s); sending plain text", error)
        return await bot.send_message(
            chat_id=chat_id,
            text=part["text"],
            message_thread_id=message.context.get("thread_id"),
            reply_parameters=reply,
        )


async def edit(bot: Bot, chat_id: int | str, message_id: int, part: dict[str, Any]) -> None:
    """Show ``part`` in a message sent before: unchanged text is no error, rejected
    entities fall back to plain text; other errors are raised."""
    entities = entities_of(part, bot)
    try:
        await bot.edit_message_text(
            text=part["text"], chat_id=chat_id, message_id=message_id, entities=entities or None
        )
    except BadRequest as error:
        if is_not_modified(error):
            return
        if not entities or not is_formatting_error(error):
            raise
        log.warning("telegram rejected the formatting of an edit (%s); plain text", error)
        try:
            await bot.edit_message_text(text=part["text"], chat_id=chat_id, message_id=message_id)
        except BadRequest as again:
            if not is_not_modified(again):
                raise
