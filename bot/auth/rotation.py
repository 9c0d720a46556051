"""Which key to use next, and how long a failing key rests.

Choice: among a provider's profiles not cooling down or disabled, the least
recently used; never-used profiles go in configured order. With ``sticky``,
a chat keeps its key while that key stays healthy.

Cooldown by reason:

- ``rate_limit``, ``overloaded``, ``timeout``: 1 min, 5 min, 25 min, then the
  cap (1 h), and never shorter than the provider's Retry-After;
- ``billing``: 5 h, doubling with each billing failure (other failures do not
  count), at most 24 h; a later, shorter rest never shortens it;
- ``auth`` (401): disabled until the key changes (its fingerprint is kept,
  never the key). A refusal that concerns one model only (a 403, or any
  refusal for a model outside the configured chain, ``shared_models``, that
  one chat picked with ``/model``) disables nothing: the key keeps serving
  the other models;
- anything else is not the key's fault and changes nothing.

A success clears the counters; counters whose last failure is over 24 h old
start again. The sync methods (``get_next_profile``, ``mark_failure``,
``mark_success``) are the plan's API and work in memory; the async ones
(``acquire``, ``report_failure``, ``report_success``) also read and write
storage, each change an atomic ``kv_update`` applied to the stored state, so
restarts keep cooldowns and processes sharing Redis share them too. A process
reads what the others stored at most once every ``REFRESH_EVERY`` seconds, not
once a turn: a key another process put to rest is seen within a second, and a
turn with a single key to choose from waits for nothing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.auth.profile import AuthProfile, ProfileStore
from bot.providers.errors import NO_KEY, FailoverReason, ProviderError
from bot.storage.base import KeyValue

REFRESH_EVERY = 1.0

log = logging.getLogger(__name__)

NAMESPACE = "auth_profiles"
RESET_AFTER = timedelta(hours=24)
MAX_STICKY = 10_000
OLDEST = datetime.min.replace(tzinfo=UTC)  # never used: before any use


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CooldownPolicy:
    backoff: tuple[float, ...] = (60.0, 300.0, 1500.0)
    max_backoff: float = 3600.0
    billing: float = 5 * 3600.0
    billing_max: float = 24 * 3600.0

    def backoff_for(self, failures: int) -> float:
        if failures <= len(self.backoff):
            seconds = self.backoff[max(failures, 1) - 1]
        else:
            seconds = self.backoff[-1] * float(5 ** (failures - len(self.backoff)))
        return min(seconds, self.max_backoff)

    def billing_for(self, failures: int) -> float:
        doubled: float = self.billing * 2.0 ** (max(failures, 1) - 1)
        return min(doubled, self.billing_max)


COOLING_REASONS = {FailoverReason.RATE_LIMIT, FailoverReason.OVERLOADED, FailoverReason.TIMEOUT}


class RotationManager:
    def __init__(
        self,
        store: ProfileStore,
        *,
        state: KeyValue | None = None,
        clock: Callable[[], datetime] = utc_now,
        policy: CooldownPolicy | None = None,
        sticky: bool = False,
        shared_models: frozenset[str] | None = None,
    ) -> None:
        self.store = store
        self.shared_models = shared_models  # provider/model refs every chat uses
        self.state = state
        self.clock = clock
        self.policy = policy or CooldownPolicy()
        self.sticky = sticky
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._lock = asyncio.Lock()
        self._loaded = False
        self._refreshed = -REFRESH_EVERY  # time.monotonic() of the last read of shared state

    # -- the plan's sync API ---------------------------------------------------

    def available(self, provider: str, now: datetime | None = None) -> list[AuthProfile]:
        if now is None:
            now = self.clock()
        ready = []
        for profile in self.store.profiles_for(provider):
            if profile.disabled_reason:
                continue
            if profile.cooldown_until is not None:
                if profile.cooldown_until > now:
                    continue
                profile.cooldown_until = None
            ready.append(profile)
        return ready

    def get_next_profile(
        self, provider: str, session_id: str | None = None, *, now: datetime | None = None
    ) -> AuthProfile:
        ready = self.available(provider, now)
        if not ready:
            raise ProviderError(
                FailoverReason.NO_PROFILE,
                f"every {provider} key is cooling down or disabled"
                if self.store.profiles_for(provider)
                else f"{NO_KEY} {provider}",
                provider=provider,
                retry_after=self.seconds_until_ready(provider),
            )
        if self.sticky and session_id is not None:
            held = self._sessions.get(session_id)
            for profile in ready:
                if profile.id == held and profile.failure_count == 0:
                    return profile
        if len(ready) == 1 and not self.sticky:
            return ready[0]  # nothing to choose
        choice = min(ready, key=lambda p: (p.last_used or OLDEST, p.order))
        if self.sticky and session_id is not None:
            self._sessions[session_id] = choice.id
            self._sessions.move_to_end(session_id)
            while len(self._sessions) > MAX_STICKY:
                self._sessions.popitem(last=False)
        return choice

    def mark_used(self, profile_id: str) -> None:
        self.store.get(profile_id).last_used = self.clock()

    def mark_failure(
        self,
        profile_id: str,
        reason: FailoverReason = FailoverReason.RATE_LIMIT,
        retry_after: float | None = None,
    ) -> None:
        self._apply_failure(self.store.get(profile_id), reason, retry_after)

    def mark_success(self, profile_id: str) -> None:
        self._apply_success(self.store.get(profile_id))

    def seconds_until_ready(self, provider: str) -> float | None:
        now = self.clock()
        times = [
            (p.cooldown_until - now).total_seconds()
            for p in self.store.profiles_for(provider)
            if p.cooldown_until is not None and not p.disabled_reason
        ]
        return max(min(times), 0.0) if times else None

    def _apply_failure(
        self, profile: AuthProfile, reason: FailoverReason, retry_after: float | None
    ) -> None:
        if reason not in COOLING_REASONS and reason not in (
            FailoverReason.BILLING,
            FailoverReason.AUTH,
        ):
            return
        now = self.clock()
        if profile.last_failure_at is not None and now - profile.last_failure_at > RESET_AFTER:
            profile.failure_count = 0
            profile.billing_failures = 0
        profile.failure_count += 1
        profile.last_failure_at = now
        if reason is FailoverReason.AUTH:
            profile.disabled_reason = "auth"
            profile.cooldown_until = None
            log.error(
                "auth profile %s (%s, key %s) was refused by the provider; it stays off "
                "until its key changes",
                profile.id,
                profile.provider,
                profile.masked_key,
            )
            return
        if reason is FailoverReason.BILLING:
            profile.billing_failures += 1
            seconds = self.policy.billing_for(profile.billing_failures)
        else:
            seconds = self.policy.backoff_for(profile.failure_count - profile.billing_failures)
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        until = now + timedelta(seconds=seconds)
        if profile.cooldown_until is not None and profile.cooldown_until > until:
            return  # resting longer already (a billing rest outlasts a rate limit)
        profile.cooldown_until = until
        log.warning(
            "auth profile %s (key %s) cooling down for %ds after %s",
            profile.id,
            profile.masked_key,
            seconds,
            reason.value,
        )

    def _apply_success(self, profile: AuthProfile) -> None:
        profile.failure_count = 0
        profile.billing_failures = 0
        profile.cooldown_until = None
        profile.last_failure_at = None

    # -- async, persisted --------------------------------------------------------

    async def load(self, state: KeyValue | None = None) -> None:
        if state is not None:
            self.state = state
        self._loaded = False
        await self._refresh()
        self._loaded = True

    async def _refresh(self) -> None:
        # Only another process can change a store this process did not write.
        if self.state is None or (self._loaded and not getattr(self.state, "shared", True)):
            return
        self._refreshed = time.monotonic()
        stored = await self.state.kv_get_all(NAMESPACE)
        for profile in self.store:
            saved = stored.get(profile.id)
            if isinstance(saved, dict):
                profile.restore(saved)

    async def _persist(self, profile: AuthProfile, change: Callable[[AuthProfile], None]) -> None:
        """Apply ``change`` to the stored state atomically, then adopt the result."""
        if self.state is None:
            change(profile)
            return

        def update(old: Any) -> Any:
            fresh = copy.copy(profile)
            if isinstance(old, dict):
                fresh.restore(old)
            change(fresh)
            return fresh.state()

        saved = await self.state.kv_update(NAMESPACE, profile.id, update)
        if isinstance(saved, dict):
            profile.restore(saved)

    async def acquire(self, provider: str, session_id: str | None = None) -> AuthProfile:
        shared = bool(getattr(self.state, "shared", False))
        fresh = time.monotonic() - self._refreshed < REFRESH_EVERY
        alone = len(self.store.profiles_for(provider)) <= 1
        if self._loaded and not self._lock.locked() and (not shared or (fresh and alone)):
            # Nothing to read or write elsewhere, so nothing to await: the choice is made
            # in one step, and no other task can come between (the lock would add nothing).
            return self._take(provider, session_id)
        async with self._lock:
            if not shared or time.monotonic() - self._refreshed >= REFRESH_EVERY:
                await self._refresh()
            profile = self._take(provider, session_id)
            if shared and not alone:
                # Other processes choose by last_used too; alone, memory is enough.
                stamp = profile.last_used

                def used(p: AuthProfile) -> None:
                    p.last_used = stamp

                await self._persist(profile, used)
            return profile

    def _take(self, provider: str, session_id: str | None) -> AuthProfile:
        now = self.clock()
        profile = self.get_next_profile(provider, session_id, now=now)
        profile.last_used = now
        return profile

    def model_only(self, profile: AuthProfile, error: ProviderError) -> bool:
        """Whether an auth refusal concerns the model asked for, not the key."""
        if error.reason is not FailoverReason.AUTH:
            return False
        if error.status_code == 403:
            return True
        ref = f"{profile.provider}/{error.model}"
        return (
            self.shared_models is not None and bool(error.model) and ref not in self.shared_models
        )

    async def report_failure(self, profile_id: str, error: ProviderError) -> None:
        profile = self.store.get(profile_id)
        if self.model_only(profile, error):
            log.warning(
                "auth profile %s (key %s) was refused for model %s only; it stays on for the "
                "other models",
                profile.id,
                profile.masked_key,
                error.model,
            )
            return
        async with self._lock:
            await self._persist(
                profile, lambda p: self._apply_failure(p, error.reason, error.retry_after)
            )

    async def report_success(self, profile_id: str) -> None:
        profile = self.store.get(profile_id)
        if profile.failure_count == 0 and profile.cooldown_until is None:
            return
        async with self._lock:
            await self._persist(profile, self._apply_success)

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        rows = []
        for profile in self.store:
            if profile.disabled_reason:
                state = f"disabled: {profile.disabled_reason} (key refused; change the key)"
            elif profile.cooldown_until is not None and profile.cooldown_until > now:
                state = "cooling until " + profile.cooldown_until.strftime("%Y-%m-%d %H:%M:%S UTC")
            else:
                state = "ready"
            rows.append(
                {
                    "id": profile.id,
                    "provider": profile.provider,
                    "key": profile.masked_key,
                    "state": state,
                    "failures": profile.failure_count,
                }
            )
        for profile_id, variable in self.store.missing:
            rows.append(
                {
                    "id": profile_id,
                    "provider": "?",
                    "key": "(not set)",
                    "state": f"absent: {variable} is not set",
                    "failures": 0,
                }
            )
        return rows
