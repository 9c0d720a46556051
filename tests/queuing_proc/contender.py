"""A separate process contending for one chat's lane over Redis (used by the Redis lane tests).

usage: contender.py REDIS_URL PREFIX NAME TURNS HOLD_SECONDS LEASE
Each turn appends "start NAME t" and "end NAME t" to the list PREFIX + "log". With
HOLD_SECONDS < 0 it takes the lane once, writes "holding NAME" and never lets go.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis

from bot.queuing import QueueManager
from bot.queuing.redis_backend import RedisLanes


async def main(url: str, prefix: str, name: str, turns: int, hold: float, lease: float) -> None:
    lanes = RedisLanes(url, prefix=prefix, lease=lease, global_cap=10)
    manager = QueueManager(max_concurrent_global=10, redis=lanes)
    log = aioredis.Redis.from_url(url, decode_responses=True)
    for _ in range(turns):
        async with manager.hold("shared-chat"):
            await log.rpush(prefix + "log", f"start {name} {time.time():.6f}")
            if hold < 0:
                await log.rpush(prefix + "log", f"holding {name}")
                await asyncio.Event().wait()
            await asyncio.sleep(hold)
            await log.rpush(prefix + "log", f"end {name} {time.time():.6f}")
    await log.aclose()
    await lanes.aclose()


if __name__ == "__main__":
    url, prefix, name, turns, hold, lease = sys.argv[1:7]
    asyncio.run(main(url, prefix, name, int(turns), float(hold), float(lease)))
