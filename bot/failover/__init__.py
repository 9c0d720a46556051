"""Model fallback: chains of models, and the call that walks them."""

from bot.failover.chain import FallbackChain, FallbackManager
from bot.failover.errors import FailoverError, FailoverReason, ProviderError

__all__ = ["FailoverError", "FailoverReason", "FallbackChain", "FallbackManager", "ProviderError"]
