"""Pick the storage backend from the environment: Redis when ``REDIS_URL`` is set, else SQLite."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bot.config import data_dir
from bot.storage.base import Storage
from bot.storage.sqlite import SQLiteStorage


def default_storage(
    env: Mapping[str, str] | None = None, *, max_connections: int | None = None
) -> Storage:
    """``max_connections`` bounds the Redis pool (commands wait for a free connection)."""
    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL")
    if redis_url:
        from bot.storage.redis import RedisStorage

        return RedisStorage(redis_url, max_connections=max_connections)
    return SQLiteStorage(data_dir(env) / "chatlane.sqlite3")
