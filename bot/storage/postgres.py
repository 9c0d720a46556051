"""PostgreSQL storage: every durable thing in one database when ``DATABASE_URL`` is set.

For a PaaS, whose disk is wiped on every restart: transcripts, settings, the
inbox with its claims, key-value state (cooldowns, summaries) and media bytes
(``MediaBlobs``: the local media directory is then a cache) live in
``chatlane_*`` tables (``bot.storage.postgres_schema``), shared by every
process (``shared`` is True). With ``REDIS_URL`` as well, lanes stay in Redis.

The driver is asyncpg: asyncio-native, a connection pool built in, prepared
statements cached per connection, and the binary protocol; about twice as
fast per statement as psycopg 3 in asyncio, which matters on the path every
webhook takes (``inbox_add``, group-committed as in the other backends).

Every operation is one statement in autocommit, except ``kv_update`` and
``set_setting``: a short transaction holding an advisory lock on the key,
atomic across processes. Claims are columns of the inbox row (a token and an
expiry on the server's clock), so a claim, its renewal and its release are
each one conditional ``UPDATE``, fenced by the token.

Outages: taking a connection retries a refused or failed connect for
``retry_for`` seconds (a restart, a failover); past that, and on a
connection lost mid-statement, the error is raised as ``PostgresUnavailable``
(one of ``bot.storage.base.UNAVAILABLE``): the message stays stored and is
answered once the database is back. A statement whose connection died under
it is sent once more on a fresh one only when running it twice changes
nothing (reads, writes of a value, claims by token, deduplicated inbox adds);
a transcript append, an attempt count or a ``kv_update`` is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import asyncpg

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
from bot.storage.postgres_schema import KV_LOCK, SETTINGS_LOCK, migrate

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_POOL_SIZE = 8
DEDUPE_DAYS = 7


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be reached or written just now: try again later."""


class _ConnectionLost(PostgresUnavailable):
    """A connection died under a statement (not: no connection could be made)."""


# Refused, reset or timed out; the server shutting down, starting, or out of connections,
# memory or disk; a statement cancelled for running too long.
UNREACHABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# ...and a pool or connection already closed by that.
_GONE: tuple[type[Exception], ...] = (*UNREACHABLE, asyncpg.InterfaceError)

_ITEM = "SELECT id, data, reply, sent, attempts FROM chatlane_inbox"
_Add = tuple[str, str, str, str | None, float]  # an inbox add: dedupe, data, chat, claim
# ``inbox_open`` with a claim, one statement: whether an earlier pending message of the
# item's chat is not one of the turn's ($3); if so the item's claim ($2) is released,
# else its attempt is counted and it is read.
_OPEN_IN_ORDER = """
WITH item AS (SELECT id, chat FROM chatlane_inbox WHERE id = $1 AND NOT done),
waits AS (
  SELECT EXISTS (
    SELECT 1 FROM chatlane_inbox e JOIN item ON e.chat = item.chat
    WHERE e.id < item.id AND NOT e.done AND e.id <> ALL($3::bigint[])
  ) AS yes
),
released AS (
  UPDATE chatlane_inbox i SET claim_token = NULL, claim_until = NULL FROM waits
  WHERE waits.yes AND i.id = $1 AND i.claim_token = $2 RETURNING i.id
),
opened AS (
  UPDATE chatlane_inbox i SET attempts = i.attempts + 1 FROM waits
  WHERE NOT waits.yes AND i.id = $1 AND NOT i.done
  RETURNING i.id, i.data, i.reply, i.sent, i.attempts
)
SELECT waits.yes, opened.id, opened.data, opened.reply, opened.sent, opened.attempts
FROM waits LEFT JOIN opened ON true
"""
# ``inbox_done``: the row emptied and marked; the chat's later pending rows nobody holds.
_DONE = """
WITH done AS (
  UPDATE chatlane_inbox SET done = true, reply = NULL, data = '{}',
    claim_token = NULL, claim_until = NULL
  WHERE id = $1 RETURNING chat
)
SELECT i.id FROM chatlane_inbox i JOIN done ON i.chat = done.chat
WHERE i.id > $1 AND NOT i.done AND (i.claim_until IS NULL OR i.claim_until <= clock_timestamp())
ORDER BY i.id
"""
_EPOCH = "coalesce((SELECT epoch FROM chatlane_sessions WHERE session_id = $1), 0)"


def pool_size(env: Mapping[str, str], max_connections: int | None = None) -> int:
    """``DATABASE_POOL_SIZE``, else the smaller of the caller's bound and the default: a
    PaaS database takes few connections (20 on Heroku's smallest plans), shared by
    every process."""
    raw = env.get("DATABASE_POOL_SIZE", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(
                f"DATABASE_POOL_SIZE: {raw!r} is not a positive whole number; "
                f"set it to the connections one process may hold, e.g. {DEFAULT_POOL_SIZE}"
            )
        return int(raw)
    return min(max_connections or DEFAULT_POOL_SIZE, DEFAULT_POOL_SIZE)


class PostgresStorage:
    shared = True
    url_env: ClassVar[str | None] = "DATABASE_URL"
    schemes: ClassVar[tuple[str, ...]] = ("postgres", "postgresql")
    priority: ClassVar[int] = 20  # above Redis: with both, durable state lives here
    default: ClassVar[bool] = False
    unavailable: ClassVar[tuple[type[Exception], ...]] = (PostgresUnavailable,)

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, retry_for: float = 5.0):
        self.url = url
        self.pool_size = pool_size
        self.retry_for = retry_for
        self._pool: asyncpg.Pool | None = None
        self._inbox_adds: Batcher[_Add, int | None] = Batcher(self._inbox_write)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, max_connections: int | None = None
    ) -> PostgresStorage:
        return cls(env["DATABASE_URL"], pool_size=pool_size(env, max_connections))

    def __repr__(self) -> str:  # the URL holds the password: never shown
        return f"<PostgresStorage pool_size={self.pool_size}>"

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStorage is not open; call await storage.open() first")
        return self._pool

    async def open(self) -> None:
        """Connect, apply the migrations this database lacks, purge old answered rows."""
        if self._pool is not None:
            return
        self._pool = await self._retrying(
            lambda: asyncpg.create_pool(
                self.url,
                # No floor: asyncpg restores one with a traceback in the log each
                # second-to-minute of an outage; connections are made when needed.
                min_size=0,
                max_size=self.pool_size,
                timeout=5,  # to connect
                command_timeout=30,
                max_inactive_connection_lifetime=300,
            ),
            "connect",
        )
        try:
            async with self._connection() as connection:
                await migrate(connection)
                await connection.execute(
                    "DELETE FROM chatlane_inbox WHERE done "
                    "AND created < now() - make_interval(days => $1)",
                    DEDUPE_DAYS,
                )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self._inbox_adds.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except UNREACHABLE:
                pool.terminate()

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(2):  # a health check answers quickly
                return bool(await self._pool.fetchval("SELECT 1") == 1)
        except _GONE:
            return False

    async def _retrying(self, attempt: Any, what: str) -> Any:
        """``attempt()`` again while the connect fails, for up to ``retry_for`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        pause = 0.05
        while True:
            try:
                return await attempt()
            except UNREACHABLE as error:
                if loop.time() + pause > deadline:
                    message = f"PostgreSQL unreachable ({what}): {error}"
                    raise PostgresUnavailable(message) from error
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self.pool
        connection = await self._retrying(pool.acquire, "connect")
        try:
            yield connection
        except UNREACHABLE as error:
            raise _ConnectionLost(f"PostgreSQL connection lost: {error}") from error
        finally:
            with contextlib.suppress(*_GONE):
                await pool.release(connection)

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, once: bool) -> T:
        """``work`` on a pooled connection. When the connection dies under it (one that
        sat idle through a restart), it runs once more on a new one, unless ``once``:
        work that may have been done already and would then be done twice. No
        connection within ``retry_for`` is not tried again: a webhook gets its 503 then."""
        try:
            async with self._connection() as connection:
                return await work(connection)
        except _ConnectionLost:
            if once:
                raise
        async with self._connection() as connection:
            return await work(connection)

    async def _fetch(self, sql: str, *args: Any, once: bool = False) -> list[Any]:
        return await self._run(lambda c: c.fetch(sql, *args), once=once)

    async def _fetchval(self, sql: str, *args: Any, once: bool = False) -> Any:
        return await self._run(lambda c: c.fetchval(sql, *args), once=once)

    async def _execute(self, sql: str, *args: Any, once: bool = False) -> None:
        await self._run(lambda c: c.execute(sql, *args), once=once)

    async def append_messages(
        self,
        session_id: str,
        messages: Sequence[Message],
        reply: tuple[int, list[JSON]] | None = None,
    ) -> list[Message]:
        if not messages:
            if reply is not None:
                await self.inbox_set_reply(*reply)
            return []
        insert = (
            "INSERT INTO chatlane_messages (session_id, epoch, data) "
            f"SELECT $1, {_EPOCH}, d FROM unnest($2::text[]) WITH ORDINALITY AS t(d, n) "
            "ORDER BY n RETURNING id"
        )
        args: list[Any] = [session_id, [to_json(m.to_dict()) for m in messages]]
        if reply is not None:  # one statement: the reply with the transcript
            insert = "WITH r AS (UPDATE chatlane_inbox SET reply = $4 WHERE id = $3) " + insert
            args += [reply[0], to_json(reply[1])]
        rows = await self._fetch(insert, *args, once=True)
        ids = sorted(int(row[0]) for row in rows)  # taken in the rows' order
        return [m.with_id(n) for m, n in zip(messages, ids, strict=True)]

    async def load_messages(self, session_id: str, after_id: int | None = None) -> list[Message]:
        rows = await self._fetch(
            "SELECT id, data FROM chatlane_messages "
            f"WHERE session_id = $1 AND epoch = {_EPOCH} AND id > $2 ORDER BY id",
            session_id,
            after_id or 0,
        )
        return [Message.from_dict(json.loads(data), message_id=int(n)) for n, data in rows]

    async def reset_session(self, session_id: str) -> None:
        await self._execute(
            "INSERT INTO chatlane_sessions (session_id, epoch) VALUES ($1, 1) "
            "ON CONFLICT (session_id) DO UPDATE SET epoch = chatlane_sessions.epoch + 1",
            session_id,
            once=True,
        )

    async def get_settings(self, session_id: str) -> dict[str, JSON]:
        raw = await self._fetchval(
            "SELECT settings FROM chatlane_sessions WHERE session_id = $1", session_id
        )
        settings: dict[str, JSON] = json.loads(raw) if raw else {}
        return settings

    async def set_setting(self, session_id: str, key: str, value: JSON | None) -> None:
        async def write(connection: asyncpg.Connection) -> None:
            async with connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", SETTINGS_LOCK, session_id
                )
                raw = await connection.fetchval(
                    "SELECT settings FROM chatlane_sessions WHERE session_id = $1", session_id
                )
                settings = json.loads(raw) if raw else {}
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
                await connection.execute(
                    "INSERT INTO chatlane_sessions (session_id, settings) VALUES ($1, $2) "
                    "ON CONFLICT (session_id) DO UPDATE SET settings = excluded.settings",
                    session_id,
                    json.dumps(settings),
                )

        await self._run(write, once=False)

    async def kv_get(self, namespace: str, key: str) -> JSON | None:
        raw = await self._fetchval(
            "SELECT value FROM chatlane_kv WHERE namespace = $1 AND key = $2", namespace, key
        )
        return json.loads(raw) if raw is not None else None

    async def kv_get_all(self, namespace: str) -> dict[str, JSON]:
        rows = await self._fetch(
            "SELECT key, value FROM chatlane_kv WHERE namespace = $1", namespace
        )
        return {str(key): json.loads(value) for key, value in rows}

    async def kv_set(self, namespace: str, key: str, value: JSON) -> None:
        await self._execute(_KV_SET, namespace, key, json.dumps(value))

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._execute(_KV_DELETE, namespace, key)

    async def kv_update(self, namespace: str, key: str, update: Updater) -> JSON | None:
        # The lock, not SELECT ... FOR UPDATE: it also holds while the row does not exist.
        async def write(connection: asyncpg.Connection) -> JSON | None:
            async with connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    KV_LOCK,
                    f"{namespace}\x1f{key}",
                )
                raw = await connection.fetchval(
                    "SELECT value FROM chatlane_kv WHERE namespace = $1 AND key = $2",
                    namespace,
                    key,
                )
                new = update(json.loads(raw) if raw is not None else None)
                if new is None:
                    await connection.execute(_KV_DELETE, namespace, key)
                else:
                    await connection.execute(_KV_SET, namespace, key, json.dumps(new))
            return new

        return await self._run(write, once=True)

    async def inbox_add(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float] | None = None
    ) -> int | None:
        # Group commit: concurrent adds share one statement, one commit.
        token, ttl = claim or (None, 0.0)
        return await self._inbox_adds.submit((dedupe_key, to_json(data), chat_of(data), token, ttl))

    async def inbox_take(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float]
    ) -> tuple[int, bool] | None:
        # Not opened here: two processes storing a chat's messages at once would each see
        # no earlier one pending (neither insert is committed yet), and the later message
        # could be answered first. The turn's one-statement open checks what is committed.
        item_id = await self.inbox_add(dedupe_key, data, claim)
        return None if item_id is None else (item_id, False)

    async def _inbox_write(self, rows: list[_Add]) -> list[int | None]:
        """Insert (dedupe, data, chat, claim token, claim ttl) rows in one statement; each
        row's id, or None for a key seen before (in this batch too: its first occurrence
        is stored)."""
        found = await self._fetch(
            "INSERT INTO chatlane_inbox (dedupe, data, chat, claim_token, claim_until) "
            "SELECT d, x, c, k, CASE WHEN k IS NULL THEN NULL "
            "ELSE clock_timestamp() + make_interval(secs => s) END "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) "
            "WITH ORDINALITY AS t(d, x, c, k, s, n) "
            "ORDER BY n ON CONFLICT (dedupe) DO NOTHING RETURNING id, dedupe",
            *(list(column) for column in zip(*rows, strict=True)),
        )
        ids = {str(dedupe): int(n) for n, dedupe in found}
        return [ids.pop(row[0], None) for row in rows]

    @staticmethod
    def _item(row: Sequence[Any]) -> InboxItem:
        item_id, data, reply, sent, attempts = row
        return InboxItem(
            int(item_id), json.loads(data), json.loads(reply) if reply else None, sent, attempts
        )

    async def inbox_pending(self) -> list[InboxItem]:
        return [self._item(row) for row in await self._fetch(f"{_ITEM} WHERE NOT done ORDER BY id")]

    async def inbox_pending_ids(self) -> list[int]:
        rows = await self._fetch("SELECT id FROM chatlane_inbox WHERE NOT done ORDER BY id")
        return [int(row[0]) for row in rows]

    async def inbox_get(self, item_id: int) -> InboxItem | None:
        rows = await self._fetch(f"{_ITEM} WHERE id = $1 AND NOT done", item_id)
        return self._item(rows[0]) if rows else None

    async def inbox_begin(self, item_id: int) -> int:
        attempts = await self._fetchval(
            "UPDATE chatlane_inbox SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
            item_id,
            once=True,
        )
        return int(attempts or 0)

    async def inbox_open(
        self, item_id: int, claim: str | None = None, turn: Sequence[int] = ()
    ) -> InboxItem | None:
        if claim is None:
            rows = await self._fetch(
                "UPDATE chatlane_inbox SET attempts = attempts + 1 WHERE id = $1 AND NOT done "
                "RETURNING id, data, reply, sent, attempts",
                item_id,
                once=True,
            )
            return self._item(rows[0]) if rows else None
        rows = await self._fetch(_OPEN_IN_ORDER, item_id, claim, list(turn), once=True)
        if not rows:
            return None
        waits, *item = rows[0]
        if waits:
            raise EarlierPending(item_id)
        return self._item(item) if item[0] is not None else None

    async def inbox_set_reply(self, item_id: int, parts: list[JSON]) -> None:
        await self._execute(
            "UPDATE chatlane_inbox SET reply = $2 WHERE id = $1", item_id, to_json(parts)
        )

    async def inbox_mark_sent(self, item_id: int, sent: int) -> None:
        await self._execute("UPDATE chatlane_inbox SET sent = $2 WHERE id = $1", item_id, sent)

    async def inbox_done(self, item_id: int) -> list[int]:
        # The row stays (its dedupe key recognises late redeliveries for a week), emptied.
        rows = await self._fetch(_DONE, item_id)
        return [int(row[0]) for row in rows]

    async def inbox_claim(self, item_id: int, token: str, ttl: float) -> bool:
        return bool(await self.inbox_claim_many({item_id: token}, ttl))

    async def inbox_claim_many(self, claims: Mapping[int, str], ttl: float) -> list[int]:
        if not claims:
            return []
        # Under READ COMMITTED a contender waits for the row and re-checks the condition
        # against the committed claim: one of two concurrent claims wins.
        rows = await self._fetch(
            "UPDATE chatlane_inbox AS i SET claim_token = c.token, "
            "claim_until = clock_timestamp() + make_interval(secs => $3) "
            "FROM unnest($1::bigint[], $2::text[]) AS c(id, token) "
            "WHERE i.id = c.id AND NOT i.done AND (i.claim_token IS NULL "
            "OR i.claim_token = c.token OR i.claim_until <= clock_timestamp()) RETURNING i.id",
            list(claims),
            list(claims.values()),
            float(ttl),
        )
        return [int(row[0]) for row in rows]

    async def inbox_renew(self, claims: Mapping[int, str], ttl: float) -> set[int]:
        if not claims:
            return set()
        rows = await self._fetch(
            "UPDATE chatlane_inbox AS i "
            "SET claim_until = clock_timestamp() + make_interval(secs => $3) "
            "FROM unnest($1::bigint[], $2::text[]) AS c(id, token) "
            "WHERE i.id = c.id AND NOT i.done AND i.claim_token = c.token "
            "AND i.claim_until > clock_timestamp() RETURNING i.id",
            list(claims),
            list(claims.values()),
            float(ttl),
        )
        return set(claims) - {int(row[0]) for row in rows}

    async def inbox_release(self, item_id: int, token: str) -> None:
        await self._execute(
            "UPDATE chatlane_inbox SET claim_token = NULL, claim_until = NULL "
            "WHERE id = $1 AND claim_token = $2",
            item_id,
            token,
        )

    async def blob_put(self, blob_id: str, data: bytes) -> bool:
        # Sent again after a lost connection: the row is there then, and nothing changes.
        stored = await self._fetchval(
            "INSERT INTO chatlane_media (id, data) VALUES ($1, $2) "
            "ON CONFLICT (id) DO NOTHING RETURNING true",
            blob_id,
            data,
        )
        return bool(stored)

    async def blob_get(self, blob_id: str) -> bytes | None:
        data: bytes | None = await self._fetchval(
            "SELECT data FROM chatlane_media WHERE id = $1", blob_id
        )
        return data

    async def blob_delete(self, blob_id: str) -> None:
        await self._execute("DELETE FROM chatlane_media WHERE id = $1", blob_id)


_KV_SET = (
    "INSERT INTO chatlane_kv (namespace, key, value) VALUES ($1, $2, $3) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value"
)
_KV_DELETE = "DELETE FROM chatlane_kv WHERE namespace = $1 AND key = $2"
