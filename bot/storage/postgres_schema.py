"""The PostgreSQL schema, as numbered migrations applied in order at start.

``chatlane_schema`` records each version applied. ``migrate`` runs in one
transaction under an advisory lock, so processes starting at once (a web and
a worker dyno after a deploy) apply each migration exactly once: the first
takes the lock and migrates, the others wait for it, then find nothing to do.
A migration is never edited once released; a change is a new one at the end.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import asyncpg

log = logging.getLogger(__name__)

# pg_advisory_xact_lock keys: one bigint for migrations; (class, hash) pairs for rows.
MIGRATION_LOCK = 0x63686174_6C616E65  # "chatlane"
KV_LOCK = 0x63_6B76  # "ckv"
SETTINGS_LOCK = 0x63_7374  # "cst"


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


# Text columns hold JSON as ``json.dumps`` wrote it: jsonb would refuse a ``\u0000``
# a user may send, and every reader parses the JSON in Python anyway.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "transcripts, sessions, inbox with claims, key-value",
        """
        CREATE TABLE chatlane_messages (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            data TEXT NOT NULL
        );
        CREATE INDEX chatlane_messages_session ON chatlane_messages (session_id, epoch, id);
        CREATE TABLE chatlane_sessions (
            session_id TEXT PRIMARY KEY,
            epoch INTEGER NOT NULL DEFAULT 0,
            settings TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE chatlane_inbox (
            id BIGSERIAL PRIMARY KEY,
            dedupe TEXT NOT NULL UNIQUE,
            data TEXT NOT NULL,
            done BOOLEAN NOT NULL DEFAULT false,
            reply TEXT,
            sent INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            created TIMESTAMPTZ NOT NULL DEFAULT now(),
            claim_token TEXT,
            claim_until TIMESTAMPTZ
        );
        CREATE INDEX chatlane_inbox_pending ON chatlane_inbox (id) WHERE NOT done;
        CREATE TABLE chatlane_kv (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        );
        """,
    ),
    Migration(
        2,
        "index answered inbox rows by age, for the weekly purge",
        """
        CREATE INDEX chatlane_inbox_done_created ON chatlane_inbox (created) WHERE done;
        """,
    ),
    Migration(
        3,
        "the chat of each inbox row, so a chat's messages keep their order across processes",
        """
        ALTER TABLE chatlane_inbox ADD COLUMN chat TEXT;
        CREATE INDEX chatlane_inbox_chat_pending ON chatlane_inbox (chat, id) WHERE NOT done;
        """,
    ),
    Migration(
        4,
        "media bytes, so photos and files outlive a wiped disk and reach every process",
        # EXTERNAL: out of line, uncompressed; photos and voice notes are compressed already.
        """
        CREATE TABLE chatlane_media (
            id TEXT PRIMARY KEY,
            data BYTEA NOT NULL,
            created TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        ALTER TABLE chatlane_media ALTER COLUMN data SET STORAGE EXTERNAL;
        """,
    ),
)

LATEST = MIGRATIONS[-1].version


async def schema_version(connection: asyncpg.Connection) -> int:
    """The highest version applied; 0 for a database chatlane has never touched."""
    exists = await connection.fetchval("SELECT to_regclass('chatlane_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await connection.fetchval("SELECT coalesce(max(version), 0) FROM chatlane_schema"))


async def migrate(connection: asyncpg.Connection, *, upto: int = LATEST) -> list[int]:
    """Apply the migrations this database lacks, up to ``upto``; the versions applied."""
    applied: list[int] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS chatlane_schema ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = await schema_version(connection)
        if current > LATEST:
            log.warning(
                "the database's chatlane schema is at version %d, newer than this release "
                "knows (%d): running anyway; upgrade chatlane on every process",
                current,
                LATEST,
            )
        for migration in MIGRATIONS:
            if current < migration.version <= upto:
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO chatlane_schema (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.version)
    if applied:
        log.info("PostgreSQL schema migrated to version %d", applied[-1])
    return applied
