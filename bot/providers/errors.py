"""The one error taxonomy for model calls.

::

    ProviderError            a single model call failed; ``reason`` says why
    └── FailoverError        every candidate (model x auth profile) failed;
                             ``attempts`` holds each ProviderError in order

``FailoverReason`` is shared by rotation (how long a key cools down), the
fallback chain (whether to try the next model) and the message a user sees.
"""

from __future__ import annotations

from enum import Enum


class FailoverReason(str, Enum):
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    AUTH = "auth"
    BILLING = "billing"
    NOT_FOUND = "not_found"
    CONTEXT_OVERFLOW = "context_overflow"
    BAD_REQUEST = "bad_request"
    REFUSAL = "refusal"
    NO_PROFILE = "no_profile"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


# Reasons that move on to the next auth profile or model.
FAILOVER_REASONS = frozenset(
    {
        FailoverReason.RATE_LIMIT,
        FailoverReason.OVERLOADED,
        FailoverReason.SERVER,
        FailoverReason.TIMEOUT,
        FailoverReason.CONNECTION,
        FailoverReason.AUTH,
        FailoverReason.BILLING,
        FailoverReason.NOT_FOUND,
        FailoverReason.NO_PROFILE,
    }
)

# Reasons that say something about the key rather than the model.
PROFILE_REASONS = frozenset(
    {
        FailoverReason.RATE_LIMIT,
        FailoverReason.OVERLOADED,
        FailoverReason.TIMEOUT,
        FailoverReason.AUTH,
        FailoverReason.BILLING,
    }
)


class ProviderError(Exception):
    """A classified failure of one model call.

    ``retry_after`` is the provider's own hint in seconds, when it gave one.
    ``message`` never holds a secret: providers build it from the status and
    the error type, not from request headers.
    """

    def __init__(
        self,
        reason: FailoverReason,
        message: str = "",
        *,
        provider: str = "",
        model: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
        profile_id: str | None = None,
    ) -> None:
        super().__init__(message or reason.value)
        self.reason = reason
        self.message = message or reason.value
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.retry_after = retry_after
        self.profile_id = profile_id

    @property
    def should_failover(self) -> bool:
        return self.reason in FAILOVER_REASONS

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(reason={self.reason.value!r}, model={self.model!r}, "
            f"status_code={self.status_code!r}, retry_after={self.retry_after!r})"
        )


class FailoverError(ProviderError):
    """Raised when the whole fallback chain is exhausted.

    ``reason`` is that of the last attempt; ``retry_after`` the soonest time at
    which any candidate may work again (None when unknown).
    """

    def __init__(
        self,
        attempts: list[ProviderError],
        message: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        # The last real failure says more than "every key is resting".
        real = [a for a in attempts if a.reason is not FailoverReason.NO_PROFILE]
        last = (real or attempts)[-1] if attempts else None
        super().__init__(
            last.reason if last else FailoverReason.UNKNOWN,
            message or (last.message if last else "no model available"),
            provider=last.provider if last else "",
            model=last.model if last else "",
            status_code=last.status_code if last else None,
            retry_after=retry_after,
        )
        self.attempts = attempts


NO_KEY = "no API key is set for"  # how a provider with no key at all is named


def user_message(error: ProviderError) -> str:
    """One plain sentence for the person chatting: what failed and when to retry."""
    wait = error.retry_after
    when = "Please try again in a minute."
    if wait is not None and wait > 0:
        if wait < 90:
            when = f"Please try again in about {max(1, round(wait))} seconds."
        elif wait < 5400:
            when = f"Please try again in about {round(wait / 60)} minutes."
        else:
            when = f"Please try again in about {round(wait / 3600)} hours."
    reason = error.reason
    if reason is FailoverReason.CONTEXT_OVERFLOW:
        return "This conversation has grown too long for the model. Send /new to start afresh."
    if reason is FailoverReason.BAD_REQUEST:
        return "The model could not accept that request. Try rephrasing, or send /new."
    if reason is FailoverReason.REFUSAL:
        return "The model declined to answer that."
    if reason is FailoverReason.NO_PROFILE and error.message.startswith(NO_KEY):
        return (
            f"The bot cannot reach its AI provider: {error.message}. The operator needs to set one."
        )
    if reason is FailoverReason.NO_PROFILE and wait is not None:
        return f"The bot's API keys are all resting after errors. {when}"
    if reason in (FailoverReason.AUTH, FailoverReason.BILLING, FailoverReason.NO_PROFILE):
        return (
            "The bot cannot reach its AI provider right now (its API keys were refused). "
            "The operator has been told in the logs."
        )
    if reason is FailoverReason.NOT_FOUND:
        return "The configured model was not found at the provider. The operator needs to fix it."
    if reason is FailoverReason.RATE_LIMIT:
        return f"The AI provider is rate-limiting this bot. {when}"
    if reason is FailoverReason.OVERLOADED:
        return f"The AI provider is overloaded. {when}"
    if reason in (FailoverReason.TIMEOUT, FailoverReason.CONNECTION):
        return f"The AI provider did not respond. {when}"
    return f"The AI provider had an error. {when}"
