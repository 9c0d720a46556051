"""The access policy: allow lists, the per-sender rate limit, and memory that does not
grow with the number of senders ever seen."""

from __future__ import annotations

from bot.access import MAX_REFUSED, MAX_SENDERS, AccessPolicy, Verdict
from bot.config import load_config
from bot.inbound import InboundMessage


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
