"""Redis storage: shared by every process when ``REDIS_URL`` is set.

Keys (under a prefix, ``chatlane:`` by default):

- ``msgid``: a counter; every message gets the next id, so ids grow across
  sessions and processes and ``after_id`` reads are exact.
- ``epoch:{session}``: bumped by ``/new``; ``msgs:{session}:{epoch}`` is a
  sorted set of JSON messages scored by id.
- ``settings:{session}``: a hash of JSON values.
- ``kv:{namespace}``: a hash of JSON values; ``kv_update`` is an optimistic
  WATCH/MULTI transaction, retried on conflict, so it is atomic across processes.
- ``inbox:dedupe:{key}`` (kept a week), ``inbox:item:{id}`` (a hash) and
  ``inbox:pending`` (a sorted set of ids), ``inbox:chat:{chat}`` (a chat's pending
  ids, which keep its order across processes): ``inbox_add`` is one Lua script, so
  a message is either stored and marked seen, or neither; concurrent adds share
  one call of it (one round trip).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.messages import Message
from bot.storage.base import (
    JSON,
    EarlierPending,
    InboxItem,
    Updater,
    chat_of,
    to_json,
)
from bot.storage.batch import Batcher
from bot.storage.redis_client import (
    ScriptCall,
    redis_client,
    redis_tls,
    run_script,
    run_scripts,
)

DEDUPE_TTL = 7 * 24 * 3600
# KEYS: the id counter, the item key prefix, the pending set, the chat key prefix, the
# claim key prefix, then each message's dedupe key; ARGV: the dedupe TTL, then each
# message's data, chat, claim token ('' for none), claim lease in ms and whether to open
# it ('1': its first attempt counted, when nothing of its chat is pending before it).
# Returns each message's id (0 if seen) and 1 if it was opened, else 0.
# ``inbox:chat:{chat}`` holds a chat's pending ids.
INBOX_ADD = """
local ids = {}
for i = 6, #KEYS do
  local id, opened = 0, 0
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    id = redis.call('INCR', KEYS[1])
    local at = 5 * (i - 6) + 2
    local chat, token = ARGV[at + 1], ARGV[at + 2]
    local chat_key = KEYS[4] .. chat
    if ARGV[at + 4] == '1' and redis.call('EXISTS', chat_key) == 0 then opened = 1 end
    redis.call('HSET', KEYS[2] .. id, 'data', ARGV[at], 'sent', 0, 'attempts', opened,
      'chat', chat)
    redis.call('ZADD', KEYS[3], id, id)
    redis.call('ZADD', chat_key, id, id)
    if token ~= '' then redis.call('SET', KEYS[5] .. id, token, 'PX', ARGV[at + 3]) end
  end
  ids[#ids + 1] = id
  ids[#ids + 1] = opened
end
return ids
"""

# A conversation in one trip each: KEYS are the session's epoch key, then (APPEND) the
# id counter, then the prefix of its messages' key; each message is stored as its JSON
# with its new id first, as ``{"id": N, ...}``. APPEND with a fourth key (an inbox item)
# stores ARGV[1] as that item's reply, if it is still pending; the messages follow.
APPEND = """
local first = 1
if KEYS[4] then
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'reply', ARGV[1]) end
  first = 2
end
local count = #ARGV - first + 1
local epoch = redis.call('GET', KEYS[1]) or '0'
local last = redis.call('INCRBY', KEYS[2], count)
local key = KEYS[3] .. epoch
for i = first, #ARGV do
  local id = last - #ARGV + i
  redis.call('ZADD', key, id, '{"id":' .. id .. ',' .. string.sub(ARGV[i], 2))
end
return last
"""
LOAD = """
local epoch = redis.call('GET', KEYS[1]) or '0'
return redis.call('ZRANGEBYSCORE', KEYS[2] .. epoch, ARGV[1], '+inf')
"""
# What a turn starts from, in one trip: the session's settings, its messages after ARGV[1]
# and, when ARGV[2] names its field in ``kv:summary`` (a session not cached yet), its
# summary, whose ``upto`` then starts the messages. KEYS: the epoch key, the messages key
# prefix, the settings key, the summary hash. Returns {settings (flat), summary or '',
# messages}.
LOAD_TURN = """
local after, summary = ARGV[1], ''
if ARGV[2] ~= '' then
  summary = redis.call('HGET', KEYS[4], ARGV[2]) or ''
  local ok, stored = pcall(cjson.decode, summary)
  if ok and type(stored) == 'table' and tonumber(stored['upto']) then
    after = string.format('(%d', tonumber(stored['upto']))
  end
end
local epoch = redis.call('GET', KEYS[1]) or '0'
local messages = redis.call('ZRANGEBYSCORE', KEYS[2] .. epoch, after, '+inf')
return {redis.call('HGETALL', KEYS[3]), summary, messages}
"""

CLAIM_MANY = """
local taken = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('ZSCORE', KEYS[1], id) ~= false then
    local key = KEYS[2] .. id
    local holder = redis.call('GET', key)
    if holder == false or holder == token then
      redis.call('SET', key, token, 'PX', ARGV[1])
      taken[#taken + 1] = id
    end
  end
end
return taken
"""
RENEW_MANY = """
local lost = {}
for i = 2, #ARGV, 2 do
  local key = KEYS[1] .. ARGV[i]
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""
# An item read for a turn, its attempt counted (HINCRBY alone would create a done one).
# With a claim token (ARGV[2]): first, if an earlier pending message of its chat is not
# one of the turn's (ARGV[3:]), release the item's claim and return 0. KEYS: the item,
# the chat key prefix, the claim key prefix; ARGV: the id, the token, the turn's ids.
OPEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local chat = redis.call('HGET', KEYS[1], 'chat')
if ARGV[2] ~= '' and chat then
  local turn = {}
  for i = 3, #ARGV do turn[ARGV[i]] = true end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2] .. chat, '-inf', '(' .. ARGV[1])) do
    if not turn[id] then
      if redis.call('GET', KEYS[3] .. ARGV[1]) == ARGV[2] then
        redis.call('DEL', KEYS[3] .. ARGV[1])
      end
      return 0
    end
  end
end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return redis.call('HGETALL', KEYS[1])
"""
# An item answered: gone from the pending sets, its claim with it. Returns the ids of its
# chat's later pending messages nobody holds. KEYS: the pending set, the item, the claim
# key prefix, the chat key prefix; ARGV: the id.
DONE = """
local chat = redis.call('HGET', KEYS[2], 'chat')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3] .. ARGV[1])
local free = {}
if chat then
  local key = KEYS[4] .. chat
  redis.call('ZREM', key, ARGV[1])
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. ARGV[1], '+inf')) do
    if redis.call('EXISTS', KEYS[3] .. id) == 0 then free[#free + 1] = id end
  end
end
return free
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _pairs(claims: Mapping[int, str]) -> list[str]:
    """Claims as a script's flat arguments: id, token, id, token..."""
    return [str(v) for pair in claims.items() for v in pair]


class RedisStorage:
    shared = True
    url_env: ClassVar[str | None] = "REDIS_URL"
    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "unix")
    priority: ClassVar[int] = 10
    default: ClassVar[bool] = False
    # Down, restarting or failing over (after the client's own retries), or too slow.
    unavailable: ClassVar[tuple[type[Exception], ...]] = (RedisConnectionError, RedisTimeoutError)

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "chatlane:",
        max_connections: int | None = None,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.max_connections = max_connections
        self.tls = dict(tls or {})
        self._client: aioredis.Redis | None = None
        self._inbox_adds: Batcher[tuple[str, str, str, str, int, int], tuple[int, bool] | None]
        self._inbox_adds = Batcher(self._inbox_write)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, max_connections: int | None = None
    ) -> RedisStorage:
        return cls(env["REDIS_URL"], max_connections=max_connections, tls=redis_tls(env))

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisStorage is not open; call await storage.open() first")
        return self._client

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def open(self) -> None:
        if self._client is None:
            self._client = redis_client(
                self.url, max_connections=self.max_connections, tls=self.tls
            )

    async def close(self) -> None:
        await self._inbox_adds.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            async with asyncio.timeout(2):  # a health check answers quickly
                return bool(await self._client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def append_messages(
        self,
        session_id: str,
        messages: Sequence[Message],
        reply: tuple[int, list[JSON]] | None = None,
        *,
        then: ScriptCall | None = None,
    ) -> list[Message]:
        """``then``: a script to run right after the write, in the same trip (the turn's
        leaving of its Redis lanes: ``Slot.leave_call``); it runs even with nothing to
        write."""
        if not messages and reply is None:
            if then is not None:
                await run_script(self.client, *then)
            return []
        keys = [self.key("epoch", session_id), self.key("msgid"), self.key("msgs", session_id, "")]
        args = [to_json(m.to_dict()) for m in messages]
        if reply is not None:
            keys.append(self.key("inbox", "item", str(reply[0])))
            args.insert(0, json.dumps(reply[1], ensure_ascii=False))
        calls: list[ScriptCall] = [(APPEND, keys, args)]
        if then is not None:
            calls.append(then)
        last = int((await run_scripts(self.client, calls))[0])
        first = last - len(messages) + 1
        return [m.with_id(first + i) for i, m in enumerate(messages)]

    async def load_messages(self, session_id: str, after_id: int | None = None) -> list[Message]:
        rows = await run_script(
            self.client,
            LOAD,
            [self.key("epoch", session_id), self.key("msgs", session_id, "")],
            [f"({after_id}" if after_id else "-inf"],
        )
        return self._messages(rows)

    async def load_turn(
        self, session_id: str, after_id: int | None = None, *, summary: bool = False
    ) -> tuple[dict[str, JSON], JSON | None, list[Message]]:
        """``get_settings`` and ``load_messages`` in one trip, with ``summary`` also
        ``kv_get("summary", session_id)``, the messages then starting after its ``upto``."""
        return self.loaded_turn(
            await run_script(self.client, *self.load_turn_call(session_id, after_id, summary))
        )

    def load_turn_call(
        self, session_id: str, after_id: int | None = None, summary: bool = False
    ) -> ScriptCall:
        """``load_turn``'s script, for a caller to run with one of its own in one trip (a
        turn's join of its lanes: ``Slot.preload``); ``loaded_turn`` reads its result."""
        keys = [
            self.key("epoch", session_id),
            self.key("msgs", session_id, ""),
            self.key("settings", session_id),
            self.key("kv", "summary"),
        ]
        after = f"({after_id}" if after_id else "-inf"
        return LOAD_TURN, keys, [after, session_id if summary else ""]

    def loaded_turn(self, raw: Any) -> tuple[dict[str, JSON], JSON | None, list[Message]]:
        flat, stored, rows = raw
        settings = {str(k): json.loads(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        return settings, json.loads(stored) if stored else None, self._messages(rows)

    @staticmethod
    def _messages(rows: Sequence[Any]) -> list[Message]:
        messages = []
        for row in rows:
            data: dict[str, Any] = json.loads(str(row))
            messages.append(Message.from_dict(data, message_id=int(data["id"])))
        return messages

    async def reset_session(self, session_id: str) -> None:
        await self.client.incr(self.key("epoch", session_id))

    async def get_settings(self, session_id: str) -> dict[str, JSON]:
        raw = await self.client.hgetall(self.key("settings", session_id))
        return {str(k): json.loads(v) for k, v in raw.items()}

    async def set_setting(self, session_id: str, key: str, value: JSON | None) -> None:
        name = self.key("settings", session_id)
        if value is None:
            await self.client.hdel(name, key)
        else:
            await self.client.hset(name, key, json.dumps(value))

    async def kv_get(self, namespace: str, key: str) -> JSON | None:
        raw = await self.client.hget(self.key("kv", namespace), key)
        return json.loads(raw) if raw is not None else None

    async def kv_get_all(self, namespace: str) -> dict[str, JSON]:
        raw = await self.client.hgetall(self.key("kv", namespace))
        return {str(k): json.loads(v) for k, v in raw.items()}

    async def kv_set(self, namespace: str, key: str, value: JSON) -> None:
        await self.client.hset(self.key("kv", namespace), key, json.dumps(value))

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self.client.hdel(self.key("kv", namespace), key)

    async def kv_update(self, namespace: str, key: str, update: Updater) -> JSON | None:
        name = self.key("kv", namespace)
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(name)
                    raw = await pipe.hget(name, key)
                    new = update(json.loads(raw) if raw is not None else None)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if new is None:
                        pipe.hdel(name, key)
                    else:
                        pipe.hset(name, key, json.dumps(new))
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def inbox_add(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float] | None = None
    ) -> int | None:
        taken = await self._submit_add(dedupe_key, data, claim, opening=False)
        return None if taken is None else taken[0]

    async def inbox_take(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float]
    ) -> tuple[int, bool] | None:
        # Opened in the script only when its chat has nothing pending: the script runs
        # alone, so a message of the same chat stored meanwhile by another process comes
        # after it (a later id) and sees it pending.
        return await self._submit_add(dedupe_key, data, claim, opening=True)

    async def _submit_add(
        self,
        dedupe_key: str,
        data: dict[str, JSON],
        claim: tuple[str, float] | None,
        *,
        opening: bool,
    ) -> tuple[int, bool] | None:
        """One message into the next ``INBOX_ADD`` batch: (id, opened), None if seen."""
        token, ttl = claim or ("", 0.0)
        lease = max(1, int(ttl * 1000))
        row = (dedupe_key, to_json(data), chat_of(data), token, lease, int(opening))
        return await self._inbox_adds.submit(row)

    async def _inbox_write(
        self, rows: list[tuple[str, str, str, str, int, int]]
    ) -> list[tuple[int, bool] | None]:
        keys = [
            self.key("inbox", "next"),
            self.key("inbox", "item", ""),
            self.key("inbox", "pending"),
            self.key("inbox", "chat", ""),
            self.key("inbox", "claim", ""),
        ]
        keys += [self.key("inbox", "dedupe", row[0]) for row in rows]
        args: list[Any] = [DEDUPE_TTL]
        for _, data, chat, token, lease, opening in rows:
            args += [data, chat, token, lease, opening]
        found = [int(n) for n in await run_script(self.client, INBOX_ADD, keys, args)]
        pairs = zip(found[::2], found[1::2], strict=True)
        return [(n, bool(opened)) if n else None for n, opened in pairs]

    async def inbox_pending(self) -> list[InboxItem]:
        ids = await self.inbox_pending_ids()
        async with self.client.pipeline(transaction=False) as pipe:
            for item_id in ids:
                pipe.hgetall(self.key("inbox", "item", str(item_id)))
            rows = await pipe.execute()
        return [self._item(n, raw) for n, raw in zip(ids, rows, strict=True) if raw]

    async def inbox_pending_ids(self) -> list[int]:
        return [int(str(i)) for i in await self.client.zrange(self.key("inbox", "pending"), 0, -1)]

    async def inbox_get(self, item_id: int) -> InboxItem | None:
        raw = await self.client.hgetall(self.key("inbox", "item", str(item_id)))
        return self._item(item_id, raw) if raw else None

    @staticmethod
    def _item(item_id: int, raw: Any) -> InboxItem:
        reply = json.loads(raw["reply"]) if raw.get("reply") else None
        return InboxItem(
            item_id, json.loads(raw["data"]), reply, int(raw["sent"]), int(raw["attempts"])
        )

    async def inbox_begin(self, item_id: int) -> int:
        key = self.key("inbox", "item", str(item_id))
        return int(str(await self.client.hincrby(key, "attempts", 1)))

    async def inbox_open(
        self, item_id: int, claim: str | None = None, turn: Sequence[int] = ()
    ) -> InboxItem | None:
        keys = [
            self.key("inbox", "item", str(item_id)),
            self.key("inbox", "chat", ""),
            self.key("inbox", "claim", ""),
        ]
        args = [item_id, claim or "", *turn]
        flat = await run_script(self.client, OPEN, keys, args)
        if flat == 0:
            raise EarlierPending(item_id)
        if not flat:
            return None
        return self._item(item_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def inbox_set_reply(self, item_id: int, parts: list[JSON]) -> None:
        await self.client.hset(
            self.key("inbox", "item", str(item_id)), "reply", json.dumps(parts, ensure_ascii=False)
        )

    async def inbox_mark_sent(self, item_id: int, sent: int) -> None:
        await self.client.hset(self.key("inbox", "item", str(item_id)), "sent", sent)

    async def inbox_done(self, item_id: int) -> list[int]:
        keys = [
            self.key("inbox", "pending"),
            self.key("inbox", "item", str(item_id)),
            self.key("inbox", "claim", ""),
            self.key("inbox", "chat", ""),
        ]
        return [int(str(n)) for n in await run_script(self.client, DONE, keys, [item_id])]

    async def inbox_claim(self, item_id: int, token: str, ttl: float) -> bool:
        return bool(await self.inbox_claim_many({item_id: token}, ttl))

    async def inbox_claim_many(self, claims: Mapping[int, str], ttl: float) -> list[int]:
        if not claims:
            return []
        pairs = _pairs(claims)
        taken = await run_script(
            self.client,
            CLAIM_MANY,
            [self.key("inbox", "pending"), self.key("inbox", "claim", "")],
            [max(1, int(ttl * 1000)), *pairs],
        )
        return [int(str(n)) for n in taken]

    async def inbox_renew(self, claims: Mapping[int, str], ttl: float) -> set[int]:
        if not claims:
            return set()
        pairs = _pairs(claims)
        lost = await run_script(
            self.client,
            RENEW_MANY,
            [self.key("inbox", "claim", "")],
            [max(1, int(ttl * 1000)), *pairs],
        )
        return {int(str(n)) for n in lost}

    async def inbox_release(self, item_id: int, token: str) -> None:
        await run_script(self.client, RELEASE, [self.key("inbox", "claim", str(item_id))], [token])
