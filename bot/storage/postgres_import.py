"""``chatlane migrate``: copy a SQLite store into PostgreSQL, for a bot that started small.

Everything the file holds goes over as it is, ids included: transcripts (with
the session epochs that ``/new`` moved on), per-session settings, the inbox
(messages not yet answered are answered from PostgreSQL; answered ones keep
recognising late redeliveries), and key-value state such as key cooldowns and
compaction summaries; with them, the media files of the data directory (the
photos and files the transcripts name), each checked against its sha256 name.
It is one transaction: all of it, or nothing. The
target must hold no chatlane data yet, so a second run cannot mix two
histories; the SQLite file is opened read-only and left as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bot.storage.base import chat_of
from bot.storage.postgres import PostgresStorage
from bot.storage.postgres_schema import migrate

CHUNK = 5000
# (SQLite table, its columns, the PostgreSQL table)
TABLES = (
    ("messages", ("id", "session_id", "epoch", "data"), "chatlane_messages"),
    ("sessions", ("session_id", "epoch", "settings"), "chatlane_sessions"),
    (
        "inbox",
        ("id", "dedupe", "data", "done", "reply", "sent", "attempts", "created"),
        "chatlane_inbox",
    ),
    ("kv", ("namespace", "key", "value"), "chatlane_kv"),
)


class MigrateError(Exception):
    """What stopped the copy, as a sentence for the person running it; nothing was copied."""


@dataclass
class Copied:
    rows: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    namespaces: dict[str, int] = field(default_factory=dict)
    media: int = 0
    media_bytes: int = 0
    damaged: list[str] = field(default_factory=list)  # media files not matching their name

    def describe(self) -> str:
        kv = ", ".join(f"{name} {n}" for name, n in sorted(self.namespaces.items()))
        damaged = f"; {len(self.damaged)} damaged left out" if self.damaged else ""
        return (
            f"{self.rows.get('messages', 0)} messages, {self.rows.get('sessions', 0)} sessions, "
            f"{self.rows.get('inbox', 0)} inbox items ({self.pending} not yet answered), "
            f"{self.rows.get('kv', 0)} key-value entries" + (f" ({kv})" if kv else "") + ", "
            f"{self.media} media files ({self.media_bytes / 1024 / 1024:.1f} MB{damaged})"
        )


def target_url(env: Mapping[str, str]) -> str:
    url = env.get("DATABASE_URL", "")
    if not url:
        raise MigrateError(
            "DATABASE_URL is not set; set it to the PostgreSQL database to copy into "
            "(postgresql://user:password@host:5432/name)"
        )
    if url.split("://", 1)[0].lower() not in PostgresStorage.schemes:
        raise MigrateError("DATABASE_URL: use a postgres:// or postgresql:// URL")
    return url


def open_sqlite(source: Path) -> sqlite3.Connection:
    """The SQLite file at ``source``, read-only (read from a worker thread)."""
    if not source.is_file():
        raise MigrateError(f"{source}: no such SQLite file (give its path with --sqlite)")
    return sqlite3.connect(f"file:{source}?mode=ro", uri=True, check_same_thread=False)


async def copy_sqlite(reader: sqlite3.Connection, url: str, media: Sequence[Path] = ()) -> Copied:
    """Copy what ``reader`` holds, and the ``media`` files (each named by the sha256 of
    its bytes: ``bot.media.MediaStore``), into the (empty) PostgreSQL database at ``url``."""
    try:
        connection = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError) as error:
        raise MigrateError(f"cannot reach the DATABASE_URL database: {error}") from error
    try:
        await migrate(connection)
        await _refuse_if_not_empty(connection)
        async with connection.transaction():
            copied = await _copy_tables(reader, connection)
            await _copy_media(media, connection, copied)
            for table in ("chatlane_messages", "chatlane_inbox"):
                await connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}"
                )
        return copied
    finally:
        await connection.close()


async def _refuse_if_not_empty(connection: asyncpg.Connection) -> None:
    held = {
        table: int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
        for _, _, table in TABLES
    }
    if any(held.values()):
        what = ", ".join(f"{n} rows in {table}" for table, n in held.items() if n)
        raise MigrateError(
            f"the DATABASE_URL database already holds chatlane data ({what}); "
            "chatlane migrate copies only into one that holds none. Nothing was copied."
        )


async def _copy_tables(reader: sqlite3.Connection, connection: asyncpg.Connection) -> Copied:
    present = {row[0] for row in reader.execute("SELECT name FROM sqlite_master")}
    copied = Copied()
    for name, columns, table in TABLES:
        copied.rows[name] = 0
        if name not in present:
            continue
        cursor = reader.execute(f"SELECT {', '.join(columns)} FROM {name} ORDER BY rowid")
        while rows := await asyncio.to_thread(cursor.fetchmany, CHUNK):
            records = [_record(name, row, copied) for row in rows]
            into = (*columns, "chat") if name == "inbox" else columns
            await connection.copy_records_to_table(table, records=records, columns=into)
            copied.rows[name] += len(records)
    return copied


async def _copy_media(
    media: Sequence[Path], connection: asyncpg.Connection, copied: Copied
) -> None:
    # One file at a time: up to agent.media.max_bytes each, thousands of them.
    for path in media:
        media_id = path.name
        data = await asyncio.to_thread(_checked, path, media_id)
        if data is None:
            copied.damaged.append(media_id)
            continue
        await connection.execute(
            "INSERT INTO chatlane_media (id, data) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            media_id,
            data,
        )
        copied.media += 1
        copied.media_bytes += len(data)


def _checked(path: Path, media_id: str) -> bytes | None:
    data = path.read_bytes()
    return data if hashlib.sha256(data).hexdigest() == media_id else None


def _record(table: str, row: Sequence[Any], copied: Copied) -> tuple[Any, ...]:
    if table == "inbox":
        item_id, dedupe, data, done, reply, sent, attempts, created = row
        copied.pending += not done
        when = datetime.fromtimestamp(float(created or 0), UTC)
        chat = None if done else chat_of(json.loads(data))  # keeps a chat's order
        return (item_id, dedupe, data, bool(done), reply, sent, attempts, when, chat)
    if table == "kv":
        copied.namespaces[row[0]] = copied.namespaces.get(row[0], 0) + 1
    return tuple(row)
