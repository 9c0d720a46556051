"""Installed plugins for a test: extra entry points, as a package declaring them would add.

::

    def test_x(monkeypatch):
        with installed(monkeypatch, "chatlane.tools", {"shout": "tests.test_tools:shout"}):
            ...

The entry points are added to those really installed in that group (others
are left as they are), through ``bot.registry.entry_points``; every cache of
loaded plugins is emptied on the way in and on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from typing import Any

import pytest

import bot.config
import bot.registry


def _forget() -> None:
    bot.registry.load_entry_points.cache_clear()
    bot.config._channel_defaults.cache_clear()


@contextlib.contextmanager
def installed(
    monkeypatch: pytest.MonkeyPatch, group: str, entries: Mapping[str, str]
) -> Iterator[None]:
    """``entries`` (at least one): entry point name -> ``"module:attribute"``."""
    really = bot.registry.entry_points
    extra = [EntryPoint(name, value, group) for name, value in entries.items()]

    def entry_points(**selection: str) -> Any:
        found = list(really(**selection))
        return [*found, *extra] if selection.get("group") == extra[0].group else found

    monkeypatch.setattr(bot.registry, "entry_points", entry_points)
    _forget()
    try:
        yield
    finally:
        monkeypatch.setattr(bot.registry, "entry_points", really)
        _forget()
