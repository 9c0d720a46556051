"""Lanes across processes: a fair, leased queue in Redis.

Pattern: a *fair semaphore with leases and fencing tokens*. Each lane is two
sorted sets. A contender takes a ticket (``INCR``, monotonic: it is also the
fencing token) and joins ``queue`` (scored by ticket, so first come, first
served) and ``alive`` (scored by lease expiry). One Lua script, run
atomically, renews the caller's lease, evicts every ticket whose lease has
expired (a holder or waiter that died), and grants the slot when the
caller's rank is below the lane's capacity. Holders renew their lease every
third of it from a background task; a process killed with SIGKILL stops
renewing and its slot passes on once the lease runs out. ``still_holds``
lets a holder check, by its ticket, that it was not evicted (a long pause).

Waiting polls the script with a growing interval (20 ms to 250 ms), which
keeps the code simple and is cheap next to a model call; positions are the
rank in the queue. The per-chat lane has capacity 1 (turns never overlap,
whichever process runs them) and the global lane the configured cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.storage.redis import redis_client

log = logging.getLogger(__name__)

TRY_ACQUIRE = """
local queue, alive = KEYS[1], KEYS[2]
local ticket, now = ARGV[1], tonumber(ARGV[2])
local lease, capacity = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('ZSCORE', queue, ticket) == false then return {-1, 0} end
redis.call('ZADD', alive, now + lease, ticket)
local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now)
for _, member in ipairs(dead) do
  redis.call('ZREM', queue, member)
  redis.call('ZREM', alive, member)
end
redis.call('PEXPIRE', queue, lease * 4)
redis.call('PEXPIRE', alive, lease * 4)
local rank = redis.call('ZRANK', queue, ticket)
if rank == false then return {-1, 0} end
if rank < capacity then return {1, rank} end
return {0, rank - capacity + 1}
"""

RENEW = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
return 1
"""


class LeaseLost(Exception):
    """The lease expired before it was renewed: another process may hold the lane now."""


class RedisLane:
    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        capacity: int,
        *,
        prefix: str,
        lease: float,
        cleanups: set[asyncio.Task[None]] | None = None,
    ) -> None:
        self.client = client
        self.cleanups: set[asyncio.Task[None]] = set() if cleanups is None else cleanups
        self.name = name
        self.capacity = capacity
        self.queue = f"{prefix}lane:{name}:queue"
        self.alive = f"{prefix}lane:{name}:alive"
        self.counter = f"{prefix}lane:{name}:seq"
        self.lease_ms = int(lease * 1000)

    def _now(self) -> int:
        return int(time.time() * 1000)

    def ticket(self) -> Ticket:
        return Ticket(self)


class Ticket:
    """One contender's place in a ``RedisLane``; ``token`` is its fencing token."""

    def __init__(self, lane: RedisLane) -> None:
        self.lane = lane
        self.token: int | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> AsyncGenerator[int, None]:
        """Wait for a slot, yielding the queue position when it changes; ends holding it."""
        lane = self.lane
        self.token = int(await lane.client.incr(lane.counter))
        async with lane.client.pipeline(transaction=True) as pipe:
            pipe.zadd(lane.queue, {str(self.token): self.token})
            pipe.zadd(lane.alive, {str(self.token): lane._now() + lane.lease_ms})
            await pipe.execute()
        delay = 0.02
        last = None
        try:
            while True:
                granted, position = await lane.client.eval(
                    TRY_ACQUIRE,
                    2,
                    lane.queue,
                    lane.alive,
                    str(self.token),
                    lane._now(),
                    lane.lease_ms,
                    lane.capacity,
                )
                if int(granted) == 1:
                    break
                if int(granted) == -1:  # evicted while waiting (a long pause): queue again
                    raise LeaseLost(lane.name)
                if position != last:
                    last = position
                    yield int(position)
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.25)
        except BaseException:
            await self._leave()
            raise
        self._renewer = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        lane = self.lane
        while True:
            await asyncio.sleep(lane.lease_ms / 3000)
            try:
                kept = await lane.client.eval(
                    RENEW, 2, lane.queue, lane.alive, str(self.token), lane._now() + lane.lease_ms
                )
            except (RedisError, OSError) as error:
                log.warning("could not renew the %s lane (%s); trying again", lane.name, error)
                continue
            if not kept:
                return

    async def still_holds(self) -> bool:
        return await self.lane.client.zscore(self.lane.queue, str(self.token)) is not None

    async def _leave(self) -> None:
        if self.token is None:
            return
        try:
            await self._remove(self.token)
        except (RedisError, OSError) as error:
            # Redis is away: keep trying in the background, or once it is back the
            # chat's next turn would wait out the lease of a ticket nobody holds.
            log.warning("could not leave the %s lane (%s); retrying", self.lane.name, error)
            task = asyncio.ensure_future(self._remove_later(self.token))
            self.lane.cleanups.add(task)
            task.add_done_callback(self.lane.cleanups.discard)

    async def _remove(self, token: int) -> None:
        async with self.lane.client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.lane.queue, str(token))
            pipe.zrem(self.lane.alive, str(token))
            await pipe.execute()

    async def _remove_later(self, token: int) -> None:
        deadline = time.monotonic() + self.lane.lease_ms / 1000  # then it lapses anyway
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            with contextlib.suppress(RedisError, OSError):
                await self._remove(token)
                return

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self._leave()
        self.token = None


class RedisLanes:
    """The Redis side of ``QueueManager``: a lane per chat (capacity 1) and a global lane."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "chatlane:",
        lease: float = 30.0,
        per_session: int = 1,
        global_cap: int = 10,
    ) -> None:
        self.client = redis_client(url)
        self.cleanups: set[asyncio.Task[None]] = set()
        self.prefix = prefix
        self.lease = lease
        self.per_session = per_session
        self.global_cap = global_cap

    def session(self, session_id: str) -> RedisLane:
        return RedisLane(
            self.client,
            f"session:{session_id}",
            self.per_session,
            prefix=self.prefix,
            lease=self.lease,
            cleanups=self.cleanups,
        )

    def global_lane(self) -> RedisLane:
        return RedisLane(
            self.client,
            "global",
            self.global_cap,
            prefix=self.prefix,
            lease=self.lease,
            cleanups=self.cleanups,
        )

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):  # a health check answers quickly
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        for task in list(self.cleanups):
            task.cancel()
        await asyncio.gather(*self.cleanups, return_exceptions=True)
        await self.client.aclose()
