"""Slack on slack-bolt: events, interactivity and the slash command at ``POST /slack/events``,
or over Socket Mode when ``SLACK_APP_TOKEN`` (xapp-) is set.

Bolt's ``AsyncApp`` checks every HTTP request's signature and timestamp (401
when bad or stale); malformed headers or bodies are refused with a 4xx before
Bolt parses them. Listeners run before Slack gets its answer
(``process_before_response``), so a message is stored (``Dispatcher.submit``)
before it is acknowledged, well within Slack's 3 seconds; retries carry the same
``event_id`` and are recognised by the inbox. The answer follows.

What is answered: ``app_mention`` in a channel (in its thread: each thread is
its own conversation), a direct message (``message`` with ``channel_type: im``),
later messages in a thread the bot answered in (``channels.slack.thread_followups``,
no new mention needed), messages in assistant threads, and the slash command
(``channels.slack.command``, default ``/chatlane``: acknowledged at once, answered
through its ``response_url``). Files sent with a message (``file_share`` messages
too) become its attachments, the text their caption (``slack_media``); a message
with only a file is answered. The bot's own messages, other bots, edits and other
subtypes are ignored. While the bot works, 👀 sits on the message (in an assistant
thread, the thread's status says so instead); replies stream (``slack_stream``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web
from pydantic import field_validator

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
from bot.config import ChannelConfig, Config
from bot.dispatch import Outcome
from bot.formatting import FormatMode
from bot.inbound import InboundMessage, MediaPart
from bot.media import MediaFetch
from channels.slack_format import compose_markdown, parts
from channels.slack_media import SlackFiles, media_parts
from channels.slack_stream import SlackLive, Threads, retry_after

if TYPE_CHECKING:  # slack_sdk and slack_bolt are imported only once the channel is on
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.response import BoltResponse
    from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

PATH = "/slack/events"
DEFAULT_BASE = "https://slack.com/api/"
PART_LIMIT = 3000
TRAITS = ChannelTraits(
    limit=PART_LIMIT,
    tool_format=FormatMode.MARKDOWN,
    shows_reasoning=True,
    streams=True,
    stream_every=1.0,  # chat.appendStream / chat.update about once a second per message
)
KEPT_SUBTYPES = {"file_share"}  # a message with files: its files and its caption
MENTION = re.compile(r"^\s*<@[A-Z0-9]+>\s*")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"v0=[0-9a-fA-F]{1,128}")
DEFAULT_PROMPTS = ("Summarise this for me", "Help me write a message", "Explain a concept")


class SlackConfig(ChannelConfig):
    """``channels.slack``: the keys every channel has, and Slack's own."""

    command: str = "/chatlane"
    thread_followups: bool = True
    suggested_prompts: tuple[str, ...] = DEFAULT_PROMPTS

    @field_validator("command")
    @classmethod
    def _slash(cls, value: str) -> str:
        if not re.fullmatch(r"/[a-z0-9_\-]{1,31}", value):
            raise ValueError("a slash command: '/' then up to 31 lowercase letters, digits, - or _")
        return value


class SlackSink(Sink):
    name = "slack"
    traits = TRAITS

    def __init__(
        self,
        client: AsyncWebClient,
        live: AsyncWebClient,
        threads: Threads,
        files: SlackFiles | None = None,
    ) -> None:
        self.client = client
        self.live = live  # no rate-limit retries: a 429 slows the stream instead
        self.threads = threads
        self.files = files or SlackFiles(client)

    async def media_fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch:
        """A file's private URL with the bot token, only on Slack's file host."""
        return await self.files.fetch(message, part)

    def render(self, reply: Reply) -> list[Any]:
        found = parts(compose_markdown(reply.markdown, reply.reasoning), PART_LIMIT)
        if reply.live:
            if not found:
                shown = str(reply.live.get("shown") or "…")
                found = [{"markdown": shown, "text": shown}]
            found[0]["finish"] = reply.live
        return found

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        part = part if isinstance(part, dict) else {"text": str(part)}
        if part.get("finish"):
            await self._finish(message, part)
        elif message.context.get("response_url"):
            await self._respond(message, part)
        else:
            await self._post(message, part)
        await self._answered(message)
        if message.context.get("reacted"):
            await self._react(message, "reactions_remove")

    async def notify(self, message: InboundMessage, text: str) -> None:
        if message.context.get("response_url"):
            await self._respond(message, {"text": text}, visible=False)
            return
        await self.client.chat_postMessage(
            channel=message.context["channel"],
            text=text,
            thread_ts=message.context.get("thread_ts"),
        )

    async def typing(self, message: InboundMessage) -> None:
        if message.context.get("reacted") or not message.context.get("ts"):
            return
        message.context["reacted"] = True
        if message.context.get("assistant"):
            await self._quietly(
                self.client.assistant_threads_setStatus,
                channel_id=message.context["channel"],
                thread_ts=message.context["thread_ts"],
                status="is thinking…",
            )
        else:
            await self._react(message, "reactions_add")

    def open_stream(self, message: InboundMessage, options: StreamOptions) -> ReplyStream:
        if message.context.get("response_url"):  # a slash command: answered through its URL
            return super().open_stream(message, options)
        return SlackLive(self.live, message, options, on_post=self._answered)

    async def _post(self, message: InboundMessage, part: dict[str, Any]) -> None:
        from slack_sdk.errors import SlackApiError

        where = {
            "channel": message.context["channel"],
            "thread_ts": message.context.get("thread_ts"),
            "unfurl_links": False,
        }
        if part.get("markdown"):
            try:
                await self.client.chat_postMessage(markdown_text=part["markdown"], **where)
                return
            except SlackApiError as error:
                if retry_after(error) is not None:
                    raise
                log.info("slack refused markdown_text (%s); sending mrkdwn", _code(error))
        await self.client.chat_postMessage(text=part.get("text") or part.get("markdown"), **where)

    async def _finish(self, message: InboundMessage, part: dict[str, Any]) -> None:
        """Finish the message the stream left: stop the stream with the rest of the text,
        or replace its text; if Slack refuses both, post the text anew (never lost)."""
        from slack_sdk.errors import SlackApiError

        live, channel = part["finish"], message.context["channel"]
        markdown = part.get("markdown") or part.get("text") or "…"
        try:
            if live.get("mode") == "stream":
                shown = str(live.get("shown") or "")
                rest = markdown[len(shown) :] if shown and markdown.startswith(shown) else None
                if await self._stop(channel, live["ts"], rest):
                    return
            await self.client.chat_update(channel=channel, ts=live["ts"], markdown_text=markdown)
        except SlackApiError as error:
            if retry_after(error) is not None:
                raise
            log.warning("slack: could not finish the live reply (%s); posting it", _code(error))
            await self._quietly(self.client.chat_delete, channel=channel, ts=live["ts"])
            await self._post(message, {k: v for k, v in part.items() if k != "finish"})

    async def _stop(self, channel: str, ts: str, rest: str | None) -> bool:
        """Stop the stream; True when that finished it (``rest`` was appended)."""
        from slack_sdk.errors import SlackApiError

        try:
            await self.client.chat_stopStream(channel=channel, ts=ts, markdown_text=rest or None)
        except SlackApiError as error:
            if retry_after(error) is not None:
                raise
            log.info("slack: chat.stopStream refused (%s)", _code(error))  # stopped before
            return False
        return rest is not None

    async def _respond(
        self, message: InboundMessage, part: dict[str, Any], *, visible: bool = True
    ) -> None:
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        blocks = [{"type": "markdown", "text": part["markdown"]}] if part.get("markdown") else None
        hook = AsyncWebhookClient(message.context["response_url"], timeout=10)
        try:
            answer = await hook.send(
                text=part.get("text") or part.get("markdown") or "",
                blocks=blocks,
                response_type="in_channel" if visible else "ephemeral",
            )
            if answer.status_code == 200:
                return
            log.warning(
                "slack response_url answered %s; posting in the channel", answer.status_code
            )
        except (OSError, TimeoutError) as error:
            log.warning("slack response_url failed (%s); posting in the channel", error)
        await self._post(message, part)

    async def _answered(self, message: InboundMessage) -> None:
        thread = message.context.get("thread_ts")
        if thread and not message.context.get("dm"):
            await self.threads.add(message.context["channel"], thread)

    async def _react(self, message: InboundMessage, method: str) -> None:
        # A courtesy signal: it never holds up or fails a reply.
        await self._quietly(
            getattr(self.client, method),
            channel=message.context["channel"],
            timestamp=message.context["ts"],
            name="eyes",
        )

    @staticmethod
    async def _quietly(call: Any, **kwargs: Any) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            await call(**kwargs)
        except SlackApiError as error:
            log.debug("slack %s: %s", getattr(call, "__name__", "call"), _code(error))


def _shaped(payload: Any) -> bool:
    """Whether a request body has the shape Bolt's matchers read (their types, at least),
    and no lone surrogate (which nothing could store)."""
    if not isinstance(payload, dict):
        return False
    event, actions = payload.get("event", {}), payload.get("actions", [{}])
    checks = (
        isinstance(event, dict)
        and all(isinstance(event.get(k), str | None) for k in ("type", "subtype"))
        and all(isinstance(payload.get(k), str | None) for k in ("type", "command", "callback_id"))
        and all(isinstance(payload.get(k, {}), dict) for k in ("view", "message", "container"))
        and isinstance(actions, list)
        and actions != []
        and all(isinstance(action, dict) for action in actions)
    )
    if not checks:
        return False
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return False
    return True


def _code(error: Any) -> str:
    return str(error.response.get("error") or getattr(error.response, "status_code", "?"))


class SlackChannel:
    name: ClassVar[str] = "slack"
    traits: ClassVar[ChannelTraits] = TRAITS
    config_model: ClassVar[type[ChannelConfig]] = SlackConfig

    def __init__(
        self,
        host: ChannelHost,
        token: str,
        *,
        secret: str | None,
        app_token: str | None,
        env: Mapping[str, str],
    ) -> None:
        from slack_sdk.http_retry.builtin_async_handlers import (
            AsyncRateLimitErrorRetryHandler,
            AsyncServerErrorRetryHandler,
        )
        from slack_sdk.web.async_client import AsyncWebClient

        self.host = host
        found = host.config.channel("slack")
        self.settings = found if isinstance(found, SlackConfig) else SlackConfig()
        self.secret, self.app_token = secret, app_token
        base = env.get("SLACK_API_BASE_URL") or DEFAULT_BASE
        base = base if base.endswith("/") else base + "/"
        retries = [
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ]
        self.client = AsyncWebClient(token=token, base_url=base, retry_handlers=retries)
        self.live_client = AsyncWebClient(token=token, base_url=base)
        self.bolt_client = AsyncWebClient(base_url=base)
        storage = host.runtime.storage
        self.threads = Threads(storage)
        self.assistant_threads = Threads(storage, namespace="slack.assistant")
        files = SlackFiles(
            self.client,
            api_base=env.get("SLACK_API_BASE_URL"),
            max_bytes=host.config.agent.media.max_bytes,
        )
        self.sink = SlackSink(self.client, self.live_client, self.threads, files)
        self.bot_user: str | None = None
        self.bot_id: str | None = None
        self.app = self._build_app()
        self.socket: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> SlackChannel | None:
        token = env.get("SLACK_BOT_TOKEN")
        secret, app_token = env.get("SLACK_SIGNING_SECRET"), env.get("SLACK_APP_TOKEN")
        if not token or not (secret or app_token):
            return None
        return cls(host, token, secret=secret, app_token=app_token, env=env)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        if not env.get("SLACK_BOT_TOKEN"):
            return ChannelState("slack", False, "SLACK_BOT_TOKEN not set")
        token = mask(env["SLACK_BOT_TOKEN"])
        if env.get("SLACK_APP_TOKEN"):
            return ChannelState("slack", True, f"token {token}, Socket Mode (SLACK_APP_TOKEN)")
        if not env.get("SLACK_SIGNING_SECRET"):
            return ChannelState(
                "slack", False, "SLACK_SIGNING_SECRET not set (or SLACK_APP_TOKEN for Socket Mode)"
            )
        public = env.get("PUBLIC_URL")
        url = f"{public.rstrip('/')}{PATH}" if public else f"<PUBLIC_URL>{PATH}"
        return ChannelState("slack", True, f"token {token}, events at {url}")

    def add_routes(self, app: web.Application) -> None:
        if self.secret:
            app.router.add_post(PATH, self.events)

    async def start(self) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            identity = await self.client.auth_test()
            self.bot_user, self.bot_id = identity.get("user_id"), identity.get("bot_id")
        except SlackApiError as error:
            log.error("slack: auth.test failed (%s); check SLACK_BOT_TOKEN", _code(error))
        if self.app_token:
            await self._connect()

    async def _connect(self) -> None:
        from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
        from slack_sdk.errors import SlackApiError

        self.socket = AsyncSocketModeHandler(self.app, self.app_token, web_client=self.client)
        try:
            await self.socket.connect_async()
            log.info("slack: connected in Socket Mode")
        except SlackApiError as error:
            log.error(
                "slack: Socket Mode refused (%s); check SLACK_APP_TOKEN (an xapp- token with "
                "connections:write)",
                _code(error),
            )

    async def stop(self) -> None:
        if self.socket is not None:
            await self.socket.close_async()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in (self.client, self.live_client, self.bolt_client):
            session = getattr(client, "session", None)
            if session is not None:
                await session.close()

    # -- HTTP -------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        """Bolt's request URL: malformed requests are refused here, the rest Bolt verifies."""
        from slack_bolt.adapter.aiohttp import to_aiohttp_response
        from slack_bolt.request.async_request import AsyncBoltRequest
        from slack_bolt.request.internals import parse_body

        body = await request.read()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return web.Response(status=400, text="the body is not UTF-8")
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (TIMESTAMP.fullmatch(timestamp) and SIGNATURE.fullmatch(signature)):
            return web.Response(status=401, text="bad or stale signature")
        try:
            payload = parse_body(text, request.content_type)
            shaped = _shaped(payload)
            # Bolt reads the payload's ids as it builds the request: a shape it does not
            # expect is a malformed request, not a server error.
            bolt = AsyncBoltRequest(
                body=text, query=request.query_string, headers=dict(request.headers)
            )
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError):
            shaped = False
        if not shaped:
            return web.Response(status=400, text="expected a JSON object or a form")
        return await to_aiohttp_response(await self.app.async_dispatch(bolt))

    # -- Bolt listeners -----------------------------------------------------------

    def _build_app(self) -> AsyncApp:
        from slack_bolt.async_app import AsyncApp
        from slack_bolt.authorization import AuthorizeResult

        # Bolt gets a client without a token and this authorize: the identity comes from
        # start()'s auth.test, not from a call to Slack on every request.
        async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id,
                bot_token=self.client.token,
                bot_id=self.bot_id,
                bot_user_id=self.bot_user,
            )

        app = AsyncApp(
            client=self.bolt_client,
            authorize=authorize,
            signing_secret=self.secret or "",
            request_verification_enabled=bool(self.secret),
            process_before_response=True,  # stored before Slack gets its 200
            logger=logging.getLogger("channels.slack.bolt"),
        )
        app.event("app_mention")(self._on_message)
        app.event("message")(self._on_message)
        app.event("assistant_thread_started")(self._on_assistant_thread)
        app.command(self.settings.command)(self._on_command)
        app.event(re.compile(".*"))(self._on_other)  # subscribed but not answered: 200
        app.action(re.compile(".*"))(self._on_other)
        return app

    async def _on_message(self, body: dict[str, Any], ack: Any) -> BoltResponse | None:
        from slack_bolt.response import BoltResponse

        inbound = await self.inbound(body)
        if inbound is not None:
            outcome = await self.host.dispatcher.submit(inbound)
            if outcome is Outcome.DRAINING:  # Slack delivers it again, to a live process
                return BoltResponse(status=503, body="restarting; deliver again shortly")
            if outcome is Outcome.ACCEPTED:  # follow-ups while it answers count too
                await self.sink._answered(inbound)
        await ack()
        return None

    async def _on_command(self, command: dict[str, Any], ack: Any) -> None:
        text = str(command.get("text") or "").strip()
        channel, user = str(command.get("channel_id") or ""), str(command.get("user_id") or "")
        if not text or not channel or not user or not command.get("response_url"):
            await ack(f"Ask me something: `{self.settings.command} your question`")
            return
        message = InboundMessage(
            channel="slack",
            chat_id=channel,
            sender_id=user,
            text=text,
            message_id=f"command:{command.get('trigger_id') or command.get('response_url')}",
            group=not channel.startswith("D"),
            context={
                "channel": channel,
                "response_url": command["response_url"],
                "team": command.get("team_id"),
            },
        )
        outcome = await self.host.dispatcher.submit(message)
        if outcome is Outcome.DRAINING:  # slash commands are not delivered again
            await ack("I'm restarting; please try again in a moment.")
            return
        await ack(response_type="in_channel")  # the question shows in the channel

    async def _on_assistant_thread(self, event: dict[str, Any], ack: Any) -> None:
        await ack()
        thread = event.get("assistant_thread")
        if not isinstance(thread, dict) or not thread.get("channel_id"):
            return
        channel, ts = str(thread["channel_id"]), str(thread.get("thread_ts") or "")
        await self.assistant_threads.add(channel, ts)
        prompts = [{"title": p, "message": p} for p in self.settings.suggested_prompts]
        if prompts:
            task = asyncio.ensure_future(
                SlackSink._quietly(
                    self.client.assistant_threads_setSuggestedPrompts,
                    channel_id=channel,
                    thread_ts=ts,
                    prompts=prompts,
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _on_other(self, ack: Any) -> None:
        await ack()

    # -- events to messages ----------------------------------------------------------

    async def inbound(self, body: dict[str, Any]) -> InboundMessage | None:
        event = body.get("event")
        if not isinstance(event, dict) or not body.get("event_id"):
            return None
        user, subtype = event.get("user"), event.get("subtype")
        if not isinstance(user, str) or event.get("bot_id") or user == self.bot_user:
            return None
        if subtype and subtype not in KEPT_SUBTYPES:
            return None
        raw = str(event.get("text") or "")
        text = MENTION.sub("", raw).strip()
        channel = str(event.get("channel") or "")
        media = media_parts(event)
        if not (text or media) or not channel:
            return None
        where = await self._where(event, raw, channel)
        if where is None:
            return None
        thread, dm = where
        context: dict[str, Any] = {
            "channel": channel,
            "thread_ts": thread,
            "ts": event.get("ts"),
            "team": body.get("team_id"),
            "dm": dm,
        }
        if dm and thread and await self.assistant_threads.has(channel, thread):
            context["assistant"] = True
        return InboundMessage(
            channel="slack",
            chat_id=channel,
            sender_id=user,
            text=text,
            message_id=str(body["event_id"]),
            thread_id=thread,
            group=not dm,
            context=context,
            attachments=media,
        )

    async def _where(
        self, event: dict[str, Any], raw: str, channel: str
    ) -> tuple[str | None, bool] | None:
        """(thread to answer in, whether a DM), or None when the event is not for the bot."""
        kind, thread = event.get("type"), event.get("thread_ts")
        thread = str(thread) if thread else None
        if kind == "app_mention":
            return thread or str(event.get("ts")), False
        if kind != "message":
            return None
        if event.get("channel_type") == "im":
            return thread, True
        mentioned = self.bot_user is not None and f"<@{self.bot_user}>" in raw
        if (
            thread
            and thread != event.get("ts")
            and not mentioned  # app_mention brings that one
            and self.settings.thread_followups
            and await self.threads.has(channel, thread)
        ):
            return thread, False
        return None
