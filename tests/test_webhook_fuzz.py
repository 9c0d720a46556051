"""Fuzzed requests never get a 5xx: hypothesis-generated headers and bodies against the
Slack, Telegram, Twilio and web routes of one running server.

The server runs in a thread of its own with its own event loop, so each generated
example is one plain HTTP request (a few milliseconds), not a server start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import create_app
from tests.fakes.slack import SIGNING_SECRET
from tests.fakes.telegram import FakeTelegram
from tests.fakes.twilio import FROM, SID, TOKEN

SECRET = "fuzz-secret"
PUBLIC = "https://bot.example.com"
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Server:
    """chatlane serve, in-process, on a port of its own; with a fake Telegram beside it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.app: web.Application | None = None
        self._stack = contextlib.AsyncExitStack()

    def __enter__(self) -> Server:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stack.aclose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        telegram = await self._stack.enter_async_context(FakeTelegram())
        env = {
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
            "TELEGRAM_WEBHOOK_SECRET": SECRET,
            "PUBLIC_URL": PUBLIC,
            "SLACK_BOT_TOKEN": "xoxb-fuzz",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_BASE_URL": "http://127.0.0.1:9/api/",
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM_NUMBER": FROM,
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
        }
        config = load_config()
        # Signed fuzzed SMS are real messages: their replies fail; stop without waiting.
        config = config.model_copy(
            update={"server": config.server.model_copy(update={"shutdown_grace": 0})}
        )
        runtime = AgentRuntime(config=config, demo_when_unconfigured=True)
        self.app = create_app(runtime, env=env, body_timeout=2.0)
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as running:
        yield running


HEADER_NAMES = st.sampled_from(
    [
        "Content-Type",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
        "X-Slack-Retry-Num",
        "X-Telegram-Bot-Api-Secret-Token",
        "X-Twilio-Signature",
        "X-Forwarded-For",
        "X-Request-ID",
        "Origin",
        "Sec-Fetch-Site",
        "Cookie",
        "Authorization",
        "Content-Encoding",
        "Accept",
    ]
)
LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
HEADER_VALUES = st.text(LATIN1, max_size=40) | st.sampled_from(
    [
        "",
        "1e400",
        "9" * 5000,
        "-1",
        "NaN",
        "v0=" + "é" * 10,
        "v0=" + "0" * 64,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "gzip",
        "Bearer ",
        "chatlane_browser=" + "x" * 300,
        "1.2.3.4, 5.6.7.8, not-an-ip",
        "null",
        "https://evil.example",
    ]
)
HEADERS = st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
DEEP = b"[" * 5000  # json.loads raises RecursionError
TRICKY = st.sampled_from(
    [
        b'{"update_id": 1e400}',
        b'{"update_id": 12, "message": {"message_id": 1e400,'
        b' "chat": {"id": 1, "type": "private"}}}',
        b'{"update_id": 13, "message": {"message_id": 1, "date": 0, "text": "\\ud800",'
        b' "chat": {"id": 1, "type": "private"}, "from": {"id": 1, "is_bot": false,'
        b' "first_name": "x"}}}',
        b'{"type": "event_callback", "event_id": ["x"], "event": "x"}',
        b'{"type": "url_verification", "challenge": {"x": 1}}',
        b'{"session_id": "s", "text": "\\udfff"}',
        b'{"session_id": ' + b"1" * 5000 + b', "text": "x"}',
        b"\xff\xfe\x00",
        DEEP,
        b"",
    ]
)
BODIES = st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()) | TRICKY
FORMS = st.dictionaries(
    st.sampled_from(["From", "To", "Body", "MessageSid", "NumMedia", "MediaUrl0", "x"]),
    st.text(max_size=30),
    max_size=6,
)


def slack_signed(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    timestamp = str(int(time.time()))
    base = b"v0:" + timestamp.encode() + b":" + body
    digest = hmac.new(SIGNING_SECRET.encode(), base, hashlib.sha256).hexdigest()
    return headers | {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


def no_5xx(
    server: Server,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    refused: bool = False,
) -> None:
    """No 5xx; and with ``refused`` (no valid signature or secret) a 4xx: nothing taken."""
    status = server.request(method, path, body, headers)
    assert status < 500, (status, path, body[:200], headers)
    if refused:
        assert status >= 400, (status, path, body[:200], headers)


@EXAMPLES
@given(body=BODIES, headers=HEADERS)
def test_slack_unsigned(server: Server, body: bytes, headers: dict[str, str]) -> None:
    no_5xx(server, "POST", "/slack/events", body, headers, refused=True)


@EXAMPLES
@given(body=BODIES, headers=HEADERS)
def test_slack_signed(server: Server, body: bytes, headers: dict[str, str]) -> None:
    no_5xx(server, "POST", "/slack/events", body, slack_signed(body, headers))


@EXAMPLES
@given(body=BODIES, headers=HEADERS, secret=st.booleans())
def test_telegram(server: Server, body: bytes, headers: dict[str, str], secret: bool) -> None:
    if secret:
        headers = headers | {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    # The known defects below are left out here; drop these two lines once they are fixed.
    given_secret = headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    assume(given_secret.isascii() and body != DEEP)
    refused = headers.get("X-Telegram-Bot-Api-Secret-Token") != SECRET
    no_5xx(server, "POST", "/telegram/webhook", body, headers, refused=refused)


def test_telegram_non_ascii_secret_header(server: Server) -> None:
    no_5xx(server, "POST", "/telegram/webhook", b"{}", {"X-Telegram-Bot-Api-Secret-Token": "é"})


def test_telegram_deeply_nested_update(server: Server) -> None:
    no_5xx(server, "POST", "/telegram/webhook", DEEP, {"X-Telegram-Bot-Api-Secret-Token": SECRET})


@EXAMPLES
@given(form=FORMS, raw=st.binary(max_size=200), headers=HEADERS, signed=st.booleans())
def test_twilio(
    server: Server, form: dict[str, str], raw: bytes, headers: dict[str, str], signed: bool
) -> None:
    if signed:
        body = urllib.parse.urlencode(form).encode()
        signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/twilio/sms", form)
        headers = headers | {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        }
    else:
        body = raw
    no_5xx(server, "POST", "/twilio/sms", body, headers, refused=not signed)


@EXAMPLES
@given(body=BODIES, headers=HEADERS, path=st.sampled_from(["/api/chat", "/api/info", "/"]))
def test_web(server: Server, body: bytes, headers: dict[str, str], path: str) -> None:
    no_5xx(server, "POST" if path == "/api/chat" else "GET", path, body, headers)


def test_web_chat_deeply_nested_body(server: Server) -> None:
    no_5xx(server, "POST", "/api/chat", DEEP, {"Content-Type": "application/json"})
