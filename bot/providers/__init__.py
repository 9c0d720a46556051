"""Model providers behind one interface (see ``bot.providers.base``), found by kind in
the ``chatlane.providers`` entry point group (see ``bot.providers.kind``)."""

from __future__ import annotations

from bot.providers.base import ModelRequest, Provider, ProviderInfo, ToolSpec
from bot.providers.classify import classify
from bot.providers.kind import ProviderKind
from bot.providers.registry import create_provider, provider_kinds

__all__ = [
    "ModelRequest",
    "Provider",
    "ProviderInfo",
    "ProviderKind",
    "ToolSpec",
    "classify",
    "create_provider",
    "provider_kinds",
]
