"""Plugins found through entry points: one loader for every registry.

Channels, providers, storage backends and tools are each an entry point group
(``chatlane.channels``, ``chatlane.providers``, ...) declared in
``pyproject.toml``; a third-party package adds to a group by declaring its own.
``load_entry_points(group)`` loads a group once per process and returns
``{entry point name: loaded object}`` in name order. A plugin that fails to
import is logged and left out, so one broken package cannot stop the bot.

Tests install a fake plugin by replacing ``bot.registry.entry_points`` (the
importlib function this module asks) and calling ``load_entry_points.cache_clear()``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["load_entry_points"]


@functools.cache
def load_entry_points(group: str) -> Mapping[str, Any]:
    """``{name: loaded object}`` for every entry point in ``group``, sorted by name (read-only).

    Loaded once per process (cached); a plugin that raises while loading is logged
    with its traceback and skipped. When two packages declare one name, the first
    that loads wins and the other is logged.
    """
    found: dict[str, Any] = {}
    for entry in sorted(entry_points(group=group), key=lambda e: (e.name, e.value)):
        if entry.name in found:
            log.warning("%s: %s is declared twice; %s ignored", group, entry.name, entry.value)
            continue
        try:
            found[entry.name] = entry.load()
        except Exception:
            log.exception("%s: plugin %s (%s) failed to load", group, entry.name, entry.value)
    return MappingProxyType(found)
