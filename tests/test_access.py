"""The access policy: allow lists, the per-sender rate limit, and memory that does not
grow with the number of senders ever seen."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from bot.access import MAX_REFUSED, MAX_SENDERS, AccessPolicy, RedisRateCounter, Verdict
from bot.channel import Reply
from bot.channel import Sink as BaseSink
from bot.config import load_config
from bot.dispatch import Dispatcher, Outcome
from bot.inbound import InboundMessage
from bot.runtime import AgentRuntime
from bot.storage import SQLiteStorage
from tests.helpers import wait_for


def message(sender: str, channel: str = "sms") -> InboundMessage:
    return InboundMessage(channel, sender, sender, "hi", f"m-{sender}")


def limited(per_minute: int, allow_from: list[str] | None = None) -> AccessPolicy:
    channel = {"rate_limit_per_minute": per_minute, "allow_from": allow_from or []}
    return AccessPolicy(load_config(data={"channels": {"sms": channel}}), clock=lambda: now[0])


now = [0.0]


def test_quiet_senders_are_forgotten() -> None:
    now[0] = 0.0
    policy = limited(5)
    for n in range(20_000):  # one sender every 10 ms: about 6,000 in any minute
        now[0] += 0.01
        assert policy.check(message(f"+1{n}")).verdict is Verdict.ALLOWED
    assert policy.tracked <= 6_001
    now[0] += 61
    policy.check(message("+late"))
    assert policy.tracked == 1


def test_senders_at_the_same_moment_are_capped() -> None:
    now[0] = 0.0
    policy = limited(5)
    for n in range(MAX_SENDERS + 5_000):
        policy.check(message(f"+1{n}"))
    assert policy.tracked <= MAX_SENDERS


def test_a_limited_sender_stays_limited_while_others_come_and_go() -> None:
    now[0] = 0.0
    policy = limited(2)
    spammer = message("+1999")
    assert policy.check(spammer).verdict is Verdict.ALLOWED
    assert policy.check(spammer).verdict is Verdict.ALLOWED
    for n in range(5_000):  # within the same minute
        now[0] += 0.01
        policy.check(message(f"+2{n}"))
    first = policy.check(spammer)
    assert first.verdict is Verdict.RATE_LIMITED and first.notice
    assert policy.check(spammer).notice is None  # told once
    now[0] += 61
    assert policy.check(spammer).verdict is Verdict.ALLOWED


def test_refused_senders_are_told_once_and_remembered_within_a_bound() -> None:
    now[0] = 0.0
    policy = limited(5, allow_from=["+1555"])
    stranger = message("+1666")
    assert policy.check(stranger).notice == "Sorry, this bot is private."
    for n in range(MAX_REFUSED + 2_000):
        policy.check(message(f"+3{n}"))
        if n % 1_000 == 0:  # a stranger who keeps writing stays remembered
            assert policy.check(stranger).notice is None
    assert policy.tracked <= MAX_REFUSED
    assert policy.check(stranger).verdict is Verdict.NOT_ALLOWED


# -- counted after dedupe, shared through Redis, the same sentence for a waiting sender --


class _Sink(BaseSink):
    name = "sms"

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.changed = asyncio.Event()

    def render(self, reply: Reply) -> list[Any]:
        return [reply.markdown]

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        return None

    async def notify(self, message: InboundMessage, text: str) -> None:
        self.notices.append(text)
        self.changed.set()


def _dispatcher(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, env: dict[str, str] | None = None
) -> tuple[Dispatcher, _Sink]:
    config = load_config(data={"channels": {"sms": {"rate_limit_per_minute": 2}}})
    runtime = AgentRuntime(
        config=config,
        demo_when_unconfigured=True,
        storage=SQLiteStorage(tmp_path / "a.sqlite"),
        env=env or {},
    )
    dispatcher = Dispatcher(runtime, process=False)
    cleanup.push_async_callback(runtime.close)
    cleanup.push_async_callback(dispatcher.drain, 0.1)
    sink = _Sink()
    dispatcher.register(sink)
    return dispatcher, sink


async def test_redeliveries_do_not_count_against_the_limit(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, _ = _dispatcher(tmp_path, cleanup)
    await dispatcher.start()
    first = InboundMessage("sms", "+1", "+1", "hi", "SM1")
    outcomes = [await dispatcher.submit(first) for _ in range(4)]
    assert outcomes == [Outcome.ACCEPTED, *[Outcome.DUPLICATE] * 3]
    second = InboundMessage("sms", "+1", "+1", "again", "SM2")
    assert await dispatcher.submit(second) is Outcome.ACCEPTED
    third = InboundMessage("sms", "+1", "+1", "third", "SM3")
    assert await dispatcher.submit(third) is Outcome.REFUSED
    assert len(await dispatcher.storage.inbox_pending_ids()) == 2  # the refused one is closed


async def test_a_sender_waiting_on_the_request_is_told_every_time(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, sink = _dispatcher(tmp_path, cleanup)
    await dispatcher.start()
    for n in range(4):
        message = InboundMessage("sms", "+1", "+1", "hi", f"SM{n}")
        await dispatcher.submit(message, answer_here=True)
    await wait_for(lambda: len(sink.notices) == 2, "both refusals told", changed=sink.changed)
    assert all("too quickly" in notice for notice in sink.notices)


async def test_the_limit_holds_across_processes_through_redis(
    redis_server: str, redis_prefix: str, tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    from redis import asyncio as aioredis

    client = aioredis.from_url(redis_server)
    cleanup.push_async_callback(client.aclose)
    config = load_config(data={"channels": {"sms": {"rate_limit_per_minute": 3}}})
    one, two = (
        AccessPolicy(config, counter=RedisRateCounter(client, prefix=redis_prefix))
        for _ in range(2)
    )
    ada = message("+1555")
    verdicts = [await policy.admit(ada) for policy in (one, two, one, two)]
    assert [v.verdict for v in verdicts] == [Verdict.ALLOWED] * 3 + [Verdict.RATE_LIMITED]
    assert verdicts[-1].notice and "too quickly" in verdicts[-1].notice
    again = await one.admit(ada)  # told once, whichever process refuses next
    assert again.verdict is Verdict.RATE_LIMITED and again.notice is None and again.reason
    assert (await two.admit(message("+1666"))).verdict is Verdict.ALLOWED


async def test_the_dispatcher_counts_in_redis_when_redis_url_is_set(
    redis_server: str, tmp_path: Path, cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, _ = _dispatcher(tmp_path, cleanup, {"REDIS_URL": redis_server})
    await dispatcher.start()
    assert isinstance(dispatcher.access.counter, RedisRateCounter)
