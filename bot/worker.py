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
import signal
from collections.abc import Mapping

from bot.config import Config
from bot.wiring import wire

log = logging.getLogger(__name__)


async def run_worker(
    config: Config, env: Mapping[str, str] | None = None, stop: asyncio.Event | None = None
) -> int:
    stop = stop or asyncio.Event()
    wiring = wire(config, env, process=True, sweep_every=1.0, sinks_only=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            break
    await wiring.start()
    log.info(
        "chatlane worker answering for: %s", ", ".join(a.name for a in wiring.started) or "none"
    )
    await stop.wait()
    await wiring.stop()
    return 0
