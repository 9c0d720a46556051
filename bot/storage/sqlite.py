"""SQLite storage (the default): one file under ``CHATLANE_DATA_DIR``, WAL mode.

aiosqlite runs every statement on one background thread per connection, so
statements from different tasks are serialized. No transaction spans an
await (another task's statement would land inside it): every statement
autocommits and is read to its end in one trip, and a read-modify-write
(``kv_update``, ``set_setting``) holds ``_write_lock`` instead, which is
enough since only this process writes the file. Every write through
aiosqlite holds that lock, so the two connections never write at once: in
WAL mode a write that finds its snapshot moved on by the other connection
fails at once with "database is locked", whatever the busy timeout.

The writes on every turn's path (``_hot_write``: the transcript insert and
the record that a reply part was sent) go through a second, plain
``sqlite3`` connection on the event loop's own thread: a single-statement
insert in WAL mode takes about 0.1 ms there, against about 0.8 ms for the
hop to aiosqlite's thread and back under load. It never waits on a lock
(``busy_timeout=0``: when another write holds the database it falls back
to the aiosqlite path) and never checkpoints (``wal_autocheckpoint=0``);
every ``CHECKPOINT_EVERY`` fast writes a passive checkpoint runs on
aiosqlite's thread instead.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite

from bot.config import data_dir
from bot.messages import Message
from bot.storage.base import JSON, InboxItem, LocalClaims, Updater, to_json
from bot.storage.batch import Batcher

# Message ids are rowids without AUTOINCREMENT (that would write sqlite_sequence's page on
# every turn): a rowid is only reused after the highest row is deleted, and transcript rows
# are never deleted (a reset moves the session to a new epoch). Files made before this
# keep their AUTOINCREMENT table; both read and write the same way.
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages (session_id, epoch, id);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL DEFAULT 0,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    reply TEXT,
    sent INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL DEFAULT (strftime('%s', 'now'))
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (done, id);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""


CHECKPOINT_EVERY = 500


class SQLiteStorage(LocalClaims):
    """One process owns the file (``shared`` is False); use Redis to scale out."""

    shared = False
    # The default backend: ``chatlane.sqlite3`` under ``CHATLANE_DATA_DIR``.
    url_env: ClassVar[str | None] = None
    schemes: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0
    default: ClassVar[bool] = True
    # Locked past the busy timeout, disk full, file unreadable just now.
    unavailable: ClassVar[tuple[type[Exception], ...]] = (sqlite3.OperationalError,)

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._epochs: dict[str, int] = {}
        self._fast: sqlite3.Connection | None = None
        self._fast_writes = 0
        self._checkpoint: asyncio.Future[Any] | None = None
        self._inbox_adds: Batcher[tuple[str, str, int], int | None] = Batcher(self._inbox_write)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, max_connections: int | None = None
    ) -> SQLiteStorage:
        return cls(data_dir(env) / "chatlane.sqlite3")

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteStorage is not open; call await storage.open() first")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = aiosqlite.connect(self.path, isolation_level=None)
        # A runtime the caller forgot to close must not keep the process alive at exit.
        worker = getattr(connection, "_thread", None)
        if worker is not None:
            worker.daemon = True
        self._db = await connection
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.executescript(SCHEMA)
        fast = sqlite3.connect(self.path, isolation_level=None)
        fast.execute("PRAGMA synchronous=NORMAL")
        fast.execute("PRAGMA busy_timeout=0")
        fast.execute("PRAGMA wal_autocheckpoint=0")
        self._fast = fast
        # Done inbox rows stay a week so late redeliveries are still recognised.
        await self._db.execute(
            "DELETE FROM inbox WHERE done = 1 AND created < strftime('%s', 'now') - 604800"
        )

    async def close(self) -> None:
        await self._inbox_adds.close()
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
            self._checkpoint = None
        if self._fast is not None:
            fast, self._fast = self._fast, None
            fast.close()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> bool:
        if self._db is None:
            return False
        try:
            return await self._row("SELECT 1") is not None
        except (sqlite3.Error, ValueError):
            return False

    async def _epoch(self, session_id: str) -> int:
        cached = self._epochs.get(session_id)
        if cached is not None:
            return cached
        row = await self._row("SELECT epoch FROM sessions WHERE session_id = ?", (session_id,))
        epoch = int(row[0]) if row else 0
        if len(self._epochs) > 10_000:
            self._epochs.clear()
        self._epochs[session_id] = epoch
        return epoch

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
        epoch = await self._epoch(session_id)
        # One statement, so one implicit transaction. Its rows take consecutive rowids (the
        # write lock is held throughout, and each new rowid is the largest plus one), so the
        # last one gives them all: cheaper than RETURNING, which runs through a temporary table.
        rows = ", ".join("(?, ?, ?)" for _ in messages)
        params: list[Any] = []
        for message in messages:
            params += [session_id, epoch, to_json(message.to_dict())]
        insert = f"INSERT INTO messages (session_id, epoch, data) VALUES {rows}"
        if reply is None:
            last = await self._hot_write(insert, params)
        else:  # one transaction, one commit
            item_id, parts = reply
            set_reply = ("UPDATE inbox SET reply = ? WHERE id = ?", (to_json(parts), item_id))
            last = await self._hot_transaction([(insert, params), set_reply])
        first = last - len(messages) + 1
        return [message.with_id(first + i) for i, message in enumerate(messages)]

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run and read a statement to its end in one trip to aiosqlite's thread: no read
        transaction stays open across an await (another task's write on this connection
        would then fail on a snapshot the fast connection has moved past)."""
        return list(await self.db.execute_fetchall(sql, params))

    async def _hot_write(self, sql: str, params: Sequence[Any]) -> int:
        """One autocommitted write on the loop's thread, or, while another write holds
        the database, on aiosqlite's thread after it; returns the last inserted rowid."""
        last = self._fast_write(sql, params)
        if last is None:
            async with self._write_lock, self.db.execute(sql, params) as cursor:
                return cursor.lastrowid or 0
        self._count_fast_writes(1)
        return last

    async def _hot_transaction(self, statements: list[tuple[str, Sequence[Any]]]) -> int:
        """``_hot_write`` for several statements in one transaction (one commit); returns
        the first one's last inserted rowid."""
        last = self._fast_transaction(statements)
        if last is None:
            async with self._write_lock:
                await self.db.execute("BEGIN IMMEDIATE")
                try:
                    async with self.db.execute(*statements[0]) as cursor:
                        last = cursor.lastrowid or 0
                    for statement in statements[1:]:
                        await self.db.execute(*statement)
                except BaseException:
                    await self.db.execute("ROLLBACK")
                    raise
                await self.db.execute("COMMIT")
            return last
        self._count_fast_writes(len(statements))
        return last

    def _fast_transaction(self, statements: list[tuple[str, Sequence[Any]]]) -> int | None:
        """``_fast_write`` for several statements in one transaction; None (nothing
        written) if the database is busy."""
        fast = self._fast
        if fast is None or self._write_lock.locked():
            return None
        try:
            fast.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return None
            raise
        try:
            last = fast.execute(*statements[0]).lastrowid or 0
            for statement in statements[1:]:
                fast.execute(*statement)
            fast.execute("COMMIT")
        except BaseException:
            if fast.in_transaction:
                fast.execute("ROLLBACK")
            raise
        return last

    def _count_fast_writes(self, rows: int) -> None:
        before, self._fast_writes = self._fast_writes, self._fast_writes + rows
        if before // CHECKPOINT_EVERY != self._fast_writes // CHECKPOINT_EVERY and (
            self._checkpoint is None or self._checkpoint.done()
        ):  # in the background, on aiosqlite's thread: no turn waits for the disk
            self._checkpoint = asyncio.ensure_future(
                self.db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            )

    def _fast_write(self, sql: str, params: Sequence[Any]) -> int | None:
        """The statement on the fast connection (its last rowid); None if the database
        is busy."""
        if self._fast is None or self._write_lock.locked():
            return None
        try:
            return self._fast.execute(sql, params).lastrowid or 0
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return None
            raise

    async def load_messages(self, session_id: str, after_id: int | None = None) -> list[Message]:
        epoch = await self._epoch(session_id)
        rows = await self._rows(
            "SELECT id, data FROM messages WHERE session_id = ? AND epoch = ? AND id > ? "
            "ORDER BY id",
            (session_id, epoch, after_id or 0),
        )
        return [Message.from_dict(json.loads(data), message_id=row_id) for row_id, data in rows]

    async def reset_session(self, session_id: str) -> None:
        await self._hot_rows(
            "INSERT INTO sessions (session_id, epoch) VALUES (?, 1) "
            "ON CONFLICT(session_id) DO UPDATE SET epoch = epoch + 1",
            (session_id,),
        )
        self._epochs.pop(session_id, None)

    async def get_settings(self, session_id: str) -> dict[str, JSON]:
        row = await self._row("SELECT settings FROM sessions WHERE session_id = ?", (session_id,))
        settings: dict[str, JSON] = json.loads(row[0]) if row else {}
        return settings

    async def set_setting(self, session_id: str, key: str, value: JSON | None) -> None:
        async with self._write_lock:
            settings = await self.get_settings(session_id)
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
            await self._rows(
                "INSERT INTO sessions (session_id, settings) VALUES (?, ?) "
                "ON CONFLICT(session_id) DO UPDATE SET settings = excluded.settings",
                (session_id, json.dumps(settings)),
            )

    async def kv_get(self, namespace: str, key: str) -> JSON | None:
        row = await self._row(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        )
        return json.loads(row[0]) if row else None

    async def kv_get_all(self, namespace: str) -> dict[str, JSON]:
        rows = await self._rows("SELECT key, value FROM kv WHERE namespace = ?", (namespace,))
        return {key: json.loads(value) for key, value in rows}

    async def kv_set(self, namespace: str, key: str, value: JSON) -> None:
        await self._hot_rows(*self._kv_set(namespace, key, value))

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._hot_rows(*self._kv_delete(namespace, key))

    @staticmethod
    def _kv_set(namespace: str, key: str, value: JSON) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, json.dumps(value)),
        )

    @staticmethod
    def _kv_delete(namespace: str, key: str) -> tuple[str, tuple[Any, ...]]:
        return "DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key)

    async def kv_update(self, namespace: str, key: str, update: Updater) -> JSON | None:
        # Only this process writes the file, so the lock makes read-update-write atomic;
        # no BEGIN spanning awaits, which other tasks' statements on this connection
        # would join (and a ROLLBACK would take with it).
        async with self._write_lock:
            new = update(await self.kv_get(namespace, key))
            if new is None:
                await self._rows(*self._kv_delete(namespace, key))
            else:
                await self._rows(*self._kv_set(namespace, key, new))
        return new

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._hot_rows(sql, params)

    async def inbox_add(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float] | None = None
    ) -> int | None:
        # Group commit: the adds of concurrent requests go into one statement, one commit,
        # and each returns once its row is committed.
        item_id = await self._inbox_adds.submit((dedupe_key, to_json(data), 0))
        if item_id is not None and claim is not None:
            await self.inbox_claim(item_id, *claim)
        return item_id

    async def inbox_take(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float]
    ) -> tuple[int, bool] | None:
        # Only this process answers from it: its mailbox keeps each chat's order. Stored
        # with its first attempt counted.
        item_id = await self._inbox_adds.submit((dedupe_key, to_json(data), 1))
        if item_id is None:
            return None
        await self.inbox_claim(item_id, *claim)
        return item_id, True

    async def _inbox_write(self, rows: list[tuple[str, str, int]]) -> list[int | None]:
        """Insert (dedupe, data, attempts) rows in one autocommitted statement; each row's
        id, or None for a key seen before (in this batch too). On the loop's thread, as
        ``_hot_write``, unless another write holds the database."""
        values = ", ".join("(?, ?, ?)" for _ in rows)
        sql = (
            f"INSERT INTO inbox (dedupe, data, attempts) VALUES {values} "
            "ON CONFLICT(dedupe) DO NOTHING RETURNING id, dedupe"
        )
        params = [value for row in rows for value in row]
        found = self._fast_rows(sql, params)
        if found is None:
            async with self._write_lock:
                found = await self._rows(sql, params)
        else:
            self._count_fast_writes(len(rows))
        # RETURNING's order is unspecified: match by key. A key given twice was inserted
        # once; its second occurrence is a duplicate.
        ids = {dedupe: int(row_id) for row_id, dedupe in found}
        return [ids.pop(dedupe, None) for dedupe, _, _ in rows]

    async def _hot_rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A write on the loop's thread, as ``_hot_write``, read to its end (RETURNING)."""
        found = self._fast_rows(sql, params)
        if found is None:
            async with self._write_lock:
                return await self._rows(sql, params)
        self._count_fast_writes(1)
        return found

    def _fast_rows(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        """``_fast_write`` for a statement with RETURNING: its rows, read to the end (so
        it has committed); None if the database is busy."""
        if self._fast is None or self._write_lock.locked():
            return None
        try:
            return self._fast.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return None
            raise

    def _item(self, row: Sequence[Any]) -> InboxItem:
        item_id, data, reply, sent, attempts = row
        return InboxItem(
            int(item_id), json.loads(data), json.loads(reply) if reply else None, sent, attempts
        )

    async def inbox_pending(self) -> list[InboxItem]:
        rows = await self._rows(
            "SELECT id, data, reply, sent, attempts FROM inbox WHERE done = 0 ORDER BY id"
        )
        return [self._item(row) for row in rows]

    async def inbox_pending_ids(self) -> list[int]:
        rows = await self._rows("SELECT id FROM inbox WHERE done = 0 ORDER BY id")
        return [int(row[0]) for row in rows]

    async def inbox_get(self, item_id: int) -> InboxItem | None:
        row = await self._row(
            "SELECT id, data, reply, sent, attempts FROM inbox WHERE id = ? AND done = 0",
            (item_id,),
        )
        return self._item(row) if row else None

    async def inbox_begin(self, item_id: int) -> int:
        rows = await self._hot_rows(
            "UPDATE inbox SET attempts = attempts + 1 WHERE id = ? RETURNING attempts", (item_id,)
        )
        return int(rows[0][0]) if rows else 0

    async def inbox_open(
        self, item_id: int, claim: str | None = None, turn: Sequence[int] = ()
    ) -> InboxItem | None:
        # Only this process answers from it: its mailbox keeps each chat's order.
        rows = await self._hot_rows(
            "UPDATE inbox SET attempts = attempts + 1 WHERE id = ? AND done = 0 "
            "RETURNING id, data, reply, sent, attempts",
            (item_id,),
        )
        return self._item(rows[0]) if rows else None

    async def inbox_set_reply(self, item_id: int, parts: list[JSON]) -> None:
        await self._hot_rows("UPDATE inbox SET reply = ? WHERE id = ?", (to_json(parts), item_id))

    async def inbox_mark_sent(self, item_id: int, sent: int) -> None:
        # Recorded the moment the platform has the part, with no await in between when
        # the database is free: a kill -9 right after a send is what makes a duplicate.
        await self._hot_write("UPDATE inbox SET sent = ? WHERE id = ?", (sent, item_id))

    async def inbox_done(self, item_id: int) -> list[int]:
        # The record of a reply's last part: written as soon as the platform has it.
        await self._hot_write(
            "UPDATE inbox SET done = 1, reply = NULL, data = '{}' WHERE id = ?", (item_id,)
        )
        self._claims.pop(item_id, None)
        return []
