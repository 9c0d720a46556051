"""The error taxonomy, re-exported where it used to live.

The types are defined in ``bot.providers.errors``: providers raise them and
rotation reads them, and neither may import ``bot.failover`` (which imports
both). Import from ``bot.failover`` or ``bot.providers.errors``.
"""

from bot.providers.errors import (
    FAILOVER_REASONS,
    PROFILE_REASONS,
    FailoverError,
    FailoverReason,
    ProviderError,
    user_message,
)

__all__ = [
    "FAILOVER_REASONS",
    "PROFILE_REASONS",
    "FailoverError",
    "FailoverReason",
    "ProviderError",
    "user_message",
]
