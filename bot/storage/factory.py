"""The storage backends installed (entry points ``chatlane.storage``) and which one to use.

A backend is a class that says what it serves, as class attributes, and how to
build itself from the environment:

- ``url_env``: the variable holding its URL (``REDIS_URL``), or None;
- ``schemes``: the URL schemes it takes from there (``redis``, ``rediss``);
- ``priority``: when several backends' variables are set, the highest wins;
- ``default``: serves when no variable names a backend (SQLite);
- ``unavailable``: its errors meaning "cannot be reached or written just now";
- ``from_env(env, *, max_connections=None)``: the store, not yet opened.

Adding one (PostgreSQL from ``DATABASE_URL``, say) is a module with such a
class and its entry point; nothing here changes.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

from bot.registry import load_entry_points
from bot.storage.base import Storage

if TYPE_CHECKING:
    from bot.storage.memory import MemoryStorage
    from bot.storage.redis import RedisStorage
    from bot.storage.sqlite import SQLiteStorage

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatlane.storage"
_DECLARED = ("url_env", "schemes", "priority", "default", "unavailable", "from_env")


class Backend(Protocol):
    """A storage backend class, as the registry reads it."""

    url_env: str | None
    schemes: tuple[str, ...]
    priority: int
    default: bool
    unavailable: tuple[type[Exception], ...]

    def from_env(
        self, env: Mapping[str, str], *, max_connections: int | None = None
    ) -> Storage: ...


if TYPE_CHECKING:
    # mypy checks that each built-in declares all a backend must and builds a whole Storage.
    _BUILT_IN: tuple[Backend, ...] = (SQLiteStorage, RedisStorage, MemoryStorage)


@functools.cache
def backends() -> Mapping[str, Backend]:
    """Every installed backend by entry-point name, highest priority first (then by name).

    One that declares too little is logged and left out, as one that fails to load is."""
    found: list[tuple[str, Backend]] = []
    for name, loaded in load_entry_points(ENTRY_POINT_GROUP).items():
        missing = [attr for attr in _DECLARED if not hasattr(loaded, attr)]
        if missing:
            log.error("storage backend %s does not declare %s", name, ", ".join(missing))
            continue
        found.append((name, cast(Backend, loaded)))
    found.sort(key=lambda pair: (-pair[1].priority, pair[0]))
    return MappingProxyType(dict(found))


@functools.cache
def unavailable() -> tuple[type[Exception], ...]:
    """Every installed backend's "try again later" errors (``bot.storage.base.UNAVAILABLE``)."""
    errors: dict[type[Exception], None] = {}
    for backend in backends().values():
        errors.update(dict.fromkeys(backend.unavailable))
    return tuple(errors)


def choose(env: Mapping[str, str]) -> Backend:
    """The backend the environment asks for: the highest-priority one whose variable is
    set (to a URL of a scheme it takes), else the default. A URL that no backend reading
    its variable takes is an error, not a silent fallback."""
    found = backends().values()
    named = {b.url_env: env[b.url_env] for b in found if b.url_env and env.get(b.url_env)}
    for variable, url in named.items():
        takes = sorted({s for b in found if b.url_env == variable for s in b.schemes})
        scheme = _scheme(url)
        if scheme not in takes:  # (the URL itself may hold a password: never shown)
            what = f"{scheme}:// URLs" if scheme else "URLs without a scheme"
            raise ValueError(
                f"{variable}: no installed storage backend serves {what}; "
                f"use one of: {', '.join(f'{s}://' for s in takes)}"
            )
    for backend in found:
        if backend.url_env in named and _scheme(named[backend.url_env]) in backend.schemes:
            return backend
    for backend in found:
        if backend.default:
            return backend
    raise RuntimeError(
        f"no default storage backend is installed (entry points {ENTRY_POINT_GROUP!r}); "
        "reinstall chatlane"
    )


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def default_storage(
    env: Mapping[str, str] | None = None, *, max_connections: int | None = None
) -> Storage:
    """The store the environment names (Redis when ``REDIS_URL`` is set, else SQLite),
    not yet opened. ``max_connections`` bounds a pooled backend's connections
    (commands wait for a free one)."""
    env = os.environ if env is None else env
    return choose(env).from_env(env, max_connections=max_connections)
