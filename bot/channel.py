"""The contract between the core and a channel adapter, and how adapters are found.

Adapters live in the ``channels`` package and are discovered through the
``chatlane.channels`` entry point group (see ``pyproject.toml``), so the core
never imports a channel and a third party can ship its own.

An adapter class offers ``from_env(host, env)``: the adapter when its
credentials are present, else None (the channel is off). ``describe``
explains the state for ``chatlane check`` without secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from bot.config import Config
    from bot.dispatch import Dispatcher
    from bot.runtime import AgentRuntime

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatlane.channels"


@dataclass
class ChannelHost:
    """What an adapter gets from the process: the runtime, dispatcher and config."""

    runtime: AgentRuntime
    dispatcher: Dispatcher
    config: Config
    public_url: str | None = None
    draining: bool = False


@dataclass(frozen=True, slots=True)
class ChannelState:
    name: str
    enabled: bool
    detail: str


class ChannelAdapter(Protocol):
    name: ClassVar[str]

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> ChannelAdapter | None: ...

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState: ...

    def add_routes(self, app: web.Application) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def adapter_classes() -> list[Any]:
    """Every installed adapter class, in a stable order."""
    found = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.append(entry.load())
        except Exception:
            log.exception("channel adapter %s failed to load", entry.name)
    return found


def mask(secret: str | None) -> str:
    """Show that a secret is set without showing it."""
    if not secret:
        return "(not set)"
    if len(secret) <= 8:
        return "****"
    return f"****{secret[-4:]}"
