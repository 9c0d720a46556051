"""Auth profiles: one API key of one provider, and the set of them.

Profiles come from ``agent.auth_profiles`` (each names the environment
variable holding its key) or, when none are configured, from each provider
kind's default variable (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ...). A
profile whose variable is unset is absent (reported by ``chatlane check``), not an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class AuthProfile:
    """One key. ``repr`` and ``masked_key`` never show more than its last four characters."""

    id: str
    provider: str
    api_key: str = field(repr=False)
    last_used: datetime | None = None
    failure_count: int = 0
    cooldown_until: datetime | None = None
    disabled_reason: str | None = None
    last_failure_at: datetime | None = None
    order: int = 0
    billing_failures: int = 0  # of failure_count, those for billing (they rest far longer)

    @property
    def masked_key(self) -> str:
        if len(self.api_key) <= 8:
            return "****"
        return f"****{self.api_key[-4:]}"

    @property
    def fingerprint(self) -> str:
        """A stable digest of the key, stored instead of the key to notice it changed."""
        return hashlib.sha256(self.api_key.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"AuthProfile(id={self.id!r}, provider={self.provider!r}, key={self.masked_key}, "
            f"failure_count={self.failure_count}, cooldown_until={self.cooldown_until!r}, "
            f"disabled_reason={self.disabled_reason!r})"
        )

    def state(self) -> dict[str, Any]:
        return {
            "last_used": _iso(self.last_used),
            "failure_count": self.failure_count,
            "cooldown_until": _iso(self.cooldown_until),
            "disabled_reason": self.disabled_reason,
            "last_failure_at": _iso(self.last_failure_at),
            "billing_failures": self.billing_failures,
            "fingerprint": self.fingerprint,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("fingerprint") not in (None, self.fingerprint):
            return  # the key changed: a fresh start, disabled or not
        self.last_used = _parse(state.get("last_used"))
        self.failure_count = int(state.get("failure_count") or 0)
        self.cooldown_until = _parse(state.get("cooldown_until"))
        self.disabled_reason = state.get("disabled_reason")
        self.last_failure_at = _parse(state.get("last_failure_at"))
        self.billing_failures = int(state.get("billing_failures") or 0)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


class ProfileStore:
    """The profiles, in configured order; several per provider."""

    def __init__(self, profiles: Iterable[AuthProfile] = ()) -> None:
        self._profiles: dict[str, AuthProfile] = {}
        self.missing: list[tuple[str, str]] = []  # (profile id, variable) whose key is unset
        for index, profile in enumerate(profiles):
            profile.order = index
            self._profiles[profile.id] = profile

    @classmethod
    def from_config(
        cls,
        entries: Iterable[Mapping[str, str]],
        env: Mapping[str, str],
        *,
        default_env: Mapping[str, str],
    ) -> ProfileStore:
        """Profiles from config ``entries``; with none, one per ``default_env`` item
        (provider -> variable) whose variable is set."""
        entries = list(entries)
        profiles = []
        missing = []
        if not entries:
            entries = [
                {"id": f"{provider}-default", "provider": provider, "api_key_env": var}
                for provider, var in default_env.items()
            ]
            explicit = False
        else:
            explicit = True
        for entry in entries:
            key = env.get(entry["api_key_env"], "")
            if key:
                profiles.append(AuthProfile(entry["id"], entry["provider"], key))
            elif explicit:
                missing.append((entry["id"], entry["api_key_env"]))
        store = cls(profiles)
        store.missing = missing
        return store

    def get(self, profile_id: str) -> AuthProfile:
        try:
            return self._profiles[profile_id]
        except KeyError:
            raise KeyError(f"no auth profile {profile_id!r}") from None

    def profiles_for(self, provider: str) -> list[AuthProfile]:
        return [p for p in self._profiles.values() if p.provider == provider]

    def __iter__(self) -> Any:
        return iter(self._profiles.values())

    def __len__(self) -> int:
        return len(self._profiles)
