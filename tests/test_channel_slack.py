"""Slack end to end: slack-bolt and slack-sdk against a fake Slack (Web API, response_url,
Socket Mode websocket), from a signed request or an envelope to what a user sees."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.channel import Reply as FinalReply
from bot.channel import StreamOptions
from bot.config import ConfigError, load_config
from bot.events import AgentEvent
from bot.inbound import InboundMessage, MediaPart
from bot.media import SUPPORTED, MediaError
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from bot.storage import MemoryStorage
from bot.streaming import LiveMemory
from channels.slack import SlackChannel, SlackConfig, SlackSink
from channels.slack_media import SlackFiles, media_parts, origin
from channels.slack_stream import SlackLive, Threads
from tests.fakes import slack as fakes
from tests.fakes.models import FakeAnthropic, FakeOpenAI, Reply
from tests.fakes.slack import (
    APP_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    TOKEN,
    FakeSlack,
    command,
    event,
    sign,
    signed,
    signed_form,
)
from tests.helpers import wait_for
from tests.test_media import pdf

Client = TestClient[Any, Any]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def client_for(
    fake: FakeSlack,
    cleanup: contextlib.AsyncExitStack,
    data: dict[str, Any] | None = None,
    **env: str,
) -> Client:
    base = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    environment = {**base, "SLACK_API_BASE_URL": fake.base_url, **env}
    environment = {k: v for k, v in environment.items() if v}
    runtime = AgentRuntime(config=load_config(data=data or {}), demo_when_unconfigured=True)
    client = TestClient(TestServer(create_app(runtime, env=environment)))
    await client.start_server()
    cleanup.push_async_callback(client.close)
    return client


async def send(client: Client, payload: dict[str, Any], **kwargs: Any) -> Any:
    body, headers = signed(payload, **kwargs)
    return await client.post("/slack/events", data=body, headers=headers)


async def pending(client: Client) -> list[Any]:
    return list(await client.app[HOST_KEY].runtime.storage.inbox_pending())


async def settle(client: Client) -> None:
    await client.app[HOST_KEY].dispatcher.drain(5)


async def test_url_verification(slack: FakeSlack, cleanup: contextlib.AsyncExitStack) -> None:
    client = await client_for(slack, cleanup)
    response = await send(client, {"type": "url_verification", "challenge": "abc123"})
    assert response.status == 200 and (await response.json())["challenge"] == "abc123"


async def test_mention_is_streamed_in_its_thread_and_shown_once(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup)
    response = await send(client, event("Ev1", "app_mention", f"<@{BOT_USER}> hi there"))
    assert response.status == 200
    await slack.wait_until(lambda: "chat.stopStream" in slack.methods(), "the stream stopped")
    await settle(client)
    started = next(p for m, p in slack.calls if m == "chat.startStream")
    assert started["thread_ts"] == "1700000000.000100" and started["recipient_user_id"] == "U123"
    assert [t for t in slack.visible() if "You said: hi there" in t] == slack.visible()
    assert len(slack.visible()) == 1 and not slack.posted()  # streamed, not posted again
    assert "reactions.add" in slack.methods()


async def test_direct_message_is_answered_in_the_dm(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup)
    await send(client, event("Ev2", "message", "hello", channel="D9", channel_type="im"))
    posted = await slack.wait_for(1)
    await slack.wait_until(
        lambda: slack.visible()[0].endswith("You said: hello"), "the final text in the DM"
    )
    await settle(client)
    assert posted[0]["channel"] == "D9" and not posted[0].get("thread_ts")
    assert "chat.startStream" not in slack.methods()  # no thread: no streaming API
    assert len(slack.visible()) == 1 and slack.visible()[0].endswith("You said: hello")


async def test_streaming_off_posts_the_reply_once_in_markdown(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    data = {"channels": {"slack": {"streaming": False}}}
    client = await client_for(slack, cleanup, data)
    await send(
        client, event("Ev2b", "message", "これは**重要**です", channel="D9", channel_type="im")
    )
    posted = await slack.wait_for(1)
    await settle(client)
    assert "これは**重要**です" in posted[0]["markdown_text"]  # Markdown, not mrkdwn
    assert "chat.update" not in slack.methods() and "text" not in posted[0]


@pytest.mark.parametrize(
    "payload",
    [
        event("Ev3", "message", "mine", channel_type="im", bot_id="B1"),
        event("Ev4", "message", "edit", channel_type="im", subtype="message_changed"),
        event("Ev5", "message", "channel chatter", channel_type="channel"),
        event("Ev5b", "message", "not our thread", channel_type="channel", thread_ts="1.0"),
        event("Ev6", "app_mention", "from myself", user=BOT_USER),
        event("Ev6b", "reaction_added", "", reaction="eyes"),
    ],
)
async def test_ignored_events(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, payload: dict[str, Any]
) -> None:
    client = await client_for(slack, cleanup)
    assert (await send(client, payload)).status == 200
    assert await pending(client) == []
    assert slack.posted() == []


@pytest.mark.parametrize("case", ["forged", "stale", "missing"])
async def test_bad_signatures_are_401(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, case: str
) -> None:
    client = await client_for(slack, cleanup)
    payload = event("Ev7", "app_mention", "hi")
    if case == "missing":
        response = await client.post("/slack/events", json=payload)
    elif case == "forged":
        response = await send(client, payload, secret="wrong-secret")
    else:
        response = await send(client, payload, age=6 * 60)
    assert response.status == 401
    assert await pending(client) == []


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{}", {"X-Slack-Request-Timestamp": "soon"}, 401),
        (b"{}", {"X-Slack-Request-Timestamp": "9" * 5000}, 401),
        (b"{}", {"X-Slack-Signature": "v0=caf\u00e9"}, 401),
        (b"{\xff\xfe}", {}, 400),
        (b"not json", {}, 400),
        (b"[1, 2]", {}, 400),
        (b'{"type": "event_callback", "event": 5}', {}, 400),
        (b"[" * 100_000, {}, 400),
        (b'{"type": "event_callback", "event_id": "E1", "event": {"text": "\\ud800"}}', {}, 400),
        (b'{"type": "event_callback", "event": {"type": "message", "subtype": {}}}', {}, 400),
        (b'{"type": "block_actions", "actions": 5}', {}, 400),
        (b'{"type": {"nested": true}}', {}, 400),
    ],
)
async def test_malformed_requests_are_4xx(
    slack: FakeSlack,
    cleanup: contextlib.AsyncExitStack,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    client = await client_for(slack, cleanup)
    _, good = sign(body, "application/json")
    sent = {**good, **{k: v.encode("utf-8").decode("latin-1") for k, v in headers.items()}}
    response = await client.post("/slack/events", data=body, headers=sent)
    assert response.status == status
    assert await pending(client) == []


async def test_retries_are_deduplicated(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup, {"channels": {"slack": {"streaming": False}}})
    payload = event("Ev8", "app_mention", "once please")
    for retry in ("", "1", "2"):
        body, headers = signed(payload)
        extra = {"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"}
        response = await client.post(
            "/slack/events", data=body, headers={**headers, **(extra if retry else {})}
        )
        assert response.status == 200
    await slack.wait_for(1)
    await settle(client)
    assert sum("once please" in p["markdown_text"] for p in slack.posted()) == 1


async def test_draining_answers_503_so_slack_delivers_again(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup)
    client.app[HOST_KEY].dispatcher.draining = True
    response = await send(client, event("Ev8b", "app_mention", "later"))
    assert response.status == 503
    assert await pending(client) == []


async def test_slash_command_is_acknowledged_then_answered_via_response_url(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup)
    body, headers = signed_form(command(slack, "say hello"))
    response = await client.post("/slack/events", data=body, headers=headers)
    assert response.status == 200
    assert (await response.json())["response_type"] == "in_channel"  # the question is shown
    assert len(await pending(client)) <= 1  # stored before the ack
    await slack.wait_until(lambda: slack.hooks, "the answer at response_url")
    await settle(client)
    assert slack.hooks[0]["response_type"] == "in_channel"
    assert "You said: say hello" in slack.hooks[0]["blocks"][0]["text"]
    assert slack.posted() == []
    empty, headers = signed_form(command(slack, " ", trigger="T-2"))
    usage = await client.post("/slack/events", data=empty, headers=headers)
    assert "/chatlane your question" in await usage.text()
    assert len(slack.hooks) == 1


async def test_a_thread_the_bot_answered_gets_follow_ups_without_a_mention(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup, {"channels": {"slack": {"streaming": False}}})
    root = "1700000000.000100"
    await send(client, event("Ev10", "app_mention", f"<@{BOT_USER}> first", ts=root))
    await slack.wait_for(1)
    follow = event("Ev11", "message", "and then?", ts="1700000001.0", thread_ts=root)
    follow["event"]["channel_type"] = "channel"
    await send(client, follow)
    posted = await slack.wait_for(2)
    assert posted[1]["thread_ts"] == root and "and then?" in posted[1]["markdown_text"]
    mentioned = event("Ev12", "message", f"<@{BOT_USER}> again", ts="1700000002.0", thread_ts=root)
    await send(client, mentioned)  # its app_mention brings it: not answered twice
    await settle(client)
    assert len(slack.posted()) == 2


async def test_thread_follow_ups_can_be_turned_off(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    data = {"channels": {"slack": {"streaming": False, "thread_followups": False}}}
    client = await client_for(slack, cleanup, data)
    root = "1700000000.000100"
    await send(client, event("Ev13", "app_mention", f"<@{BOT_USER}> first", ts=root))
    await slack.wait_for(1)
    await send(client, event("Ev14", "message", "more", ts="1700000001.0", thread_ts=root))
    await settle(client)
    assert len(slack.posted()) == 1


async def test_threads_are_remembered_in_storage_within_a_bound() -> None:
    storage = MemoryStorage()
    await storage.open()
    threads = Threads(storage, keep=2)
    for ts in ("1.0", "2.0", "3.0"):
        await threads.add("C1", ts)
    fresh = Threads(storage, keep=2)  # another process, or after a restart
    assert [await fresh.has("C1", ts) for ts in ("1.0", "2.0", "3.0")] == [False, True, True]
    await storage.close()


async def test_model_output_cannot_page_the_channel(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-slack-0000")
        model.script(Reply(text="<!channel> <!here|here> <!everyone> <!subteam^S1|@ops> @here hi"))
        data = {"agent": {"model": "anthropic/claude-sonnet-4-6"}}
        client = await client_for(slack, cleanup, data)
        await send(client, event("Ev15", "message", "page", channel="D9", channel_type="im"))
        await slack.wait_until(lambda: slack.visible(), "the answer")
        await settle(client)
        sent = " ".join(str(p) for _, p in slack.calls)
        for token in ("<!channel>", "<!here", "<!everyone>", "<!subteam", " @here"):
            assert token not in sent
        assert "@\u200bchannel" in slack.visible()[0] and "@\u200bops" in slack.visible()[0]


async def test_long_markdown_reply_in_parts_with_an_mrkdwn_fallback(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-slack-0000")
        long = "## Findings\n\n" + "\n\n".join(
            f"**Item {i}** costs <5 & more, see [docs](https://x.io/{i})." for i in range(150)
        )
        long += "\n\n```\n" + "code & <tags>\n" * 200 + "```"
        model.script(Reply(text=long, chunks=30))
        slack.refuse_markdown = True  # a workspace that refuses markdown_text: mrkdwn instead
        data = {
            "agent": {"model": "anthropic/claude-sonnet-4-6"},
            "channels": {"slack": {"streaming": False}},
        }
        client = await client_for(slack, cleanup, data)
        await send(client, event("Ev9", "app_mention", "report"))
        await slack.wait_until(lambda: len(slack.visible()) >= 3, "the parts in mrkdwn")
        await settle(client)
        texts = [p["text"] for p in slack.posted() if "text" in p]
        assert all(len(p["markdown_text"]) <= 3000 for p in slack.posted() if "markdown_text" in p)
        joined = "\n".join(slack.visible())
        assert "*Findings*" in joined and "*Item 3*" in joined and "**" not in joined
        assert "&lt;5 &amp; more" in joined and "<https://x.io/7|docs>" in joined
        for text in texts:
            assert text.count("```") % 2 == 0


# -- streaming, driven event by event ---------------------------------------------------


def dm_thread(thread: str | None = "1700000000.000100", **context: Any) -> InboundMessage:
    where = {"channel": "C1", "thread_ts": thread, "ts": thread, "team": "T1", **context}
    return InboundMessage("slack", "C1", "U123", "hi", "Ev20", thread_id=thread, context=where)


@pytest.fixture
async def clients(slack: FakeSlack) -> AsyncIterator[tuple[Any, Any]]:
    from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
    from slack_sdk.web.async_client import AsyncWebClient

    retrying = AsyncWebClient(
        token=TOKEN,
        base_url=slack.base_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )
    live = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    yield retrying, live


async def stream_reply(
    slack: FakeSlack,
    clients: tuple[Any, Any],
    message: InboundMessage,
    pieces: list[str],
    *,
    options: StreamOptions | None = None,
) -> SlackSink:
    """Feed ``pieces`` one by one, each shown before the next; then finish as the
    dispatcher does: close, render with ``Reply.live``, send the parts."""
    storage = MemoryStorage()
    await storage.open()
    sink = SlackSink(*clients, Threads(storage))
    options = options or StreamOptions(live=True, every=0.01)
    stream = sink.open_stream(message, options)
    assert isinstance(stream, SlackLive)
    text = ""
    for piece in pieces:
        text += piece
        await stream.feed(AgentEvent("text", {"delta": piece}))
        sofar = text.strip()
        await wait_for(
            lambda sofar=sofar: stream.shown.rstrip(" …").endswith(sofar), f"{sofar!r} shown"
        )
    live = await stream.close()
    for part in sink.render(FinalReply(text=text, live=live)):
        await sink.send_part(message, part)
    await storage.close()
    return sink


async def test_streaming_api_start_append_stop(slack: FakeSlack, clients: Any) -> None:
    await stream_reply(slack, clients, dm_thread(), ["Hello", " there,", " friend."])
    assert [m for m in slack.methods() if m.startswith("chat.")] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.appendStream",
        "chat.stopStream",
    ]
    appended = [p["markdown_text"] for m, p in slack.calls if m == "chat.appendStream"]
    assert appended == [" there,", " friend."]
    assert slack.visible() == ["Hello there, friend."]


async def test_streaming_refused_falls_back_to_post_and_update(
    slack: FakeSlack, clients: Any
) -> None:
    slack.refuse["chat.startStream"] = "method_not_supported_for_channel_type"
    await stream_reply(slack, clients, dm_thread(), ["Hello", " there."])
    assert [m for m in slack.methods() if m.startswith("chat.")] == [
        "chat.startStream",
        "chat.postMessage",
        "chat.update",
        "chat.update",
    ]
    assert slack.visible() == ["Hello there."]


async def test_a_429_mid_stream_slows_it_and_loses_nothing(slack: FakeSlack, clients: Any) -> None:
    slack.rate_limits["chat.appendStream"] = 1
    fakes_retry = fakes.RETRY_AFTER
    try:
        fakes.RETRY_AFTER = "0.2"
        started = asyncio.get_running_loop().time()
        await stream_reply(slack, clients, dm_thread(), ["One.", " Two.", " Three."])
        assert asyncio.get_running_loop().time() - started >= 0.2  # waited as told
    finally:
        fakes.RETRY_AFTER = fakes_retry
    assert "chat.appendStream!429" in slack.methods()
    assert slack.visible() == ["One. Two. Three."]


async def test_a_429_on_the_final_text_is_waited_out(slack: FakeSlack, clients: Any) -> None:
    slack.rate_limits["chat.stopStream"] = 1
    fakes.RETRY_AFTER, before = "0", fakes.RETRY_AFTER
    try:
        await stream_reply(slack, clients, dm_thread(), ["Final", " words."])
    finally:
        fakes.RETRY_AFTER = before
    assert slack.methods().count("chat.stopStream") == 1
    assert slack.visible() == ["Final words."]


async def test_a_live_message_slack_will_not_finish_is_replaced_not_lost(
    slack: FakeSlack, clients: Any
) -> None:
    slack.refuse["chat.stopStream"] = "message_not_in_streaming_state"
    slack.refuse["chat.update"] = "cant_update_message"
    await stream_reply(slack, clients, dm_thread(), ["Kept", " whole."])
    assert "chat.delete" in slack.methods()
    assert slack.visible() == ["Kept whole."]


async def test_an_expired_response_url_answers_in_the_channel(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup)
    fields = {**command(slack, "say hello"), "response_url": slack.response_url("x") + "/gone"}
    body, headers = signed_form(fields)
    assert (await client.post("/slack/events", data=body, headers=headers)).status == 200
    posted = await slack.wait_for(1)
    await settle(client)
    assert posted[0]["channel"] == "C1" and "You said: say hello" in posted[0]["markdown_text"]
    assert slack.hooks == []


async def test_a_stream_cut_by_a_crash_is_finished_by_the_next_attempt(
    slack: FakeSlack, clients: Any
) -> None:
    storage = MemoryStorage()
    await storage.open()
    memory = LiveMemory(storage, "slack:Ev20")
    first = SlackLive(clients[1], dm_thread(), StreamOptions(live=True, every=0.01, memory=memory))
    await first.feed(AgentEvent("text", {"delta": "Half an ans"}))
    await wait_for(lambda: slack.visible(), "the first attempt's text")
    await first.close()  # the process dies here: no final part was sent
    options = StreamOptions(live=True, every=0.01, memory=memory, resumed=True)
    sink = SlackSink(*clients, Threads(storage))
    second = sink.open_stream(dm_thread(), options)
    await second.feed(AgentEvent("text", {"delta": "A different, whole answer."}))
    await asyncio.sleep(0.05)  # an update would have run by now: it must not append
    live = await second.close()
    for part in sink.render(FinalReply(text="A different, whole answer.", live=live)):
        await sink.send_part(dm_thread(), part)
    assert slack.visible() == ["A different, whole answer."]
    assert slack.methods().count("chat.startStream") == 1
    await storage.close()


async def test_assistant_thread_status_and_suggested_prompts(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup)
    thread = {"user_id": "U123", "channel_id": "D9", "thread_ts": "1700000005.0"}
    started = event("Ev30", "assistant_thread_started", "", assistant_thread=thread)
    assert (await send(client, started)).status == 200
    await slack.wait_until(
        lambda: "assistant.threads.setSuggestedPrompts" in slack.methods(), "suggested prompts"
    )
    ask = event(
        "Ev31", "message", "help", channel="D9", channel_type="im", thread_ts="1700000005.0"
    )
    ask["event"]["ts"] = "1700000006.0"
    await send(client, ask)
    await slack.wait_until(lambda: "chat.stopStream" in slack.methods(), "the answer")
    await settle(client)
    status = [p for m, p in slack.calls if m == "assistant.threads.setStatus"]
    assert status and status[0]["thread_ts"] == "1700000005.0"
    assert "reactions.add" not in slack.methods()
    assert slack.visible()[0].endswith("You said: help")


# -- Socket Mode --------------------------------------------------------------------------


async def test_socket_mode_events_and_commands_without_a_public_url(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup, SLACK_SIGNING_SECRET="", SLACK_APP_TOKEN=APP_TOKEN)
    assert (await client.post("/slack/events", data=b"{}")).status in (404, 405)  # no HTTP route
    dm = event("Ev40", "message", "over the socket", channel="D9", channel_type="im")
    ack = await slack.push("events_api", dm, "env-1")
    assert ack == {"envelope_id": "env-1"}
    await slack.wait_until(lambda: slack.visible(), "the DM answered")
    ack = await slack.push("slash_commands", command(slack, "socket question"), "env-2")
    assert ack["payload"]["response_type"] == "in_channel"
    await slack.wait_until(lambda: slack.hooks, "the command answered")
    await settle(client)
    assert "You said: socket question" in slack.hooks[0]["blocks"][0]["text"]
    assert slack.visible()[0].endswith("You said: over the socket")


# -- config and state ---------------------------------------------------------------------


def test_config_keys_and_their_defaults() -> None:
    settings = load_config(data={"channels": {"slack": {"command": "/ask-lane"}}}).channel("slack")
    assert isinstance(settings, SlackConfig)
    assert settings.command == "/ask-lane" and settings.thread_followups is True
    with pytest.raises(ConfigError) as bad:
        load_config(data={"channels": {"slack": {"command": "chatlane"}}})
    assert "channels.slack.command" in str(bad.value)


def test_describe() -> None:
    config = load_config()
    state = SlackChannel.describe(
        config, {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    )
    assert state.enabled and TOKEN not in state.detail and "/slack/events" in state.detail
    socket = SlackChannel.describe(config, {"SLACK_BOT_TOKEN": TOKEN, "SLACK_APP_TOKEN": APP_TOKEN})
    assert socket.enabled and "Socket Mode" in socket.detail and APP_TOKEN not in socket.detail
    assert not SlackChannel.describe(config, {}).enabled
    assert not SlackChannel.describe(config, {"SLACK_BOT_TOKEN": TOKEN}).enabled


# -- files: photos, audio clips, snippets, PDFs ------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x01" * 40
WEBM = b"\x1a\x45\xdf\xa3" + b"\x00" * 200  # what Slack records an audio clip as
MB = 1024 * 1024
CLAUDE = {
    "agent": {"model": "anthropic/claude-sonnet-4-6", "media": {"max_bytes": MB}},
    "channels": {"slack": {"streaming": False}},
}


def shared(event_id: str, text: str, *files: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A DM with files, as Slack sends it (subtype file_share)."""
    where = {"channel": "D9", "channel_type": "im", **fields}
    return event(event_id, "message", text, subtype="file_share", files=list(files), **where)


def shown(posted: dict[str, Any]) -> str:
    return str(posted.get("markdown_text") or posted.get("text"))


def download_path(file: dict[str, Any]) -> str:
    return urlsplit(file["url_private_download"]).path


async def test_a_photo_with_a_caption_reaches_the_model_as_an_image(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    photo = slack.add_file("cat.png", PNG, "image/png")
    client = await client_for(slack, cleanup, CLAUDE)
    assert (await send(client, shared("EvF1", "what is in this picture?", photo))).status == 200
    posted = await slack.wait_for(1, seconds=30)  # the first turn imports the anthropic SDK
    await settle(client)
    assert posted[0]["channel"] == "D9"
    assert posted[0]["markdown_text"] == "echo: what is in this picture?"
    blocks = anthropic.requests[0].json["messages"][-1]["content"]
    image = next(b for b in blocks if b["type"] == "image")
    assert image["source"]["media_type"] == "image/png"
    assert base64.b64decode(image["source"]["data"]) == PNG
    assert slack.file_hits == [(download_path(photo), f"Bearer {TOKEN}")]  # once, with the token
    assert [p["file"] for m, p in slack.calls if m == "files.info"] == [photo["id"]]


async def test_an_audio_clip_over_socket_mode_is_transcribed_and_answered(
    slack: FakeSlack,
    cleanup: contextlib.AsyncExitStack,
    models: tuple[FakeAnthropic, FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anthropic, openai = models
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-slack-1111")
    clip = slack.add_file("audio_message.webm", WEBM, "audio/webm", subtype="slack_audio")
    env = {"SLACK_SIGNING_SECRET": "", "SLACK_APP_TOKEN": APP_TOKEN}
    client = await client_for(slack, cleanup, CLAUDE, **env)
    mention = event("EvF2", "app_mention", f"<@{BOT_USER}>", files=[clip])  # nothing but the clip
    await slack.push("events_api", mention, "env-f2")
    posted = await slack.wait_for(1, seconds=30)
    await settle(client)
    said = "[Voice note, transcribed]\nhello from a voice note"
    assert anthropic.requests[0].last_user_text == said
    assert posted[0]["markdown_text"] == "echo: " + said
    assert posted[0]["thread_ts"] == "1700000000.000100"  # in the mention's thread
    [upload] = openai.transcriptions
    assert upload["filename"] == "voice.webm" and upload["size"] == len(WEBM)


async def test_an_oversized_file_gets_the_one_line_reply_without_a_download(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    big = slack.add_file("huge.jpg", b"\xff\xd8\xff" + b"\x00" * 64, "image/jpeg", size=25 * MB)
    liar = slack.add_file("small.png", PNG + b"\x00" * (2 * MB), "image/png", size=len(PNG))
    client = await client_for(slack, cleanup, CLAUDE)
    await send(client, shared("EvF3", "", big))
    await slack.wait_for(1)
    assert slack.file_hits == [] and "files.info" not in slack.methods()
    await send(client, shared("EvF4", "", liar))  # says it is small: cut while it arrives
    posted = await slack.wait_for(2)
    await settle(client)
    assert [shown(p) for p in posted] == ["That file is too big for me: the limit is 1 MB."] * 2
    assert slack.file_hits == [(download_path(liar), f"Bearer {TOKEN}")]
    assert anthropic.requests == []


async def test_a_url_in_the_text_is_never_fetched(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    bait = slack.add_file("bait.png", PNG, "image/png")  # served to the token, named only in text
    client = await client_for(slack, cleanup, CLAUDE)
    text = f"look at <{bait['url_private_download']}> please"
    await send(client, event("EvF5", "message", text, channel="D9", channel_type="im"))
    await slack.wait_for(1, seconds=30)
    await settle(client)
    assert slack.file_hits == [] and "files.info" not in slack.methods()
    assert anthropic.requests[0].json["messages"][-1]["content"] == [{"type": "text", "text": text}]


async def test_the_token_goes_to_no_host_but_slacks(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    seen: list[str | None] = []

    async def stranger(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{any:.*}", stranger)
    other = TestServer(app, host="127.0.0.1")
    await other.start_server()
    cleanup.push_async_callback(other.close)
    off = str(other.make_url("/files-pri/T1-F9/download/x.png"))
    elsewhere = slack.add_file("x.png", PNG, "image/png", url_private_download=off)
    moved = slack.add_file("moved.png", PNG, "image/png")
    slack.file_redirects[moved["id"]] = off
    client = await client_for(slack, cleanup, CLAUDE)
    await send(client, shared("EvF6", "", elsewhere))  # a file URL off Slack's file host
    await slack.wait_for(1)
    assert seen == [] and slack.file_hits == []
    await send(client, shared("EvF7", "", moved))  # Slack's host redirects elsewhere
    posted = await slack.wait_for(2)
    await settle(client)
    assert seen == [None]  # followed without the token
    assert slack.file_hits == [(download_path(moved), f"Bearer {TOKEN}")]
    assert shown(posted[0]) == "I couldn't download that file from Slack."
    assert shown(posted[1]) == "I couldn't download that file from the platform."
    assert anthropic.requests == []


async def test_a_thread_follow_up_with_a_snippet_and_a_pdf_is_read_as_text(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    snippet = slack.add_file("-.py", b"print('hi')\n", "text/plain", mode="snippet", title="hi.py")
    paper = slack.add_file("q3.pdf", pdf("Quarterly"), "application/pdf")
    client = await client_for(slack, cleanup, CLAUDE)
    root = "1700000000.000100"
    await send(client, event("EvF8", "app_mention", f"<@{BOT_USER}> hello", ts=root))
    await slack.wait_for(1, seconds=30)
    follow = shared("EvF9", "sum these up", snippet, paper, channel="C1", thread_ts=root)
    follow["event"].update(channel_type="channel", ts="1700000001.0")
    await send(client, follow)
    posted = await slack.wait_for(2)
    await settle(client)
    said = anthropic.requests[1].last_user_text
    assert said.startswith("sum these up\n\n[File -.py]\nprint('hi')")
    assert "[PDF q3.pdf]\nQuarterly" in said
    assert posted[1]["thread_ts"] == root


async def test_unsupported_deleted_and_unreadable_files_get_one_line(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    archive = slack.add_file("photos.zip", b"PK\x03\x04" + b"\x00" * 100, "application/zip")
    gone = slack.add_file("old.png", PNG, "image/png")
    slack.gone_files.add(gone["id"])
    linked = slack.add_file("plan.gdoc", b"", "application/vnd.google-apps.document")
    slack.files[linked["id"]].update(is_external=True, url_private="https://docs.google.com/d/1")
    client = await client_for(slack, cleanup, CLAUDE)
    for number, file in enumerate((archive, gone, linked)):
        await send(client, shared(f"EvF1{number}", "", file))
        await slack.wait_for(number + 1)
    slack.refuse["files.info"] = "missing_scope"
    await send(client, shared("EvF13", "", slack.add_file("a.png", PNG, "image/png")))
    posted = await slack.wait_for(4)
    await settle(client)
    assert [shown(p) for p in posted] == [
        f"I can't read application/zip files. I can take {SUPPORTED}.",
        "That file was deleted from Slack before I could read it.",
        "I can only read files uploaded to Slack, not files linked from elsewhere.",
        "I can't open files here yet: the Slack app needs the files:read scope "
        "(add it under OAuth & Permissions and reinstall the app).",
    ]
    assert slack.file_hits == [(download_path(archive), f"Bearer {TOKEN}")]
    assert anthropic.requests == []


def test_media_parts_read_only_the_payload() -> None:
    clip = {
        "id": "F1",
        "name": "clip.m4a",
        "mimetype": "audio/mp4; codecs=mp4a",
        "size": 900,
        "subtype": "slack_audio",
        "url_private": "https://files.slack.com/files-pri/T1-F1/clip.m4a",
    }
    song = {"id": "F2", "mimetype": "audio/mpeg", "size": True, "title": "song"}
    odd = {"id": "../F3", "mimetype": 5, "size": -1, "url_private_download": 7}
    linked = {"id": "F4", "is_external": True, "url_private": "https://drive.example/x"}
    found = media_parts({"text": "https://files.slack.com/x", "files": [clip, song, odd, linked]})
    assert found == (
        MediaPart("voice", "audio/mp4", 900, "clip.m4a", clip["url_private"], "F1"),
        MediaPart("audio", "audio/mpeg", None, "song", "", "F2"),
        MediaPart("document"),
        MediaPart("document", ref="F4"),
    )
    assert media_parts({"files": "nope"}) == () and media_parts({}) == ()
    assert len(media_parts({"files": [{"id": f"F{i}"} for i in range(12)]})) == 10


async def test_a_message_with_malformed_files_is_not_a_server_error(
    slack: FakeSlack, cleanup: contextlib.AsyncExitStack
) -> None:
    client = await client_for(slack, cleanup, {"channels": {"slack": {"streaming": False}}})
    assert (await send(client, shared("EvF20", "", 5, "x"))).status == 200  # type: ignore[arg-type]
    bad = event("EvF21", "message", "", channel="D9", channel_type="im", files={"a": 1})
    assert (await send(client, bad)).status == 200
    assert await pending(client) == []


def test_file_hosts() -> None:
    assert origin("https://files.slack.com/files-pri/x") == "https://files.slack.com"
    assert origin("http://127.0.0.1:8080/api/") == "http://127.0.0.1:8080"
    assert origin("https://files.slack.com:443/x") == "https://files.slack.com"
    assert origin("https://h:99999/x") == "" and origin("ftp://files.slack.com/x") == ""
    assert origin("no url") == ""


async def test_files_info_checks_the_size_and_falls_back_to_the_events_url(
    slack: FakeSlack, clients: Any
) -> None:
    photo = slack.add_file("cat.png", PNG, "image/png")
    [part] = media_parts({"files": [photo]})
    files = SlackFiles(clients[0], api_base=slack.base_url, max_bytes=MB)
    slack.refuse["files.info"] = "internal_error"  # Slack could not say: the event's URL
    fetch = await files.fetch(dm_thread(), part)
    assert fetch.url == photo["url_private_download"]
    assert dict(fetch.headers) == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in repr(fetch)
    del slack.refuse["files.info"]
    slack.files[photo["id"]]["size"] = 2 * MB  # grown since the event: refused before download
    with pytest.raises(MediaError, match="too big"):
        await files.fetch(dm_thread(), part)
    nowhere = MediaPart("image", url=photo["url_private_download"])  # no id; not files.slack.com
    with pytest.raises(MediaError, match="couldn't download"):
        await SlackFiles(clients[0]).fetch(dm_thread(), nowhere)
    assert slack.file_hits == []


async def test_check_live_names_a_missing_files_read_scope(slack: FakeSlack) -> None:
    from channels import live

    env = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_API_BASE_URL": slack.base_url}
    slack.scopes = "app_mentions:read,chat:write,im:history,commands"
    found = await live.slack(load_config(), env)
    assert found.ok and "missing files:read (add them and reinstall the app)" in found.detail
    slack.scopes += ",files:read"
    assert "missing" not in (await live.slack(load_config(), env)).detail
