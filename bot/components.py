"""The parts a runtime is made of, each built from config and environment.

``AgentRuntime`` builds its own parts with these, and ``bot.wiring.wire``
builds a whole process around such a runtime, so the Python API and
``chatlane serve`` agree: with ``REDIS_URL`` set, storage and lanes are both
in Redis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.config import Config
from bot.storage.base import Storage
from bot.storage.factory import default_storage
from bot.tools import ToolRegistry, configured_tools

if TYPE_CHECKING:
    from bot.queuing.redis_backend import RedisLanes


def build_storage(config: Config, env: Mapping[str, str] | None = None) -> Storage:
    """Redis when ``REDIS_URL`` is set, else SQLite under the data directory (not opened)."""
    cap = config.agent.queuing.max_concurrent_global
    # Every running turn and every webhook in flight may hold a connection at once.
    pool = config.server.redis_max_connections or max(64, 2 * cap + 32)
    return default_storage(env, max_connections=pool)


def build_lanes(config: Config, env: Mapping[str, str] | None = None) -> RedisLanes | None:
    """Lanes shared by every process when ``REDIS_URL`` is set; None means in-process lanes."""
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL")
    if not redis_url:
        return None
    from bot.queuing.redis_backend import RedisLanes  # the redis client only when used
    from bot.storage.redis_client import redis_tls

    queuing = config.agent.queuing
    return RedisLanes(
        redis_url,
        per_session=queuing.max_concurrent_per_session,
        global_cap=queuing.max_concurrent_global,
        max_connections=config.server.redis_max_connections,
        tls=redis_tls(env),  # rediss:// with REDIS_SSL_CERT_REQS=none and the like
    )


def build_tools(config: Config) -> ToolRegistry:
    """The built-in tools on ``agent.workspace``, the ``chatlane.tools`` plugins and the
    config's ``tools:``."""
    return configured_tools(config)
