"""Model providers behind one interface (see ``bot.providers.base``)."""

from __future__ import annotations

from bot.providers.base import ModelRequest, Provider, ProviderInfo, ToolSpec
from bot.providers.classify import classify


def create_provider(info: ProviderInfo, *, timeout: float = 120.0) -> Provider:
    """The provider for ``info.kind``: ``anthropic``, ``openai`` or ``demo``."""
    if info.kind == "anthropic":
        from bot.providers.anthropic import AnthropicProvider

        return AnthropicProvider(info, timeout=timeout)
    if info.kind == "openai":
        from bot.providers.openai import OpenAIProvider

        return OpenAIProvider(info, timeout=timeout)
    if info.kind == "demo":
        from bot.providers.demo import DemoProvider

        return DemoProvider(info, timeout=timeout)
    raise ValueError(f"unknown provider type {info.kind!r}; use anthropic, openai or demo")


__all__ = ["ModelRequest", "Provider", "ProviderInfo", "ToolSpec", "classify", "create_provider"]
