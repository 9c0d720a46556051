"""The installed provider kinds, from the ``chatlane.providers`` entry point group.

Adding a provider is one module exporting a ``ProviderKind`` plus its entry
point (see ``bot.providers.kind``); nothing here names a kind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bot.providers.base import Provider, ProviderInfo
from bot.providers.kind import ProviderKind
from bot.registry import load_entry_points

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatlane.providers"


def provider_kinds() -> Mapping[str, ProviderKind]:
    """Every installed kind by its entry point name, in name order."""
    kinds: dict[str, ProviderKind] = {}
    for name, found in load_entry_points(ENTRY_POINT_GROUP).items():
        if isinstance(found, ProviderKind):
            kinds[name] = found
        else:
            log.error(
                "%s: %s is a %s, not a ProviderKind; skipped",
                ENTRY_POINT_GROUP,
                name,
                type(found).__name__,
            )
    return kinds


def create_provider(info: ProviderInfo, *, timeout: float = 120.0) -> Provider:
    """A provider of kind ``info.kind``. Raises ``ValueError`` for a kind not installed."""
    kind = provider_kinds().get(info.kind)
    if kind is None:
        installed = ", ".join(provider_kinds()) or "none"
        raise ValueError(f"unknown provider type {info.kind!r}; installed: {installed}")
    return kind.create(info, timeout=timeout)
