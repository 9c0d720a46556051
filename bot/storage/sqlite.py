"""SQLite storage (the default): one file under ``CHATLANE_DATA_DIR``, WAL mode.

aiosqlite runs every statement on one background thread per connection, so
statements from different tasks are serialized, but a transaction spans
several awaits: every multi-statement write takes ``_write_lock`` so two
tasks never share one transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.messages import Message
from bot.storage.base import JSON, InboxItem, LocalClaims, Updater

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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


class SQLiteStorage(LocalClaims):
    """One process owns the file (``shared`` is False); use Redis to scale out."""

    shared = False

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._epochs: dict[str, int] = {}

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
        # Done inbox rows stay a week so late redeliveries are still recognised.
        await self._db.execute(
            "DELETE FROM inbox WHERE done = 1 AND created < strftime('%s', 'now') - 604800"
        )

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> bool:
        if self._db is None:
            return False
        try:
            async with self._db.execute("SELECT 1") as cursor:
                return await cursor.fetchone() is not None
        except (sqlite3.Error, ValueError):
            return False

    async def _epoch(self, session_id: str) -> int:
        cached = self._epochs.get(session_id)
        if cached is not None:
            return cached
        async with self.db.execute(
            "SELECT epoch FROM sessions WHERE session_id = ?", (session_id,)
        ) as cursor:
            row = await cursor.fetchone()
        epoch = int(row[0]) if row else 0
        if len(self._epochs) > 10_000:
            self._epochs.clear()
        self._epochs[session_id] = epoch
        return epoch

    async def append_messages(self, session_id: str, messages: Sequence[Message]) -> list[Message]:
        if not messages:
            return []
        epoch = await self._epoch(session_id)
        # One statement, so one round trip to the database thread and one implicit transaction.
        rows = ", ".join("(?, ?, ?)" for _ in messages)
        params: list[Any] = []
        for message in messages:
            params += [session_id, epoch, json.dumps(message.to_dict(), ensure_ascii=False)]
        async with self._write_lock:
            returned = await self.db.execute_fetchall(  # one trip to the database thread
                f"INSERT INTO messages (session_id, epoch, data) VALUES {rows} RETURNING id",
                params,
            )
        ids = sorted(int(row[0]) for row in returned)
        return [message.with_id(ids[i]) for i, message in enumerate(messages)]

    async def load_messages(self, session_id: str, after_id: int | None = None) -> list[Message]:
        epoch = await self._epoch(session_id)
        async with self.db.execute(
            "SELECT id, data FROM messages WHERE session_id = ? AND epoch = ? AND id > ? "
            "ORDER BY id",
            (session_id, epoch, after_id or 0),
        ) as cursor:
            rows = await cursor.fetchall()
        return [Message.from_dict(json.loads(data), message_id=row_id) for row_id, data in rows]

    async def reset_session(self, session_id: str) -> None:
        await self.db.execute(
            "INSERT INTO sessions (session_id, epoch) VALUES (?, 1) "
            "ON CONFLICT(session_id) DO UPDATE SET epoch = epoch + 1",
            (session_id,),
        )
        self._epochs.pop(session_id, None)

    async def get_settings(self, session_id: str) -> dict[str, JSON]:
        async with self.db.execute(
            "SELECT settings FROM sessions WHERE session_id = ?", (session_id,)
        ) as cursor:
            row = await cursor.fetchone()
        settings: dict[str, JSON] = json.loads(row[0]) if row else {}
        return settings

    async def set_setting(self, session_id: str, key: str, value: JSON | None) -> None:
        async with self._write_lock:
            settings = await self.get_settings(session_id)
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
            await self.db.execute(
                "INSERT INTO sessions (session_id, settings) VALUES (?, ?) "
                "ON CONFLICT(session_id) DO UPDATE SET settings = excluded.settings",
                (session_id, json.dumps(settings)),
            )

    async def kv_get(self, namespace: str, key: str) -> JSON | None:
        async with self.db.execute(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        ) as cursor:
            row = await cursor.fetchone()
        return json.loads(row[0]) if row else None

    async def kv_get_all(self, namespace: str) -> dict[str, JSON]:
        async with self.db.execute(
            "SELECT key, value FROM kv WHERE namespace = ?", (namespace,)
        ) as cursor:
            rows = await cursor.fetchall()
        return {key: json.loads(value) for key, value in rows}

    async def kv_set(self, namespace: str, key: str, value: JSON) -> None:
        await self.db.execute(
            "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, json.dumps(value)),
        )

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self.db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    async def kv_update(self, namespace: str, key: str, update: Updater) -> JSON | None:
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                new = update(await self.kv_get(namespace, key))
                if new is None:
                    await self.kv_delete(namespace, key)
                else:
                    await self.kv_set(namespace, key, new)
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
        return new

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.db.execute(sql, params)

    async def inbox_add(self, dedupe_key: str, data: dict[str, JSON]) -> int | None:
        rows = await self.db.execute_fetchall(
            "INSERT INTO inbox (dedupe, data) VALUES (?, ?) ON CONFLICT(dedupe) DO NOTHING "
            "RETURNING id",
            (dedupe_key, json.dumps(data, ensure_ascii=False)),
        )
        rows = list(rows)
        return int(rows[0][0]) if rows else None

    def _item(self, row: Sequence[Any]) -> InboxItem:
        item_id, data, reply, sent, attempts = row
        return InboxItem(
            int(item_id), json.loads(data), json.loads(reply) if reply else None, sent, attempts
        )

    async def inbox_pending(self) -> list[InboxItem]:
        async with self.db.execute(
            "SELECT id, data, reply, sent, attempts FROM inbox WHERE done = 0 ORDER BY id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [self._item(row) for row in rows]

    async def inbox_get(self, item_id: int) -> InboxItem | None:
        async with self.db.execute(
            "SELECT id, data, reply, sent, attempts FROM inbox WHERE id = ? AND done = 0",
            (item_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return self._item(row) if row else None

    async def inbox_begin(self, item_id: int) -> int:
        async with self.db.execute(
            "UPDATE inbox SET attempts = attempts + 1 WHERE id = ? RETURNING attempts", (item_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def inbox_set_reply(self, item_id: int, parts: list[JSON]) -> None:
        await self.db.execute(
            "UPDATE inbox SET reply = ? WHERE id = ?",
            (json.dumps(parts, ensure_ascii=False), item_id),
        )

    async def inbox_mark_sent(self, item_id: int, sent: int) -> None:
        await self.db.execute("UPDATE inbox SET sent = ? WHERE id = ?", (sent, item_id))

    async def inbox_done(self, item_id: int) -> None:
        await self.db.execute(
            "UPDATE inbox SET done = 1, reply = NULL, data = '{}' WHERE id = ?", (item_id,)
        )
