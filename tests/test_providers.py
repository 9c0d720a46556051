"""Providers: the real SDKs against fake servers speaking the real wire formats."""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest

from bot import AgentRuntime, registry
from bot.config import ConfigError, load_config
from bot.failover import FailoverReason, ProviderError
from bot.messages import Message, Role, ToolCall
from bot.providers import ProviderKind, classify, create_provider, provider_kinds
from bot.providers.base import (
    Delta,
    ModelRequest,
    ProviderInfo,
    StopDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolSpec,
    UsageDelta,
)
from bot.providers.classify import classify_http_error
from bot.storage import MemoryStorage
from tests.fakes.models import Fail, FakeAnthropic, FakeOpenAI, Hang, Reply

KEY = "sk-secret-key-0123456789"
TOOL = ToolSpec("read_file", "Read a file", {"type": "object", "properties": {}})


@pytest.fixture(params=["anthropic", "openai"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    kind = request.param
    fake = FakeAnthropic() if kind == "anthropic" else FakeOpenAI()
    async with fake:
        base = fake.base_url if kind == "anthropic" else fake.api_base  # type: ignore[attr-defined]
        provider = create_provider(ProviderInfo(kind, kind, base_url=base), timeout=2.0)
        yield fake, provider
        await provider.aclose()


async def collect(provider: Any, request: ModelRequest) -> list[Any]:
    return [delta async for delta in provider.stream(request, KEY)]


def ask(text: str = "hi", **kwargs: Any) -> ModelRequest:
    return ModelRequest(
        model="model-x",
        messages=(Message(Role.SYSTEM, "be brief"), Message(Role.USER, text)),
        **kwargs,
    )


async def test_streams_text_usage_and_stop(setup: tuple[Any, Any]) -> None:
    fake, provider = setup
    fake.script(Reply(text="Hello there, friend", chunks=3))
    deltas = await collect(provider, ask())
    texts = [d.text for d in deltas if isinstance(d, TextDelta)]
    assert "".join(texts) == "Hello there, friend" and len(texts) == 3
    usage = [d for d in deltas if isinstance(d, UsageDelta)]
    assert sum(u.input_tokens for u in usage) == 11
    assert sum(u.output_tokens for u in usage) == 7
    assert deltas[-1] == StopDelta("end")
    assert fake.requests[0].api_key == KEY
    assert fake.requests[0].json["model"] == "model-x"


async def test_tool_round_trip_encodes_results(setup: tuple[Any, Any]) -> None:
    fake, provider = setup
    fake.script(Reply(tool_calls=[("call_1", "read_file", {"path": "config.py"})]))
    deltas = await collect(provider, ask("read it", tools=(TOOL,)))
    calls = [d.call for d in deltas if isinstance(d, ToolCallDelta)]
    assert calls == [ToolCall("call_1", "read_file", {"path": "config.py"})]
    assert StopDelta("tool_use") in deltas
    follow = ModelRequest(
        model="model-x",
        messages=(
            Message(Role.USER, "read it"),
            Message(Role.ASSISTANT, "", tool_calls=tuple(calls)),
            Message(Role.TOOL, "DEBUG = True", tool_call_id="call_1", name="read_file"),
        ),
        tools=(TOOL,),
    )
    fake.script(Reply(text="It sets DEBUG."))
    await collect(provider, follow)
    sent = fake.requests[1].json["messages"]
    if fake.route == "/v1/messages":
        assert sent[1]["content"][0]["type"] == "tool_use"
        assert sent[2]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": "call_1",
            "content": "DEBUG = True",
            "is_error": False,
        }
        assert fake.requests[1].json["tools"][0]["input_schema"] == TOOL.parameters
    else:
        assert sent[1]["tool_calls"][0]["function"]["name"] == "read_file"
        assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "DEBUG = True"}


async def test_native_thinking(setup: tuple[Any, Any]) -> None:
    fake, provider = setup
    fake.script(Reply(text="42", thinking="let me think"))
    deltas = await collect(provider, ask(thinking_budget=2048))
    thinking = "".join(d.text for d in deltas if isinstance(d, ThinkingDelta))
    assert thinking == "let me think"
    if fake.route == "/v1/messages":
        assert any(d.signature == "sig-fake" for d in deltas if isinstance(d, ThinkingDelta))
        assert fake.requests[0].json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "42"


async def test_no_thinking_requested_when_off(setup: tuple[Any, Any]) -> None:
    fake, provider = setup
    await collect(provider, ask())
    assert "thinking" not in fake.requests[0].json
    assert "reasoning_effort" not in fake.requests[0].json


@pytest.mark.parametrize(
    ("fail", "reason"),
    [
        (Fail(429, "rate_limit_error", headers={"retry-after": "7"}), FailoverReason.RATE_LIMIT),
        (Fail(529, "overloaded_error"), FailoverReason.OVERLOADED),
        (Fail(500, "api_error"), FailoverReason.SERVER),
        (Fail(503, "api_error"), FailoverReason.OVERLOADED),
        (Fail(504, "api_error"), FailoverReason.TIMEOUT),
        (Fail(401, "authentication_error"), FailoverReason.AUTH),
        (Fail(403, "permission_error"), FailoverReason.AUTH),
        (Fail(402, "billing_error"), FailoverReason.BILLING),
        (Fail(404, "not_found_error"), FailoverReason.NOT_FOUND),
        (
            Fail(400, "invalid_request_error", "prompt is too long: 200001 tokens"),
            FailoverReason.CONTEXT_OVERFLOW,
        ),
        (
            Fail(400, "invalid_request_error", "temperature out of range"),
            FailoverReason.BAD_REQUEST,
        ),
        (Fail(429, "insufficient_quota", code="insufficient_quota"), FailoverReason.BILLING),
    ],
)
async def test_http_errors_are_classified(
    setup: tuple[Any, Any], fail: Fail, reason: FailoverReason
) -> None:
    fake, provider = setup
    fake.script(fail)
    with pytest.raises(ProviderError) as info:
        await collect(provider, ask())
    assert info.value.reason is reason
    assert len(fake.requests) == 1, "SDK retries must be off"
    if "retry-after" in fail.headers:
        assert info.value.retry_after == 7.0
    assert KEY not in str(info.value) and KEY not in repr(info.value)


async def test_error_inside_the_stream(setup: tuple[Any, Any]) -> None:
    fake, provider = setup
    fake.script(Reply(text="Partial answ", fail_after=Fail(200, "overloaded_error", "Overloaded")))
    seen: list[Any] = []
    with pytest.raises(ProviderError) as info:
        async for delta in provider.stream(ask(), KEY):
            seen.append(delta)
    assert info.value.reason is FailoverReason.OVERLOADED
    assert "".join(d.text for d in seen if isinstance(d, TextDelta)) == "Partial answ"


async def test_timeout(setup: tuple[Any, Any]) -> None:
    fake, provider = setup
    fake.script(Hang(5))
    quick = create_provider(provider.info, timeout=0.3)
    with pytest.raises(ProviderError) as info:
        await collect(quick, ask())
    assert info.value.reason is FailoverReason.TIMEOUT
    await quick.aclose()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_connection_refused(kind: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    provider = create_provider(ProviderInfo(kind, kind, base_url=base), timeout=2.0)
    with pytest.raises(ProviderError) as info:
        await collect(provider, ask())
    assert info.value.reason is FailoverReason.CONNECTION
    await provider.aclose()


def established_to(port: int) -> int:
    """Client sockets connected to ``port`` on 127.0.0.1, from the kernel's table."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        remote, state = line.split()[2], line.split()[3]
        count += remote.endswith(f":{port:04X}") and state == "01"  # ESTABLISHED
    return count


async def test_closing_a_provider_closes_its_connections(setup: tuple[Any, Any]) -> None:
    fake, provider = setup
    port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
    fake.script(Reply("one"), Reply("two"))
    await collect(provider, ask())
    await collect(provider, ask())
    assert established_to(port) == 1  # kept alive and reused by the second call
    await provider.aclose()
    assert established_to(port) == 0


async def test_demo_provider_says_what_it_is_and_calls_tools() -> None:
    demo = create_provider(ProviderInfo("demo", "demo", needs_key=False))
    deltas = [d async for d in demo.stream(ask("hello bot"), None)]
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert "offline demo model" in text and "hello bot" in text
    assert sum(isinstance(d, TextDelta) for d in deltas) > 3
    timed = [
        d
        async for d in demo.stream(
            ask("what time is it?", tools=(ToolSpec("current_time", "", {}),)), None
        )
    ]
    assert [d.call.name for d in timed if isinstance(d, ToolCallDelta)] == ["current_time"]
    thought = [d async for d in demo.stream(ask("x", thinking_budget=1024), None)]
    assert any(isinstance(d, ThinkingDelta) for d in thought)


def test_unknown_provider_kind() -> None:
    with pytest.raises(ValueError, match="unknown provider type 'grok'; installed: anthropic"):
        create_provider(ProviderInfo("x", "grok"))


def test_the_built_in_kinds_come_from_entry_points() -> None:
    kinds = provider_kinds()
    assert list(kinds) == ["anthropic", "demo", "openai"]
    assert kinds["anthropic"].env_key == "ANTHROPIC_API_KEY"
    assert kinds["openai"].env_key == "OPENAI_API_KEY"
    assert not kinds["demo"].needs_key and kinds["demo"].env_key is None


def test_an_unknown_provider_type_in_config_names_key_value_and_kinds() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(data={"providers": {"local": {"type": "grok", "base_url": "http://x"}}})
    message = str(info.value)
    assert "providers.local.type" in message and "'grok'" in message
    assert "anthropic, demo, openai" in message


# A third-party provider kind, installed the way a package would be: an entry point in the
# chatlane.providers group naming ECHO_KIND below. It has an "SDK" of its own, whose errors
# only its own classification understands.


class EchoOutOfCredits(Exception):
    """The echo SDK's way to say the account is empty: no status code, no body."""


class EchoProvider:
    def __init__(self, info: ProviderInfo, *, timeout: float = 120.0) -> None:
        self.info = info

    async def stream(
        self, request: ModelRequest, api_key: str | None
    ) -> AsyncGenerator[Delta, None]:
        try:
            if request.model == "broke":
                raise EchoOutOfCredits("no credits left")
        except EchoOutOfCredits as exc:
            raise classify_echo(exc, provider=self.info.name, model=request.model) from exc
        said = request.messages[-1].content
        yield TextDelta(f"echo {said} via {self.info.base_url} with {api_key}")
        yield StopDelta("end")

    async def aclose(self) -> None:
        pass


def classify_echo(exc: BaseException, *, provider: str = "", model: str = "") -> ProviderError:
    if isinstance(exc, EchoOutOfCredits):
        return ProviderError(FailoverReason.BILLING, "out of credits", provider=provider)
    return classify_http_error(exc, provider=provider, model=model)


ECHO_KIND = ProviderKind("echo", EchoProvider, classify=classify_echo, env_key="ECHO_API_KEY")


@pytest.fixture
def echo_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def installed(*, group: str) -> list[EntryPoint]:
        found = list(entry_points(group=group))
        if group == "chatlane.providers":
            found += [
                EntryPoint("echo", f"{__name__}:ECHO_KIND", group),
                EntryPoint("broken", "tests.no_such_module:KIND", group),
                EntryPoint("notakind", f"{__name__}:EchoProvider", group),
            ]
        return found

    monkeypatch.setattr(registry, "entry_points", installed)
    registry.load_entry_points.cache_clear()
    yield
    registry.load_entry_points.cache_clear()


async def test_a_third_party_provider_answers_a_turn(
    echo_installed: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("X_KEY", "sk-echo-0123456789")
    config = load_config(
        data={
            "agent": {"model": "x/echo-1", "fallback_models": ["demo/chatlane-demo"]},
            "providers": {"x": {"type": "echo", "base_url": "http://echo", "api_key_env": "X_KEY"}},
        }
    )
    async with AgentRuntime(config=config, storage=MemoryStorage()) as runtime:
        reply = await runtime.ask("s1", "hello")
    assert reply == "echo hello via http://echo with sk-echo-0123456789"
    async with AgentRuntime("x/broke", config=config, storage=MemoryStorage()) as runtime:
        seen = [event async for event in runtime.run("s2", "hi")]
    failover = [e.data for e in seen if e.type.value == "failover"]
    # Only the echo kind's own classification knows this error means billing.
    assert failover == [{"from": "x/broke", "to": "demo/chatlane-demo", "reason": "billing"}]
    assert "offline demo model" in seen[-1].data["text"]
    assert sorted(provider_kinds()) == ["anthropic", "demo", "echo", "openai"]
    assert "tests.no_such_module" in caplog.text and "not a ProviderKind" in caplog.text


def test_config_lists_a_third_party_kind(echo_installed: None) -> None:
    assert load_config(data={"providers": {"x": {"type": "echo"}}}).provider_kind("x") == "echo"
    with pytest.raises(ConfigError, match="anthropic, demo, echo, openai"):
        load_config(data={"providers": {"x": {"type": "ech0"}}})


async def test_a_retired_claude_model_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """The SDK warns on every call to a retired model: logged once, never raised
    (warnings are errors in this suite), and other models pay nothing for the check."""
    async with FakeAnthropic() as fake:
        fake.default = lambda request: Reply(text="still here")
        provider = create_provider(ProviderInfo("anthropic", "anthropic", base_url=fake.base_url))
        retired = ModelRequest(model="claude-opus-4-5", messages=(Message(Role.USER, "hi"),))
        current = ModelRequest(model="claude-sonnet-4-6", messages=(Message(Role.USER, "hi"),))
        with caplog.at_level("WARNING", logger="bot.providers.anthropic"):
            for request in (retired, retired, current):
                deltas = await collect(provider, request)
                assert any(isinstance(d, TextDelta) and d.text for d in deltas)
        await provider.aclose()
    notices = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(notices) == 1 and "claude-opus-4-5" in notices[0]


class _HttpError(Exception):
    """Shaped like an SDK's HTTP error: what the shared classification reads."""

    def __init__(self, status: int | None, body: object, headers: dict[str, str]) -> None:
        super().__init__("boom")
        self.status_code = status
        self.body = body
        self.response = type("Response", (), {"headers": headers})()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (None, {"error": {"message": "maximum context length is 8192"}}, "context_overflow"),
        (
            None,
            {"error": {"type": "invalid_request_error", "message": "too many tokens"}},
            "context_overflow",
        ),
        (None, {"error": {"message": "something odd"}}, "server"),
        (None, "not json", "server"),
        (422, {"error": {"message": "input is too long"}}, "context_overflow"),
        (413, {}, "context_overflow"),
        (408, {}, "timeout"),
        (502, {}, "server"),
        (409, {}, "bad_request"),
        (302, {}, "unknown"),
        (400, {"error": {"type": "not_found_error"}}, "not_found"),
        (400, {"error": {"code": "model_not_found"}}, "not_found"),
    ],
)
def test_shared_http_classification(status: int | None, body: object, reason: str) -> None:
    error = classify_http_error(_HttpError(status, body, {}), provider="p", model="m")
    assert error.reason.value == reason and error.provider == "p" and error.model == "m"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: now
        ({"retry-after": "soon"}, None),
        ({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}, "future"),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | str | None) -> None:
    error = classify_http_error(_HttpError(429, {}, headers))
    assert error.reason is FailoverReason.RATE_LIMIT
    if seconds == "future":
        assert error.retry_after is not None and error.retry_after > 365 * 86400
    else:
        assert error.retry_after == seconds


def test_stray_network_errors_and_our_own() -> None:
    assert classify(_HttpError(402, {}, {})).reason is FailoverReason.BILLING
    assert classify_http_error(TimeoutError()).reason is FailoverReason.TIMEOUT
    assert classify_http_error(ConnectionResetError()).reason is FailoverReason.CONNECTION
    ours = ProviderError(FailoverReason.REFUSAL)
    assert classify_http_error(ours) is ours
