"""The dispatcher: store before acknowledging, dedupe, access, replay after a crash, drain."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from bot.access import AccessPolicy, Verdict
from bot.channel import ChannelTraits, Reply
from bot.channel import Sink as BaseSink
from bot.config import load_config
from bot.dispatch import MAX_ATTEMPTS, Dispatcher, Outcome
from bot.inbound import InboundMessage
from bot.messages import Role
from bot.runtime import AgentRuntime
from bot.storage import MemoryStorage, SQLiteStorage
from tests.helpers import wait_for


class Sink(BaseSink):
    """The far side of the dispatcher: records what a channel would send."""

    name = "test"

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[Any] = []
        self.notices: list[str] = []
        self.typing = 0
        self.fail_after = fail_after
        self.changed = asyncio.Event()

    def render(self, reply: Reply) -> list[Any]:
        parts = [f"[reasoning] {reply.reasoning}"] if reply.reasoning else []
        return parts + [chunk for chunk in reply.markdown.split("\n\n") if chunk]

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise ConnectionError("platform down")
        self.sent.append(part)
        self.changed.set()

    async def notify(self, message: InboundMessage, text: str) -> None:
        self.notices.append(text)
        self.changed.set()

    async def typing(self, message: InboundMessage) -> None:  # type: ignore[override]
        self.typing += 1


def inbound(text: str, message_id: str, sender: str = "u1", chat: str = "c1") -> InboundMessage:
    return InboundMessage("test", chat, sender, text, message_id)


def owned(cleanup: contextlib.AsyncExitStack, dispatcher: Dispatcher) -> Dispatcher:
    """The dispatcher, drained and its runtime closed after the test, passed or failed."""
    cleanup.push_async_callback(dispatcher.runtime.close)
    cleanup.push_async_callback(dispatcher.drain, 1)
    return dispatcher


def make(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, **channel: Any
) -> tuple[Dispatcher, Sink, SQLiteStorage]:
    config = load_config(data={"channels": {"web": channel}} if channel else {})
    storage = SQLiteStorage(tmp_path / "d.sqlite")
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True, storage=storage)
    dispatcher = owned(cleanup, Dispatcher(runtime))
    sink = Sink()
    dispatcher.register(sink)
    return dispatcher, sink, storage


async def test_accepts_answers_and_dedupes(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, sink, storage = make(tmp_path, cleanup)
    await dispatcher.start()
    assert await dispatcher.submit(inbound("hello", "m1")) is Outcome.ACCEPTED
    assert await dispatcher.submit(inbound("hello", "m1")) is Outcome.DUPLICATE
    await wait_for(lambda: sink.sent, "the reply to m1 to be sent", changed=sink.changed)
    await wait_for(lambda: not dispatcher.claims, "m1's claim to be released")
    assert any("You said: hello" in part for part in sink.sent)
    assert await storage.inbox_pending() == []


async def test_a_message_opened_as_it_was_stored_is_not_opened_again(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored, claimed and opened (its attempt counted) in one step: its turn takes it as
    it is, one commit (or trip to Redis) less a turn."""
    dispatcher, sink, storage = make(tmp_path, cleanup)
    opened: list[int] = []
    real = storage.inbox_open

    async def counted(item_id: int, *args: Any) -> Any:
        opened.append(item_id)
        return await real(item_id, *args)

    monkeypatch.setattr(storage, "inbox_open", counted)
    await dispatcher.start()
    assert await dispatcher.submit(inbound("hello", "m1")) is Outcome.ACCEPTED
    await wait_for(lambda: sink.sent, "the reply to m1 to be sent", changed=sink.changed)
    await wait_for(lambda: not dispatcher.claims, "m1's claim to be released")
    assert any("You said: hello" in part for part in sink.sent)
    assert opened == []
    assert await storage.inbox_pending() == []


async def test_a_turns_reply_is_stored_with_its_transcript(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write for both, before the reply goes out: a crash between two writes would
    leave the transcript answered and the message not, and the restart would ask the
    model again. The reply stored is the one sent."""
    dispatcher, sink, storage = make(tmp_path, cleanup)
    writes: list[tuple[int, list[Any]] | None] = []
    real_append, real_set_reply = storage.append_messages, storage.inbox_set_reply

    async def append(session_id: str, messages: Any, reply: Any = None) -> Any:
        writes.append(reply)
        assert sink.sent == []  # stored before it is sent
        return await real_append(session_id, messages, reply)

    async def set_reply(item_id: int, parts: Any) -> None:
        writes.append(None)
        await real_set_reply(item_id, parts)

    monkeypatch.setattr(storage, "append_messages", append)
    monkeypatch.setattr(storage, "inbox_set_reply", set_reply)
    await dispatcher.start()
    await dispatcher.submit(inbound("hello", "m1"))
    await wait_for(lambda: sink.sent, "the reply to m1 to be sent", changed=sink.changed)
    await wait_for(lambda: not dispatcher.claims, "m1's claim to be released")
    assert len(writes) == 1 and writes[0] is not None
    assert writes[0][1] == sink.sent


async def test_commands_skip_the_model(tmp_path: Path, cleanup: contextlib.AsyncExitStack) -> None:
    dispatcher, sink, _ = make(tmp_path, cleanup)
    await dispatcher.start()
    await dispatcher.submit(inbound("/think on", "m1"))
    await wait_for(lambda: sink.sent, "the command's reply to be sent", changed=sink.changed)
    assert sink.sent == ["Thinking mode set to on."]


async def test_replay_after_a_crash_resumes_without_repeating(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, sink, storage = make(tmp_path, cleanup)
    await dispatcher.runtime.start()
    # A previous process stored two messages; it had answered the first half-way.
    first = await storage.inbox_add("test:old1", inbound("first", "old1").to_dict())
    second = await storage.inbox_add("test:old2", inbound("second", "old2", chat="c2").to_dict())
    assert first is not None and second is not None
    await storage.inbox_set_reply(first, ["part A", "part B", "part C"])
    await storage.inbox_mark_sent(first, 1)
    await dispatcher.start()
    await wait_for(lambda: len(sink.sent) >= 3, "three parts to be sent", changed=sink.changed)
    await wait_for(lambda: not dispatcher.claims, "both replayed messages' claims to be released")
    # The two chats answer concurrently: old1's own parts are the rest, in order.
    assert [part for part in sink.sent if part.startswith("part ")] == ["part B", "part C"]
    assert any("You said: second" in part for part in sink.sent)
    assert await storage.inbox_pending() == []


async def test_a_failed_send_is_retried_from_where_it_stopped(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, _, storage = make(tmp_path, cleanup)
    flaky = Sink(fail_after=0)
    dispatcher.register(flaky)
    await dispatcher.start()
    await dispatcher.submit(inbound("one\n\ntwo", "m1"))
    await wait_for(lambda: dispatcher.mailbox._boxes == {}, "the failed turn to end")
    pending = await storage.inbox_pending()
    assert len(pending) == 1 and pending[0].reply and pending[0].sent == 0
    await dispatcher.drain(1)
    fixed = Sink()
    again = Dispatcher(dispatcher.runtime)
    cleanup.push_async_callback(again.drain, 1)
    again.register(fixed)
    await again.start()
    await wait_for(
        lambda: not again.claims and fixed.sent, "the stored reply to be sent by the next start"
    )
    assert fixed.sent == pending[0].reply


class FlakySink(Sink):
    """Fails its first ``failures`` sends, as a platform that is down for a while."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("platform down")
        await super().send_part(message, part)


@pytest.mark.parametrize(("failures", "delivered"), [(2, True), (50, False)])
async def test_a_failed_turn_is_tried_again_then_given_up(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, failures: int, delivered: bool
) -> None:
    storage = SQLiteStorage(tmp_path / "d.sqlite")
    runtime = AgentRuntime(
        config=load_config(data={}), demo_when_unconfigured=True, storage=storage
    )
    dispatcher = owned(cleanup, Dispatcher(runtime, sweep_every=0.02))
    sink = FlakySink(failures)
    dispatcher.register(sink)
    await dispatcher.start()
    await dispatcher.submit(inbound("again", "m1"))
    await wait_for(
        lambda: sink.sent or sink.notices, "a reply or a notice to be sent", changed=sink.changed
    )
    await wait_for(lambda: not dispatcher.claims, "m1's claim to be released")
    if delivered:  # the same process picked it up again and the platform was back
        assert sink.attempts == failures + len(sink.sent)
        assert any("You said: again" in p for p in sink.sent)
        assert sink.notices == []
    else:  # three tries, then the sender is told, and the message is closed
        assert sink.attempts == MAX_ATTEMPTS and sink.sent == []
        assert sink.notices == ["Sorry, something went wrong answering that."]
    assert await storage.inbox_pending() == []


class RoundTripClaims(MemoryStorage):
    """A store whose claim takes a round trip, as Redis's does."""

    async def inbox_claim(self, item_id: int, owner: str, ttl: float) -> bool:
        await asyncio.sleep(0)
        return await super().inbox_claim(item_id, owner, ttl)


async def test_a_sweep_during_submits_never_queues_a_message_twice(
    cleanup: contextlib.AsyncExitStack,
) -> None:
    config = load_config(data={"agent": {"queuing": {"mode": "followup"}}})
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True, storage=RoundTripClaims())
    dispatcher = owned(cleanup, Dispatcher(runtime))
    sink = Sink()
    dispatcher.register(sink)
    await dispatcher.start()
    for n in range(20):
        await asyncio.gather(
            dispatcher.submit(inbound(f"message {n}", f"m{n}", chat=f"c{n}")), dispatcher.sweep()
        )
    await wait_for(
        lambda: not dispatcher.claims and len(sink.sent) >= 20,
        "the 20 replies to be sent and their claims released",
    )
    for n in range(20):  # the model saw each message once, in one turn
        transcript = await runtime.storage.load_messages(f"test:c{n}")
        assert [m.content for m in transcript if m.role is Role.USER] == [f"message {n}"]


async def test_refused_senders_never_reach_the_model(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    config = load_config(data={"channels": {"telegram": {"allow_from": ["42"]}}})
    runtime = AgentRuntime(
        config=config, demo_when_unconfigured=True, storage=SQLiteStorage(tmp_path / "x.sqlite")
    )
    dispatcher = owned(cleanup, Dispatcher(runtime))
    sink = Sink()
    sink.name = "telegram"
    dispatcher.register(sink)
    await dispatcher.start()
    stranger = InboundMessage("telegram", "7", "7", "hi", "u1")
    assert await dispatcher.submit(stranger) is Outcome.REFUSED
    assert (
        await dispatcher.submit(InboundMessage("telegram", "7", "7", "hi", "u2")) is Outcome.REFUSED
    )
    await wait_for(lambda: sink.notices, "the stranger to be told", changed=sink.changed)
    assert sink.notices == ["Sorry, this bot is private."]
    assert await runtime.storage.load_messages("telegram:7") == []


async def test_draining_refuses_new_work(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, _, storage = make(tmp_path, cleanup)
    await dispatcher.start()
    await dispatcher.drain(0.1)
    assert await dispatcher.submit(inbound("late", "m9")) is Outcome.DRAINING
    assert await dispatcher.submit(inbound("sms", "m10"), when_draining=True) is Outcome.ACCEPTED
    assert len(await storage.inbox_pending()) == 1


def test_access_policy_rate_limit_and_allow_list() -> None:
    now = [0.0]
    config = load_config(
        data={"channels": {"sms": {"allow_from": ["+1555"], "rate_limit_per_minute": 2}}}
    )
    policy = AccessPolicy(config, clock=lambda: now[0])
    ok = InboundMessage("sms", "+1555", "+1555", "x", "1")
    assert policy.check(ok).verdict is Verdict.ALLOWED
    assert policy.check(ok).verdict is Verdict.ALLOWED
    limited = policy.check(ok)
    assert limited.verdict is Verdict.RATE_LIMITED and "too quickly" in (limited.notice or "")
    assert policy.check(ok).notice is None  # told once
    now[0] = 61
    assert policy.check(ok).verdict is Verdict.ALLOWED
    other = InboundMessage("sms", "+1666", "+1666", "x", "2")
    assert policy.check(other).verdict is Verdict.NOT_ALLOWED
    named = InboundMessage("telegram", "9", "9", "x", "3", sender_name="ada")
    open_config = AccessPolicy(
        load_config(
            data={"channels": {"telegram": {"allow_from": ["@ada"], "rate_limit_per_minute": 0}}}
        )
    )
    assert open_config.check(named).verdict is Verdict.ALLOWED


@pytest.mark.parametrize("text", ["/status", "/model", "/help", "/think", "/model nowhere/x"])
async def test_command_replies(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, text: str
) -> None:
    from bot.commands import handle_command

    runtime = AgentRuntime(
        config=load_config(),
        demo_when_unconfigured=True,
        storage=SQLiteStorage(tmp_path / "c.sqlite"),
    )
    cleanup.push_async_callback(runtime.close)
    reply = await handle_command(runtime, "s", text)
    assert reply
    assert await handle_command(runtime, "s", "not a command") is None


async def test_a_turn_that_runs_too_long_is_stopped_and_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: contextlib.AsyncExitStack
) -> None:
    from tests.fakes.models import FakeAnthropic, Hang

    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-timeout-0000")
        model.script(Hang(30))
        config = load_config(
            data={
                "agent": {"model": "anthropic/claude-sonnet-4-6", "queuing": {"turn_timeout": 0.3}}
            }
        )
        runtime = AgentRuntime(config=config, storage=SQLiteStorage(tmp_path / "t.sqlite"))
        dispatcher = owned(cleanup, Dispatcher(runtime))
        sink = Sink()
        dispatcher.register(sink)
        await dispatcher.start()
        await dispatcher.submit(inbound("slow question", "m1"))
        await wait_for(lambda: sink.sent, "the timeout notice to be sent", changed=sink.changed)
        assert sink.sent == ["Sorry, that took too long and I had to stop. Please try again."]
        await wait_for(lambda: not dispatcher.claims, "m1's claim to be released")
        assert await runtime.storage.inbox_pending() == []
        transcript = await runtime.storage.load_messages("test:c1")
        assert [m.content for m in transcript] == ["slow question"]


async def slow_dispatcher(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cleanup: contextlib.AsyncExitStack,
    model: Any,
    **queuing: Any,
) -> tuple[Dispatcher, Sink]:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-overload-0000")
    config = load_config(
        data={"agent": {"model": "anthropic/claude-sonnet-4-6", "queuing": queuing}}
    )
    runtime = AgentRuntime(config=config, storage=SQLiteStorage(tmp_path / "o.sqlite"))
    dispatcher = owned(cleanup, Dispatcher(runtime))
    sink = Sink()
    dispatcher.register(sink)
    return dispatcher, sink


async def test_typing_only_for_turns_that_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: contextlib.AsyncExitStack
) -> None:
    """Under overload, waiting chats cost no typing signals: at most the cap of chats
    show typing at any moment, each once per short turn."""
    from tests.fakes.models import FakeAnthropic, Reply

    async with FakeAnthropic() as model:
        model.default = lambda request: Reply(text="ok", delay=0.1)
        dispatcher, sink = await slow_dispatcher(
            tmp_path, monkeypatch, cleanup, model, max_concurrent_global=2
        )
        typing: set[str] = set()
        most = 0

        async def typing_signal(message: InboundMessage) -> None:
            nonlocal most
            typing.add(message.chat_id)
            most = max(most, len(typing))

        async def send_part(message: InboundMessage, part: Any) -> None:
            typing.discard(message.chat_id)
            sink.sent.append(part)

        sink.typing = typing_signal  # type: ignore[assignment, method-assign]
        sink.send_part = send_part  # type: ignore[method-assign]
        await dispatcher.start()
        for n in range(12):
            await dispatcher.submit(inbound(f"question {n}", f"m{n}", chat=f"c{n}"))
        await wait_for(lambda: len(sink.sent) == 12, "the 12 replies to be sent")
        assert most <= 2
        assert len(model.requests) == 12


async def test_a_busy_notice_once_per_waiting_group_chat_and_none_in_direct_chats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: contextlib.AsyncExitStack
) -> None:
    from tests.fakes.models import FakeAnthropic, Reply

    async with FakeAnthropic() as model:
        model.default = lambda request: Reply(text=f"answer: {request.last_user_text}", delay=0.05)
        dispatcher, sink = await slow_dispatcher(
            tmp_path, monkeypatch, cleanup, model, max_concurrent_global=1, max_backlog=2
        )
        await dispatcher.start()
        for n in range(6):
            direct = InboundMessage("test", f"dm{n}", "u1", f"direct {n}", f"d{n}")
            await dispatcher.submit(direct)
        for n in range(3):  # one group chat, three messages: one notice
            group = InboundMessage("test", "g1", f"u{n}", f"group {n}", f"g{n}", group=True)
            await dispatcher.submit(group)
        await wait_for(  # the group's reply is three parts
            lambda: len(sink.sent) >= 9, "the 9 reply parts to be sent", changed=sink.changed
        )
        assert len(sink.notices) == 1
        assert "in the queue" in sink.notices[0]
        assert sorted(sink.sent) == sorted(
            [f"answer: direct {n}" for n in range(6)] + ["answer: group 0", "group 1", "group 2"]
        )


async def test_a_turn_that_lost_its_claim_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: contextlib.AsyncExitStack
) -> None:
    """A process paused past its lease: another took the message over; the first one's
    late answer is never sent, and its late release leaves the new claim alone."""
    from tests.fakes.models import FakeAnthropic, Reply

    monkeypatch.setattr("bot.claims.CLAIM_TTL", 0.05)
    async with FakeAnthropic() as model:
        model.default = lambda request: Reply(text="late answer", delay=0.4)
        dispatcher, sink = await slow_dispatcher(tmp_path, monkeypatch, cleanup, model)
        await dispatcher.runtime.start()  # no background renewals: the lease lapses
        storage = dispatcher.runtime.storage
        await dispatcher.submit(inbound("question", "m1"))
        (item,) = await storage.inbox_pending_ids()
        await wait_for(
            lambda: storage.inbox_claim(item, "other-process#1", 30),
            "the first process's lease to lapse and another to claim m1",
        )
        await wait_for(lambda: not dispatcher.claims, "the late turn to let go of m1")
        await dispatcher.drain(1)
        assert sink.sent == []
        assert await storage.inbox_renew({item: "other-process#1"}, 30) == set()


async def test_a_fresh_claim_is_not_asked_about_again(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    """Checking a claim renewed under half a lease ago costs no storage trip."""
    renewals: list[dict[int, str]] = []

    class Counting(SQLiteStorage):
        async def inbox_renew(self, claims: Any, ttl: float) -> set[int]:
            renewals.append(dict(claims))
            return await super().inbox_renew(claims, ttl)

    config = load_config(data={})
    runtime = AgentRuntime(
        config=config, demo_when_unconfigured=True, storage=Counting(tmp_path / "f.sqlite")
    )
    dispatcher = owned(cleanup, Dispatcher(runtime))
    sink = Sink()
    dispatcher.register(sink)
    await runtime.start()
    await dispatcher.submit(inbound("hello", "m1"))
    await wait_for(
        lambda: sink.sent and not dispatcher.claims,
        "the reply to m1 to be sent and its claim released",
    )
    assert renewals == []


class Quiet(Sink):
    """A channel that, like SMS, does not show reasoning unless configured to."""

    traits = ChannelTraits(shows_reasoning=False)


@pytest.mark.parametrize(
    ("sink_class", "configured", "shown"),
    [(Sink, None, True), (Quiet, None, False), (Quiet, True, True), (Sink, False, False)],
)
async def test_reasoning_is_shown_as_each_channel_declares_unless_configured(
    tmp_path: Path,
    cleanup: contextlib.AsyncExitStack,
    sink_class: type[Sink],
    configured: bool | None,
    shown: bool,
) -> None:
    channel = {} if configured is None else {"show_reasoning": configured}
    config = load_config(data={"agent": {"thinking_mode": "on"}, "channels": {"web": channel}})
    runtime = AgentRuntime(
        config=config, demo_when_unconfigured=True, storage=SQLiteStorage(tmp_path / "d.sqlite")
    )
    dispatcher = owned(cleanup, Dispatcher(runtime))
    sink = sink_class()
    sink.name = "web"
    dispatcher.register(sink)
    await dispatcher.start()
    await dispatcher.submit(InboundMessage("web", "c1", "u1", "hello", "m1"))
    await wait_for(
        lambda: any("You said: hello" in part for part in sink.sent),
        "the answer to m1 to be sent",
        changed=sink.changed,
    )
    reasoning = [part for part in sink.sent if part.startswith("[reasoning]")]
    assert bool(reasoning) is shown


async def test_streamed_reasoning_goes_ahead_of_the_answer_only_where_shown(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    config = load_config(data={"agent": {"thinking_mode": "stream"}})
    runtime = AgentRuntime(
        config=config, demo_when_unconfigured=True, storage=SQLiteStorage(tmp_path / "d.sqlite")
    )
    dispatcher = owned(cleanup, Dispatcher(runtime))
    loud, quiet = Sink(), Quiet()
    quiet.name = "quiet"
    dispatcher.register(loud)
    dispatcher.register(quiet)
    await dispatcher.start()
    await dispatcher.submit(inbound("hello", "m1"))
    await dispatcher.submit(InboundMessage("quiet", "c1", "u1", "hello", "m2"))
    await wait_for(lambda: any("You said" in p for p in loud.sent), "the shown channel's answer")
    await wait_for(lambda: any("You said" in p for p in quiet.sent), "the quiet channel's answer")
    assert loud.sent[0].startswith("[reasoning]") and "You said" in loud.sent[-1]
    assert not any(p.startswith("[reasoning]") for p in quiet.sent)


class Gated(Sink):
    """Holds the first reply's delivery until the test lets it go, so later
    messages arrive while the chat's first turn is still running."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        await self.gate.wait()
        await super().send_part(message, part)


class Followup(Gated):
    traits = ChannelTraits(queue_mode="followup")


@pytest.mark.parametrize(
    ("sink_class", "configured", "together"),
    [
        (Gated, None, True),  # agent.queuing.mode: collect
        (Followup, None, False),  # the channel's own default
        (Followup, "collect", True),  # channels.<name>.queue_mode wins
        (Gated, "followup", False),
    ],
)
async def test_the_queue_mode_is_the_channels_unless_configured(
    tmp_path: Path,
    cleanup: contextlib.AsyncExitStack,
    sink_class: type[Gated],
    configured: str | None,
    together: bool,
) -> None:
    channel = {} if configured is None else {"queue_mode": configured}
    config = load_config(data={"channels": {"web": channel}})
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True, storage=MemoryStorage())
    dispatcher = owned(cleanup, Dispatcher(runtime))
    sink = sink_class()
    sink.name = "web"
    dispatcher.register(sink)
    await dispatcher.start()
    for n, text in enumerate(["one", "two", "three"]):
        await dispatcher.submit(InboundMessage("web", "c1", "u1", text, f"m{n}"))
    sink.gate.set()
    await wait_for(lambda: any("three" in part for part in sink.sent), "the reply to 'three'")
    answers = [part for part in sink.sent if part.startswith("You said")]
    assert answers[0] == "You said: one"
    assert len(answers) == (2 if together else 3)  # "two" and "three" in one turn, or each its own


async def test_a_turn_cut_short_is_taken_up_again_without_storing_the_message_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: contextlib.AsyncExitStack
) -> None:
    """A shutdown cancels a turn after its message went into the transcript; the next
    process answers it, and the model (and the transcript) see the question once."""
    from tests.fakes.models import FakeAnthropic, Reply

    async with FakeAnthropic() as model:
        model.default = lambda request: Reply(text="slow", delay=30)
        first, _ = await slow_dispatcher(tmp_path, monkeypatch, cleanup, model)
        await first.start()
        await first.submit(inbound("what is two and two?", "m1"))
        await wait_for(lambda: model.requests, "the first attempt to reach the model")
        await first.drain(0)  # cut short: the turn is cancelled, the message stays stored
        await first.runtime.close()
        reader = SQLiteStorage(tmp_path / "o.sqlite")
        await reader.open()
        stored = await reader.load_messages("test:c1")
        await reader.close()
        assert [m.content for m in stored] == ["what is two and two?"]

        model.default = lambda request: Reply(text="four")
        second, sink = await slow_dispatcher(tmp_path, monkeypatch, cleanup, model)
        await second.start()
        await wait_for(lambda: sink.sent, "the restarted process to answer", changed=sink.changed)
        assert sink.sent == ["four"]
        asked = [
            (m["role"], block["text"])
            for m in model.requests[-1].json["messages"]
            for block in m["content"]
        ]
        assert asked == [("user", "what is two and two?")]
        transcript = await second.runtime.storage.load_messages("test:c1")
        assert [(m.role, m.content) for m in transcript] == [
            (Role.USER, "what is two and two?"),
            (Role.ASSISTANT, "four"),
        ]
