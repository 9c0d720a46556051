"""Slack over slack-sdk: Events API at ``POST /slack/events``, replies by ``chat.postMessage``.

Every request's signature and timestamp (5 minutes) are checked before its
body is read as JSON; a bad one gets 401. ``app_mention`` in a channel is
answered in its thread (each thread is its own conversation); a direct
message (``message`` with ``channel_type: im``) in the DM. The bot's own
messages, edits and other subtypes are ignored, and Slack's retries
(``X-Slack-Retry-Num``) are recognised by ``event_id``. Events are stored
and acknowledged at once, within Slack's 3 seconds; the answer follows.
While the bot works, an 👀 reaction sits on the message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from bot.channel import ChannelHost, ChannelState, ChannelTraits, Reply, Sink, mask
from bot.config import Config
from bot.formatting import FormatMode, split_message
from bot.inbound import InboundMessage
from channels.common import webhook_answer
from channels.slack_format import SLACK

if TYPE_CHECKING:  # slack_sdk (about 3 MB) is imported only once the channel is on
    from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

PATH = "/slack/events"
DEFAULT_BASE = "https://slack.com/api/"
PART_LIMIT = 3000  # fits a section block, well under Slack's 40,000-character cut
TRAITS = ChannelTraits(limit=PART_LIMIT, tool_format=FormatMode.MARKDOWN, shows_reasoning=True)
IGNORED_SUBTYPES = {
    "bot_message",
    "message_changed",
    "message_deleted",
    "channel_join",
    "channel_leave",
    "message_replied",
    "thread_broadcast",
}
MENTION = re.compile(r"^\s*<@[A-Z0-9]+>\s*")


class SlackSink(Sink):
    name = "slack"
    traits = TRAITS

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    def render(self, reply: Reply) -> list[Any]:
        return list(split_message(SLACK.compose(reply.markdown, reply.reasoning), PART_LIMIT))

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        await self.client.chat_postMessage(
            channel=message.context["channel"],
            text=str(part),
            thread_ts=message.context.get("thread_ts"),
            unfurl_links=False,
        )
        await self._react(message, "reactions_remove")

    async def notify(self, message: InboundMessage, text: str) -> None:
        await self.client.chat_postMessage(
            channel=message.context["channel"],
            text=text,
            thread_ts=message.context.get("thread_ts"),
        )

    async def typing(self, message: InboundMessage) -> None:
        if not message.context.get("reacted"):
            message.context["reacted"] = True
            await self._react(message, "reactions_add")

    async def _react(self, message: InboundMessage, method: str) -> None:
        # A courtesy signal: it never holds up or fails a reply.
        from slack_sdk.errors import SlackApiError

        try:
            await getattr(self.client, method)(
                channel=message.context["channel"], timestamp=message.context["ts"], name="eyes"
            )
        except SlackApiError as error:
            log.debug("slack %s: %s", method, error.response.get("error"))


class SlackChannel:
    name: ClassVar[str] = "slack"
    traits: ClassVar[ChannelTraits] = TRAITS

    def __init__(self, host: ChannelHost, token: str, secret: str, env: Mapping[str, str]) -> None:
        from slack_sdk.http_retry.builtin_async_handlers import (
            AsyncRateLimitErrorRetryHandler,
            AsyncServerErrorRetryHandler,
        )
        from slack_sdk.signature import SignatureVerifier
        from slack_sdk.web.async_client import AsyncWebClient

        self.host = host
        self.verifier = SignatureVerifier(secret)
        base = env.get("SLACK_API_BASE_URL") or DEFAULT_BASE
        self.client = AsyncWebClient(
            token=token,
            base_url=base if base.endswith("/") else base + "/",
            retry_handlers=[
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
                AsyncServerErrorRetryHandler(max_retry_count=2),
            ],
        )
        self.sink = SlackSink(self.client)
        self.bot_user: str | None = None

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> SlackChannel | None:
        token, secret = env.get("SLACK_BOT_TOKEN"), env.get("SLACK_SIGNING_SECRET")
        if not (token and secret):
            return None
        return cls(host, token, secret, env)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        missing = [n for n in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET") if not env.get(n)]
        if missing:
            return ChannelState("slack", False, f"{', '.join(missing)} not set")
        public = env.get("PUBLIC_URL")
        url = f"{public.rstrip('/')}{PATH}" if public else f"<PUBLIC_URL>{PATH}"
        return ChannelState("slack", True, f"token {mask(env['SLACK_BOT_TOKEN'])}, events at {url}")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.events)

    async def start(self) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            identity = await self.client.auth_test()
            self.bot_user = identity.get("user_id")
        except SlackApiError as error:
            log.error(
                "slack: auth.test failed (%s); check SLACK_BOT_TOKEN", error.response.get("error")
            )

    async def stop(self) -> None:
        session = getattr(self.client, "session", None)
        if session is not None:
            await session.close()

    async def events(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        if not self.verifier.is_valid(body, timestamp, signature):
            return web.Response(status=401, text="bad or stale signature")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return web.Response(status=400, text="expected JSON")
        if not isinstance(payload, dict):
            return web.Response(status=400, text="expected a JSON object")
        if payload.get("type") == "url_verification":
            return web.json_response({"challenge": payload.get("challenge", "")})
        if payload.get("type") != "event_callback" or not isinstance(payload.get("event"), dict):
            return web.Response(status=200, text="ignored")
        inbound = self.inbound(payload)
        if inbound is None:
            return web.Response(status=200, text="ignored")
        return webhook_answer(await self.host.dispatcher.submit(inbound))

    def inbound(self, payload: dict[str, Any]) -> InboundMessage | None:
        event = payload["event"]
        kind = event.get("type")
        user = event.get("user")
        if not user or event.get("bot_id") or user == self.bot_user:
            return None
        if event.get("subtype") in IGNORED_SUBTYPES or event.get("subtype"):
            return None
        text = MENTION.sub("", str(event.get("text", ""))).strip()
        channel = str(event.get("channel", ""))
        if not text or not channel or not payload.get("event_id"):
            return None
        if kind == "app_mention":
            thread = str(event.get("thread_ts") or event.get("ts"))
        elif kind == "message" and event.get("channel_type") == "im":
            thread = event.get("thread_ts")
        else:
            return None
        return InboundMessage(
            channel="slack",
            chat_id=channel,
            sender_id=str(user),
            text=text,
            message_id=str(payload["event_id"]),
            thread_id=str(thread) if thread else None,
            context={"channel": channel, "thread_ts": thread, "ts": event.get("ts")},
        )
