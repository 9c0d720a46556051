"""What every provider's error classification shares: HTTP errors -> ``ProviderError``.

Each provider kind classifies its own SDK's exceptions (``ProviderKind.classify``)
and hands the generic part to ``classify_http_error``, with the SDK's timeout and
connection exception classes: no SDK is imported here.

Classification reads the status code, the error ``type``/``code`` from the
body, and the wording where the status says little: OpenAI-compatible
gateways send 400 or 500 for rate limits, billing, bad keys and context
overflow alike, and Anthropic reports an exhausted credit balance as a 400
``invalid_request_error``. Errors raised inside a stream arrive with ``status_code == 200``
(Anthropic) or without a status (OpenAI), so the body decides there. The body
vocabulary below holds both APIs' words: OpenAI-compatible servers and proxies
in front of Claude mix them. Messages are built from the status and the
server's own message; request headers (where the key lives) are never read.
"""

from __future__ import annotations

import email.utils
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from bot.providers.errors import FailoverReason, ProviderError

_OVERFLOW = re.compile(
    r"prompt is too long|context_length_exceeded|maximum context length|too many tokens"
    r"|input is too long|exceeds? (?:the |your |model'?s? )?context(?: window| length)?"
    r"|context (?:window|length) (?:exceeded|is exceeded|limit)|request too large",
)
# Wordings that name the cause when the status is generic (400, 422, 500 or none).
_WORDINGS: tuple[tuple[re.Pattern[str], FailoverReason], ...] = (
    (
        re.compile(
            r"credit balance|insufficient (?:credit|balance|funds|quota)|billing"
            r"|exceeded your current quota|payment required|out of credits?"
        ),
        FailoverReason.BILLING,
    ),
    (
        re.compile(r"rate.?limit|too many requests|requests per (?:minute|second|day)"),
        FailoverReason.RATE_LIMIT,
    ),
    (
        re.compile(
            r"invalid (?:x-)?api.?key|incorrect api key|api key (?:is )?(?:invalid|not valid)"
            r"|unauthori[sz]ed|authentication (?:failed|error)"
        ),
        FailoverReason.AUTH,
    ),
    (re.compile(r"overloaded|temporarily unavailable"), FailoverReason.OVERLOADED),
)
_GENERIC = frozenset({None, 200, 400, 422, 500})
# A 402 for a spend or usage cap that lifts soon is a rate limit, not an empty account.
_SOON = re.compile(
    r"(?:spend|spending|usage|budget) (?:limit|cap)|per (?:minute|hour|day)|resets? (?:in|at)"
    r"|try again in"
)
SOON_SECONDS = 3600.0

# Transport failures an SDK lets through unwrapped while a stream is read (a reset
# connection, a read timeout): by class name, so that no HTTP library is imported here.
_TIMEOUT_NAMES = frozenset({"TimeoutException", "ReadTimeout", "ServerTimeoutError"})
_TRANSPORT_NAMES = frozenset(
    {"TransportError", "NetworkError", "RemoteProtocolError", "ProtocolError", "ClientError"}
)


_HTTP_LIBRARIES = ("httpx", "httpx2")


def transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP libraries' transport error classes (httpx's and its successor httpx2's,
    those imported), for a provider's ``except`` around a stream."""
    found = (sys.modules.get(name) for name in _HTTP_LIBRARIES)
    return tuple(m.TransportError for m in found if m is not None and hasattr(m, "TransportError"))


def stream_failures() -> tuple[type[BaseException], ...]:
    """What a model stream may fail with beyond its SDK's own errors: sockets, bad bytes,
    and the HTTP library's transport errors (a reset mid-stream too)."""
    return (OSError, ValueError, *transport_errors())


def _transport_reason(exc: BaseException) -> FailoverReason | None:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _TIMEOUT_NAMES:
        return FailoverReason.TIMEOUT
    if names & _TRANSPORT_NAMES:
        return FailoverReason.CONNECTION
    return None


def _cause_reason(exc: BaseException) -> FailoverReason | None:
    """The transport failure at the bottom of an SDK error's ``__cause__`` chain, when one
    is named there: what really happened, whatever class the layers above mapped it to
    (the openai SDK's aiohttp transport raises a refused connection as a connect timeout)."""
    found: FailoverReason | None = None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        found = _transport_reason(cause) or found
        cause = cause.__cause__
    return found


BODY_TYPES: Mapping[str, FailoverReason] = {
    "rate_limit_error": FailoverReason.RATE_LIMIT,
    "overloaded_error": FailoverReason.OVERLOADED,
    "api_error": FailoverReason.SERVER,
    "internal_server_error": FailoverReason.SERVER,
    "server_error": FailoverReason.SERVER,
    "authentication_error": FailoverReason.AUTH,
    "permission_error": FailoverReason.AUTH,
    "billing_error": FailoverReason.BILLING,
    "insufficient_quota": FailoverReason.BILLING,
    "not_found_error": FailoverReason.NOT_FOUND,
    "model_not_found": FailoverReason.NOT_FOUND,
    "request_too_large": FailoverReason.CONTEXT_OVERFLOW,
    "context_length_exceeded": FailoverReason.CONTEXT_OVERFLOW,
    "invalid_request_error": FailoverReason.BAD_REQUEST,
    "timeout_error": FailoverReason.TIMEOUT,
}

# Body types that say more than the status code does (a 429 for an exhausted quota).
_DECISIVE_TYPES = frozenset(
    {"billing_error", "insufficient_quota", "overloaded_error", "request_too_large"}
)


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):  # neither seconds nor a date: no hint
        return None
    return max(parsed.timestamp() - time.time(), 0.0)


def reason_for_status(status: int, text: str = "") -> FailoverReason:
    """The reason an HTTP status gives; ``text`` tells context overflow from a bad request."""
    if status == 429:
        return FailoverReason.RATE_LIMIT
    if status == 402:
        return FailoverReason.BILLING
    if status == 499:  # the client closed the request: the gateway's name for a timeout
        return FailoverReason.TIMEOUT
    if status in (401, 403):
        return FailoverReason.AUTH
    if status == 404:
        return FailoverReason.NOT_FOUND
    if status == 413:
        return FailoverReason.CONTEXT_OVERFLOW
    if status in (408, 504):
        return FailoverReason.TIMEOUT
    if status in (503, 529):
        return FailoverReason.OVERLOADED
    if status >= 500:
        return FailoverReason.SERVER
    if status in (400, 422) and _overflow(text):
        return FailoverReason.CONTEXT_OVERFLOW
    if 400 <= status < 500:
        return FailoverReason.BAD_REQUEST
    return FailoverReason.UNKNOWN


def _overflow(text: str) -> bool:
    lowered = text.lower()
    if "too small" in lowered:  # "context window too small" is a setting, not this prompt
        return False
    return _OVERFLOW.search(lowered) is not None


def _worded(text: str) -> FailoverReason | None:
    lowered = text.lower()
    for pattern, reason in _WORDINGS:
        if pattern.search(lowered):
            return reason
    return FailoverReason.CONTEXT_OVERFLOW if _overflow(text) else None


def _body_error(body: object) -> tuple[str | None, str | None, str]:
    """(type, code, message) from an error body of either API."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            kind = error.get("type")
            code = error.get("code")
            message = error.get("message") or ""
            return (
                kind if isinstance(kind, str) else None,
                code if isinstance(code, str) else None,
                str(message),
            )
    return None, None, ""


def _reason(
    status: int | None, kind: str, code: str, message: str, retry_after: float | None = None
) -> FailoverReason:
    """``kind`` and ``code`` are the body's error type and code ("" when absent)."""
    if kind in _DECISIVE_TYPES:
        return BODY_TYPES[kind]
    if code in BODY_TYPES and code != "invalid_request_error":
        return BODY_TYPES[code]
    if status == 402 and (
        _SOON.search(message.lower()) or (retry_after is not None and retry_after < SOON_SECONDS)
    ):
        return FailoverReason.RATE_LIMIT
    if status in _GENERIC and BODY_TYPES.get(kind) in (
        None,
        FailoverReason.BAD_REQUEST,
        FailoverReason.SERVER,
    ):
        worded = _worded(message)
        if worded is not None:
            return worded
    if status is not None and status != 200:
        reason = reason_for_status(status, message)
        if reason is FailoverReason.BAD_REQUEST and kind in BODY_TYPES:
            reason = BODY_TYPES[kind]
        return reason
    if kind in BODY_TYPES:
        reason = BODY_TYPES[kind]
        if reason is FailoverReason.BAD_REQUEST and _overflow(message):
            reason = FailoverReason.CONTEXT_OVERFLOW
        return reason
    if _overflow(message):
        return FailoverReason.CONTEXT_OVERFLOW
    return FailoverReason.SERVER


def classify_http_error(
    exc: BaseException,
    *,
    provider: str = "",
    model: str = "",
    timeout_errors: tuple[type[BaseException], ...] = (),
    connection_errors: tuple[type[BaseException], ...] = (),
) -> ProviderError:
    """Classify an SDK's HTTP error (``status_code``, ``body``, ``response`` attributes read
    where present) or a stray network error. ``timeout_errors`` and ``connection_errors``
    are the SDK's own classes for those (its timeout class first when it subclasses the
    connection one)."""
    if isinstance(exc, ProviderError):
        return exc
    transport = _cause_reason(exc)
    if transport is None and isinstance(exc, (*timeout_errors, TimeoutError)):
        return ProviderError(
            FailoverReason.TIMEOUT, "the request timed out", provider=provider, model=model
        )
    if transport is FailoverReason.TIMEOUT:
        return ProviderError(
            FailoverReason.TIMEOUT, "the provider stopped answering", provider=provider, model=model
        )
    if isinstance(exc, (*connection_errors, OSError)) or transport is not None:
        return ProviderError(
            FailoverReason.CONNECTION,
            "could not connect to the provider",
            provider=provider,
            model=model,
        )
    status: int | None = getattr(exc, "status_code", None)
    kind, code, server_message = _body_error(getattr(exc, "body", None))
    kind = getattr(exc, "type", None) or kind
    code = getattr(exc, "code", None) or code
    message = server_message or str(getattr(exc, "message", "")) or type(exc).__name__
    response = getattr(exc, "response", None)
    retry_after = retry_after_seconds(getattr(response, "headers", None))
    reason = _reason(status, str(kind or ""), str(code or ""), message, retry_after)
    label = f"{status} " if status and status != 200 else ""
    return ProviderError(
        reason,
        f"{provider or 'provider'} {label}{kind or reason.value}: {message}"[:500],
        provider=provider,
        model=model,
        status_code=status if status != 200 else None,
        retry_after=retry_after,
    )


def classify(exc: BaseException, *, provider: str = "", model: str = "") -> ProviderError:
    """Classify without SDK knowledge: a provider kind's ``classify`` when it has none."""
    return classify_http_error(exc, provider=provider, model=model)


def sdk_classifier(module: str) -> Callable[..., ProviderError]:
    """A kind's ``classify`` for an SDK built like the official ones (anthropic, openai):
    its ``APITimeoutError`` and ``APIConnectionError`` are known once the SDK is imported;
    it is never imported here."""

    def classify_error(exc: BaseException, *, provider: str = "", model: str = "") -> ProviderError:
        sdk = sys.modules.get(module)
        return classify_http_error(
            exc,
            provider=provider,
            model=model,
            timeout_errors=(sdk.APITimeoutError,) if sdk else (),
            connection_errors=(sdk.APIConnectionError,) if sdk else (),
        )

    classify_error.__doc__ = f"Classify an exception the {module} SDK raised (or a network error)."
    return classify_error
