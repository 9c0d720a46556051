"""Auth profiles and rotation: the plan's example, cooldown timing, persistence, concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.auth import AuthProfile, CooldownPolicy, ProfileStore, RotationManager
from bot.providers.errors import FailoverReason, ProviderError
from bot.storage import MemoryStorage, SQLiteStorage


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def two_profiles() -> ProfileStore:
    return ProfileStore(
        [
            AuthProfile("profile-1", "anthropic", "sk-ant-one-1111"),
            AuthProfile("profile-2", "anthropic", "sk-ant-two-2222"),
        ]
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(clock: Clock) -> RotationManager:
    return RotationManager(two_profiles(), clock=clock)


def test_profile_rotation_on_failure(manager: RotationManager) -> None:
    manager.mark_failure("profile-1")
    next_profile = manager.get_next_profile("anthropic")
    assert next_profile.id != "profile-1"
    assert next_profile.cooldown_until is None


def test_configured_order_then_least_recently_used(manager: RotationManager, clock: Clock) -> None:
    assert manager.get_next_profile("anthropic").id == "profile-1"
    manager.mark_used("profile-1")
    clock.advance(1)
    assert manager.get_next_profile("anthropic").id == "profile-2"
    manager.mark_used("profile-2")
    clock.advance(1)
    assert manager.get_next_profile("anthropic").id == "profile-1"


def test_backoff_schedule_and_cap(manager: RotationManager, clock: Clock) -> None:
    expected = [60, 300, 1500, 3600, 3600]
    for seconds in expected:
        manager.mark_failure("profile-1", FailoverReason.RATE_LIMIT)
        profile = manager.store.get("profile-1")
        assert profile.cooldown_until == clock.now + timedelta(seconds=seconds)
        clock.advance(seconds + 1)
    assert manager.get_next_profile("anthropic").id == "profile-1"


def test_retry_after_longer_than_backoff_wins(manager: RotationManager, clock: Clock) -> None:
    manager.mark_failure("profile-1", FailoverReason.RATE_LIMIT, retry_after=600)
    assert manager.store.get("profile-1").cooldown_until == clock.now + timedelta(seconds=600)
    manager.mark_failure("profile-2", FailoverReason.OVERLOADED, retry_after=5)
    assert manager.store.get("profile-2").cooldown_until == clock.now + timedelta(seconds=60)


def test_billing_doubles_to_a_day(manager: RotationManager, clock: Clock) -> None:
    hours = []
    for _ in range(4):
        manager.mark_failure("profile-1", FailoverReason.BILLING)
        until = manager.store.get("profile-1").cooldown_until
        assert until is not None
        hours.append((until - clock.now).total_seconds() / 3600)
        clock.advance(60)
    assert hours == [5, 10, 20, 24]


def test_auth_disables_until_key_changes(clock: Clock) -> None:
    storage = MemoryStorage()

    async def scenario() -> None:
        manager = RotationManager(two_profiles(), state=storage, clock=clock)
        await manager.load()
        error = ProviderError(FailoverReason.AUTH, "401")
        await manager.report_failure("profile-1", error)
        clock.advance(10 * 24 * 3600)
        assert [p.id for p in manager.available("anthropic")] == ["profile-2"]
        assert "disabled" in manager.status()[0]["state"]
        same_key = RotationManager(two_profiles(), state=storage, clock=clock)
        await same_key.load()
        assert [p.id for p in same_key.available("anthropic")] == ["profile-2"]
        new_key = ProfileStore(
            [
                AuthProfile("profile-1", "anthropic", "sk-ant-NEW-9999"),
                AuthProfile("profile-2", "anthropic", "sk-ant-two-2222"),
            ]
        )
        rotated = RotationManager(new_key, state=storage, clock=clock)
        await rotated.load()
        assert [p.id for p in rotated.available("anthropic")] == ["profile-1", "profile-2"]

    asyncio.run(scenario())


def test_other_reasons_do_not_cool_the_key(manager: RotationManager) -> None:
    for reason in (FailoverReason.SERVER, FailoverReason.CONNECTION, FailoverReason.NOT_FOUND):
        manager.mark_failure("profile-1", reason)
    assert manager.store.get("profile-1").cooldown_until is None


def test_success_clears_and_counters_reset_after_a_day(
    manager: RotationManager, clock: Clock
) -> None:
    manager.mark_failure("profile-1")
    manager.mark_failure("profile-1")
    manager.mark_success("profile-1")
    profile = manager.store.get("profile-1")
    assert profile.failure_count == 0 and profile.cooldown_until is None
    manager.mark_failure("profile-1")
    clock.advance(25 * 3600)
    manager.mark_failure("profile-1")
    assert profile.failure_count == 1
    assert profile.cooldown_until == clock.now + timedelta(seconds=60)


def test_all_cooling_raises_with_retry_after(manager: RotationManager, clock: Clock) -> None:
    manager.mark_failure("profile-1", retry_after=120)
    manager.mark_failure("profile-2", retry_after=30)
    with pytest.raises(ProviderError) as info:
        manager.get_next_profile("anthropic")
    assert info.value.reason is FailoverReason.NO_PROFILE
    assert info.value.retry_after == 60
    with pytest.raises(ProviderError, match="no API key"):
        manager.get_next_profile("openai")


def test_sticky_sessions(clock: Clock) -> None:
    manager = RotationManager(two_profiles(), clock=clock, sticky=True)
    first = manager.get_next_profile("anthropic", "chat-a")
    manager.mark_used(first.id)
    clock.advance(1)
    assert manager.get_next_profile("anthropic", "chat-a").id == first.id
    assert manager.get_next_profile("anthropic", "chat-b").id != first.id


def test_repr_and_status_hide_keys(manager: RotationManager) -> None:
    profile = manager.store.get("profile-1")
    assert "sk-ant-one-1111" not in repr(profile)
    assert profile.masked_key == "****1111"
    assert "sk-ant" not in str(manager.status())


DEFAULT_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


def test_from_config_and_defaults() -> None:
    env = {"K1": "key-one-aaaa", "ANTHROPIC_API_KEY": "sk-default-bbbb"}
    configured = ProfileStore.from_config(
        [
            {"id": "main", "provider": "anthropic", "api_key_env": "K1"},
            {"id": "backup", "provider": "anthropic", "api_key_env": "K2"},
        ],
        env,
        default_env=DEFAULT_ENV,
    )
    assert [p.id for p in configured.profiles_for("anthropic")] == ["main"]
    assert configured.missing == [("backup", "K2")]
    defaults = ProfileStore.from_config([], env, default_env=DEFAULT_ENV)
    assert [p.id for p in defaults] == ["anthropic-default"]
    assert defaults.missing == []  # an unset default variable is no problem


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_restart_keeps_cooldowns(backend: str, tmp_path: Path, clock: Clock) -> None:
    storage = MemoryStorage() if backend == "memory" else SQLiteStorage(tmp_path / "s.db")
    await storage.open()
    manager = RotationManager(two_profiles(), state=storage, clock=clock)
    await manager.load()
    await manager.report_failure("profile-1", ProviderError(FailoverReason.RATE_LIMIT, "429"))
    if backend == "sqlite":
        await storage.close()
        storage = SQLiteStorage(tmp_path / "s.db")
        await storage.open()
    again = RotationManager(two_profiles(), state=storage, clock=clock)
    await again.load()
    assert (await again.acquire("anthropic")).id == "profile-2"
    assert again.store.get("profile-1").cooldown_until == clock.now + timedelta(seconds=60)
    await storage.close()


async def test_concurrent_failures_do_not_corrupt(clock: Clock) -> None:
    storage = MemoryStorage()
    profiles = ProfileStore(
        [AuthProfile(f"p{i}", "anthropic", f"sk-key-number-{i:04d}") for i in range(4)]
    )
    manager = RotationManager(profiles, state=storage, clock=clock)
    await manager.load()
    error = ProviderError(FailoverReason.RATE_LIMIT, "429")
    await asyncio.gather(*(manager.report_failure("p0", error) for _ in range(3)))
    assert manager.store.get("p0").failure_count == 3
    stored = await storage.kv_get("auth_profiles", "p0")
    assert stored["failure_count"] == 3
    picked = await asyncio.gather(*(manager.acquire("anthropic") for _ in range(3)))
    assert sorted(p.id for p in picked) == ["p1", "p2", "p3"]


def test_policy_is_configurable() -> None:
    policy = CooldownPolicy(backoff=(1.0, 2.0), max_backoff=3.0)
    assert [policy.backoff_for(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]


async def test_shared_state_is_read_at_most_once_a_second_for_a_single_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Redis (shared storage) a turn does not wait on a storage read for its key;
    a rest another process stored is seen once a second has passed."""
    now = [1000.0]
    monkeypatch.setattr("bot.auth.rotation.time.monotonic", lambda: now[0])
    shared = MemoryStorage()
    shared.shared = True
    reads = 0
    read = shared.kv_get_all

    async def counting(namespace: str) -> dict[str, object]:
        nonlocal reads
        reads += 1
        return await read(namespace)

    shared.kv_get_all = counting  # type: ignore[method-assign]
    one = ProfileStore([AuthProfile("only", "anthropic", "sk-ant-only-0000")])
    mine = RotationManager(one, state=shared)
    await mine.load()
    for _ in range(50):
        assert (await mine.acquire("anthropic")).id == "only"
    assert reads == 1
    elsewhere = RotationManager(
        ProfileStore([AuthProfile("only", "anthropic", "sk-ant-only-0000")]), state=shared
    )
    await elsewhere.load()
    await elsewhere.report_failure("only", ProviderError(FailoverReason.RATE_LIMIT, "429"))
    now[0] += 1.5
    with pytest.raises(ProviderError, match="cooling down"):
        await mine.acquire("anthropic")
    assert reads == 3
