"""``chatlane worker``: answer stored messages, with no HTTP server.

For deployments that split web and worker processes: web processes set
``server.process_inbox: false`` (``CHATLANE__SERVER__PROCESS_INBOX=false``)
and only verify, store and acknowledge; workers pick stored messages up
(every second) and send the replies through each configured channel. Split
processes need ``REDIS_URL`` (a SQLite file belongs to one process); then
any number of workers share the inbox; each message is
claimed by one of them, and a worker that dies loses its claims to the
others after 30 seconds. SIGTERM drains like ``chatlane serve``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

from bot.channel import ChannelHost, adapter_classes
from bot.config import Config
from bot.dispatch import Dispatcher
from bot.runtime import AgentRuntime

log = logging.getLogger(__name__)


async def run_worker(
    config: Config, env: Mapping[str, str] | None = None, stop: asyncio.Event | None = None
) -> int:
    env = os.environ if env is None else env
    stop = stop or asyncio.Event()
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True, env=env)
    dispatcher = Dispatcher(runtime, sweep_every=1.0)
    host = ChannelHost(runtime, dispatcher, config, public_url=env.get("PUBLIC_URL"))
    adapters: list[Any] = []
    for cls in adapter_classes():
        if not config.channel(cls.name).enabled:
            continue
        try:
            adapter = cls.from_env(host, env)
            if adapter is None or getattr(adapter, "sink", None) is None:
                continue
            await adapter.start()
        except Exception:
            log.exception("channel %s could not start; it stays off", cls.name)
            continue
        dispatcher.register(adapter.sink)
        adapters.append(adapter)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            break
    await dispatcher.start()
    log.info("chatlane worker answering for: %s", ", ".join(a.name for a in adapters) or "none")
    await stop.wait()
    host.draining = True
    await dispatcher.drain(config.server.shutdown_grace)
    for adapter in reversed(adapters):
        await adapter.stop()
    await runtime.close()
    return 0
