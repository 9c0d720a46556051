"""One place that builds a chatlane process from config and environment.

``wire(config, env)`` builds the runtime (its storage, lanes, models and
tools come from ``bot.components``), the dispatcher, the channel host, and
every installed channel that is enabled in config and has its credentials,
each channel's sink registered with the dispatcher. ``chatlane serve`` adds
the channels' routes to its app, ``chatlane worker`` runs the same without
HTTP, ``chatlane chat`` wires the terminal alone.

``Wiring.start`` and ``Wiring.stop`` are the lifecycle they share: start the
runtime, the channels (one that fails is logged and stays off) and the
dispatcher; on the way out stop taking turns, let running ones finish within
the grace, stop the channels in reverse and close the runtime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.channel import ChannelHost, adapter_classes
from bot.config import Config, ConfigError
from bot.dispatch import Dispatcher
from bot.models import ModelSetup
from bot.runtime import AgentRuntime
from bot.storage.base import Storage
from bot.tools import ToolRegistry

if TYPE_CHECKING:
    from bot.queuing.redis_backend import RedisLanes

log = logging.getLogger(__name__)


@dataclass
class Wiring:
    """A process's parts, built by ``wire``; ``start`` once, ``stop`` once."""

    runtime: AgentRuntime
    dispatcher: Dispatcher
    host: ChannelHost
    channels: list[Any]  # the channel adapters built, in name order
    started: list[Any] = field(default_factory=list)  # those whose start() succeeded

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def storage(self) -> Storage:
        return self.runtime.storage

    @property
    def lanes(self) -> RedisLanes | None:
        """The Redis lanes, or None when lanes are in-process."""
        return self.runtime.queue.redis

    @property
    def models(self) -> ModelSetup:
        return self.runtime.models

    @property
    def tools(self) -> ToolRegistry:
        return self.runtime.tools

    def add(self, channel: Any) -> None:
        """Serve one more channel (built by hand, as ``chatlane chat`` builds the terminal's);
        before ``start``."""
        sink = getattr(channel, "sink", None)
        if sink is not None:
            self.dispatcher.register(sink)
        self.channels.append(channel)

    def add_routes(self, app: web.Application) -> None:
        for channel in self.channels:
            channel.add_routes(app)

    async def start(self) -> None:
        await self.runtime.start()
        for channel in self.channels:
            try:
                await channel.start()
            except Exception:
                log.exception("channel %s failed to start; it stays off", channel.name)
                continue
            self.started.append(channel)
        await self.dispatcher.start()

    async def stop(self, grace: float | None = None) -> None:
        """Drain (``server.shutdown_grace`` unless ``grace`` is given), stop, close."""
        self.host.draining = True
        if grace is None:
            grace = self.config.server.shutdown_grace
        await self.dispatcher.drain(grace)
        for channel in reversed(self.started):
            try:
                await channel.stop()
            except Exception:
                log.exception("channel %s failed to stop cleanly", channel.name)
        self.started.clear()
        await self.runtime.close()


def wire(
    config: Config | None = None,
    env: Mapping[str, str] | None = None,
    *,
    runtime: AgentRuntime | None = None,
    process: bool | None = None,
    sweep_every: float | None = None,
    only: Collection[str] | None = None,
    sinks_only: bool = False,
) -> Wiring:
    """Build a process from ``config`` (else the config file) and ``env`` (else ``os.environ``).

    ``runtime``: use this one (its config wins) instead of building one.
    ``process`` and ``sweep_every``: the dispatcher's (default: ``server.process_inbox``
    and the dispatcher's own). ``only``: the channels to build, by name (default: all).
    ``sinks_only``: leave out channels that send no replies (a worker serves no HTTP).
    """
    env = os.environ if env is None else env
    if runtime is None:
        runtime = AgentRuntime(config=config, demo_when_unconfigured=True, env=env)
    config = runtime.config
    options: dict[str, Any] = {}
    if sweep_every is not None:
        options["sweep_every"] = sweep_every
    dispatcher = Dispatcher(
        runtime,
        process=config.server.process_inbox if process is None else process,
        **options,
    )
    host = ChannelHost(runtime, dispatcher, config, public_url=env.get("PUBLIC_URL"))
    wiring = Wiring(runtime, dispatcher, host, [])
    for cls in adapter_classes():
        if (only is not None and cls.name not in only) or not config.channel(cls.name).enabled:
            continue
        try:
            channel = cls.from_env(host, env)
        except ConfigError:
            raise  # a setting the operator must fix: the process does not start without it
        except Exception:
            log.exception("channel %s could not be set up; it stays off", cls.name)
            continue
        if channel is not None and (getattr(channel, "sink", None) is not None or not sinks_only):
            wiring.add(channel)
    return wiring
