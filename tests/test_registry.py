"""The entry point loader every registry shares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from bot import registry

GROUP = "chatlane.testing"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    found: list[EntryPoint] = []
    monkeypatch.setattr(
        registry, "entry_points", lambda *, group: [e for e in found if e.group == group]
    )
    registry.load_entry_points.cache_clear()
    yield found
    registry.load_entry_points.cache_clear()


def test_loads_by_name_once_and_skips_what_breaks(
    installed: list[EntryPoint], caplog: pytest.LogCaptureFixture
) -> None:
    installed += [
        EntryPoint("b", "json:dumps", GROUP),
        EntryPoint("a", "json:loads", GROUP),
        EntryPoint("a", "pathlib:Path", GROUP),  # a second package claiming the name
        EntryPoint("c", "tests.no_such_module:thing", GROUP),
        EntryPoint("d", "json:no_such_name", GROUP),
    ]
    loaded = registry.load_entry_points(GROUP)
    assert dict(loaded) == {"a": json.loads, "b": json.dumps}
    assert "a is declared twice" in caplog.text
    assert "plugin c (tests.no_such_module:thing) failed to load" in caplog.text
    assert "plugin d" in caplog.text
    installed.append(EntryPoint("e", "json:JSONDecoder", GROUP))
    assert registry.load_entry_points(GROUP) is loaded  # cached: read once per process
    with pytest.raises(TypeError):
        loaded["x"] = 1  # type: ignore[index]


def test_an_empty_group(installed: list[EntryPoint]) -> None:
    assert dict(registry.load_entry_points("chatlane.nothing")) == {}
