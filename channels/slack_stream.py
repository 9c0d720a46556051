"""Slack replies shown while they are written, and the threads the bot answers in.

``SlackLive`` streams the answer into the thread with ``chat.startStream`` /
``chat.appendStream`` (the text only grows: each update appends what is new).
Where streaming is not allowed (a direct message outside a thread, a workspace
without the feature, streamed reasoning to show above the answer) it posts the
first text with ``chat.postMessage`` and grows it with ``chat.update``. In an
assistant thread, what the bot is doing is shown with
``assistant.threads.setStatus``. The finished reply is not sent by the stream:
``SlackSink.render`` turns ``Reply.live`` into a part that stops the stream (or
edits the message) with the final text.

Updates go through a client without the rate-limit retry handler, so a 429
becomes ``RetryLater`` (fewer updates) instead of a wait inside the turn.

``Threads`` remembers, in the runtime's storage (``KeyValue``), the threads the
bot has answered in per channel (the newest ``KEEP`` of each), so follow-ups
there are answered without a mention, across restarts and processes.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from bot.channel import StreamOptions
from bot.inbound import InboundMessage
from bot.storage.base import JSON, KeyValue
from bot.streaming import LiveStream, RetryLater, Snapshot
from channels.slack_format import neutralise, reasoning_markdown

if TYPE_CHECKING:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

LIVE_LIMIT = 3000  # the live message stops growing here; the rest follows as new messages
CURSOR = " …"
KEEP = 1000
_OPEN_TOKEN = re.compile(r"<[^<>]*$")


def retry_after(error: SlackApiError) -> float | None:
    """Seconds Slack asks to wait (a 429), or None when the error is not a rate limit."""
    response = error.response
    if getattr(response, "status_code", None) != 429 and response.get("error") != "ratelimited":
        return None
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") or headers.get("retry-after") or "1"
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return 1.0


def live_text(text: str) -> str:
    """What may be shown of the answer so far: neutralised, an unfinished ``<…`` held back
    (it may become a mention), at most ``LIVE_LIMIT`` long."""
    return neutralise(_OPEN_TOKEN.sub("", text))[:LIVE_LIMIT]


class SlackLive(LiveStream):
    def __init__(
        self,
        client: AsyncWebClient,
        message: InboundMessage,
        options: StreamOptions,
        *,
        on_post: Any = None,
    ) -> None:
        super().__init__(options)
        self.client = client
        self.message = message
        self.context = message.context
        self.on_post = on_post
        self.ts: str | None = None
        self.mode = ""  # "stream" (chat.*Stream) or "edit" (postMessage + update)
        self.shown = ""  # the text on the platform (stream mode: what was appended)
        self.frozen = False  # resumed after a crash: the final part finishes it
        self._status_shown = ""
        self._recalled = False

    async def show(self, snapshot: Snapshot) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            await self._status(snapshot.status)
            await self._show(snapshot)
        except SlackApiError as error:
            wait = retry_after(error)
            if wait is not None:
                raise RetryLater(wait) from None
            raise

    async def handover(self) -> dict[str, Any] | None:
        if self.ts is None:
            return None
        return {"ts": self.ts, "mode": self.mode, "shown": "" if self.frozen else self.shown}

    async def _show(self, snapshot: Snapshot) -> None:
        if not self._recalled:
            self._recalled = True
            await self._recall()
        if self.frozen:
            return
        text = live_text(snapshot.text)
        if self.ts is None:
            if text or snapshot.reasoning:
                await self._start(text, snapshot.reasoning)
            return
        if self.mode == "stream":
            if text.startswith(self.shown) and len(text) > len(self.shown):
                delta = text[len(self.shown) :]
                await self.client.chat_appendStream(
                    channel=self.context["channel"], ts=self.ts, markdown_text=delta
                )
                self.shown = text
            return
        shown = self._edit_text(text, snapshot.reasoning)
        if shown != self.shown:
            await self.client.chat_update(
                channel=self.context["channel"], ts=self.ts, markdown_text=shown
            )
            self.shown = shown

    async def _start(self, text: str, reasoning: str) -> None:
        from slack_sdk.errors import SlackApiError

        channel, thread = self.context["channel"], self.context.get("thread_ts")
        if thread and text and not reasoning:
            try:
                user, team = self._recipient()
                started = await self.client.chat_startStream(
                    channel=channel,
                    thread_ts=thread,
                    markdown_text=text,
                    recipient_user_id=user,
                    recipient_team_id=team,
                )
                await self._started(started["ts"], "stream", text)
                return
            except SlackApiError as error:
                if retry_after(error) is not None:
                    raise
                log.info(
                    "slack: no streaming here (%s); editing a message", error.response.get("error")
                )
        shown = self._edit_text(text, reasoning)
        posted = await self.client.chat_postMessage(
            channel=channel, thread_ts=thread, markdown_text=shown, unfurl_links=False
        )
        await self._started(posted["ts"], "edit", shown)

    async def _started(self, ts: str, mode: str, shown: str) -> None:
        self.ts, self.mode, self.shown = ts, mode, shown
        if self.options.memory is not None:
            await self.options.memory.remember({"ts": ts, "mode": mode})
        if self.on_post is not None:
            await self.on_post(self.message)

    async def _recall(self) -> None:
        # A crashed attempt left a message: this attempt's text differs, so it is not
        # appended to; the final part finishes (or replaces) that message.
        if not self.options.resumed or self.options.memory is None:
            return
        found = await self.options.memory.recall()
        if found and isinstance(found.get("ts"), str):
            self.ts, self.mode, self.frozen = found["ts"], str(found.get("mode", "edit")), True

    async def _status(self, status: str) -> None:
        if not self.context.get("assistant") or status == self._status_shown:
            return
        self._status_shown = status
        await self.client.assistant_threads_setStatus(
            channel_id=self.context["channel"],
            thread_ts=self.context["thread_ts"],
            status=status or "is typing…",
        )

    def _recipient(self) -> tuple[str | None, str | None]:
        """(user, team) the stream is for: needed in channels, not in a DM."""
        if self.context.get("dm"):
            return None, None
        return self.message.sender_id, self.context.get("team") or None

    @staticmethod
    def _edit_text(text: str, reasoning: str) -> str:
        quote = reasoning_markdown(neutralise(reasoning))[:LIVE_LIMIT] if reasoning.strip() else ""
        return "\n\n".join(p for p in (quote, text + CURSOR if text else "") if p) or CURSOR


class Threads:
    """Threads the bot answered in, per channel: the newest ``keep`` of each, in storage."""

    def __init__(
        self, storage: KeyValue, *, namespace: str = "slack.threads", keep: int = KEEP
    ) -> None:
        self.storage = storage
        self.namespace = namespace
        self.keep = keep
        self._known: set[tuple[str, str]] = set()

    async def add(self, channel: str, thread_ts: str) -> None:
        if (channel, thread_ts) in self._known:
            return
        now = time.time()

        def update(old: JSON | None) -> JSON:
            seen = dict(old) if isinstance(old, dict) else {}
            seen[thread_ts] = now
            newest = sorted(seen.items(), key=lambda kv: float(kv[1] or 0), reverse=True)
            return dict(newest[: self.keep])

        await self.storage.kv_update(self.namespace, channel, update)
        if len(self._known) > 4 * self.keep:
            self._known.clear()
        self._known.add((channel, thread_ts))

    async def has(self, channel: str, thread_ts: str) -> bool:
        if (channel, thread_ts) in self._known:
            return True
        found = await self.storage.kv_get(self.namespace, channel)
        return isinstance(found, dict) and thread_ts in found
