"""PostgreSQL storage against a real server: schema migrations, processes sharing one
database, an outage mid-run, replay after a crash, and ``chatlane migrate`` from SQLite.

(The storage contract itself runs on PostgreSQL in tests/test_storage.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import bot.storage.base
import tests.pg
from bot.cli import main
from bot.config import load_config
from bot.dispatch import Dispatcher, Outcome
from bot.media import MediaStore
from bot.messages import Message, Role
from bot.runtime import AgentRuntime
from bot.storage.postgres import PostgresStorage, PostgresUnavailable
from bot.storage.postgres_schema import LATEST, MIGRATIONS, migrate, schema_version
from bot.storage.sqlite import SQLiteStorage
from tests.fakes.models import FakeAnthropic, Recorded, Reply
from tests.helpers import wait_for, wait_for_event
from tests.test_dispatch import Sink, inbound, owned


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with tests.pg.database() as url:
        yield url


async def _drop_schema(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'chatlane%'"
        )
        for row in tables:
            await connection.execute(f"DROP TABLE {row[0]} CASCADE")
    finally:
        await connection.close()


@pytest.fixture
async def url(postgres_url: str) -> AsyncIterator[str]:
    """The module's database with no chatlane tables at all, as a new deploy finds it."""
    await _drop_schema(postgres_url)
    yield postgres_url
    await _drop_schema(postgres_url)


async def opened(cleanup: contextlib.AsyncExitStack, url: str, **options: Any) -> PostgresStorage:
    store = PostgresStorage(url, **options)
    await store.open()
    cleanup.push_async_callback(store.close)
    return store


async def test_a_version_1_database_is_migrated_to_the_latest_keeping_its_data(
    url: str, cleanup: contextlib.AsyncExitStack
) -> None:
    connection = await asyncpg.connect(url)
    cleanup.push_async_callback(connection.close)
    assert await schema_version(connection) == 0
    assert await migrate(connection, upto=1) == [1]
    # What a release that knew only version 1 left behind.
    await connection.execute(
        "INSERT INTO chatlane_messages (session_id, epoch, data) "
        """VALUES ('s', 0, '{"role": "user", "content": "from v1"}')"""
    )
    await connection.execute(
        """INSERT INTO chatlane_inbox (dedupe, data, reply, sent) """
        """VALUES ('telegram:1', '{"text": "hi"}', '["a", "b"]', 1)"""
    )
    await connection.execute(
        """INSERT INTO chatlane_kv VALUES ('cooldown', 'anthropic:0', '{"until": 5}')"""
    )
    store = await opened(cleanup, url)
    assert await schema_version(connection) == LATEST == 4
    indexes = {row[0] for row in await connection.fetch("SELECT indexname FROM pg_indexes")}
    assert {"chatlane_inbox_done_created", "chatlane_inbox_chat_pending"} <= indexes
    assert await connection.fetchval("SELECT to_regclass('chatlane_media') IS NOT NULL")
    assert [m.content for m in await store.load_messages("s")] == ["from v1"]
    [item] = await store.inbox_pending()
    assert (item.data, item.reply, item.sent) == ({"text": "hi"}, ["a", "b"], 1)
    assert await store.inbox_add("telegram:1", {"text": "again"}) is None
    assert await store.kv_get("cooldown", "anthropic:0") == {"until": 5}
    assert await migrate(connection) == []  # nothing left to do on the next start
    names = await connection.fetch("SELECT version, name FROM chatlane_schema ORDER BY version")
    assert [(r[0], r[1]) for r in names] == [(m.version, m.name) for m in MIGRATIONS]


async def test_processes_starting_at_once_apply_each_migration_once(
    url: str, cleanup: contextlib.AsyncExitStack
) -> None:
    stores = [PostgresStorage(url, pool_size=2) for _ in range(4)]
    for store in stores:
        cleanup.push_async_callback(store.close)
    await asyncio.gather(*(store.open() for store in stores))
    connection = await asyncpg.connect(url)
    cleanup.push_async_callback(connection.close)
    versions = await connection.fetch("SELECT version FROM chatlane_schema ORDER BY version")
    assert [row[0] for row in versions] == [m.version for m in MIGRATIONS]
    # Each is a working store on the one schema.
    ids = await asyncio.gather(*(s.inbox_add(f"t:{n}", {}) for n, s in enumerate(stores)))
    assert sorted(n for n in ids if n is not None) == [1, 2, 3, 4]


async def test_claims_hold_across_processes(url: str, cleanup: contextlib.AsyncExitStack) -> None:
    """Two pools, as two processes: of many concurrent claims on one item, one wins."""
    first, second = await opened(cleanup, url), await opened(cleanup, url)
    item = await first.inbox_add("slack:Ev1", {"text": "x"})
    assert item is not None
    tries = [
        store.inbox_claim(item, f"{name}#{n}", 30)
        for n in range(10)
        for name, store in (("a", first), ("b", second))
    ]
    assert sum(await asyncio.gather(*tries)) == 1
    # kv_update is atomic across them too.
    await asyncio.gather(
        *(s.kv_update("n", "k", lambda old: (old or 0) + 1) for s in [first, second] * 20)
    )
    assert await second.kv_get("n", "k") == 40


@pytest.fixture
async def proxy(cleanup: contextlib.AsyncExitStack) -> tests.pg.Proxy:
    relay = tests.pg.Proxy()
    await relay.start()
    cleanup.push_async_callback(relay.stop)
    return relay


async def test_an_outage_is_unavailable_then_recovers(
    url: str, proxy: tests.pg.Proxy, cleanup: contextlib.AsyncExitStack
) -> None:
    store = await opened(cleanup, proxy.url(url), retry_for=0.2)
    kept = await store.inbox_add("telegram:1", {"text": "before"})
    await store.append_messages("s", [Message(Role.USER, "before")])
    await proxy.stop()  # every connection cut, new ones refused
    assert not await store.ping()
    with pytest.raises(bot.storage.base.UNAVAILABLE) as down:
        await store.inbox_add("telegram:2", {"text": "during"})
    assert isinstance(down.value, PostgresUnavailable)
    with pytest.raises(PostgresUnavailable):
        await store.load_messages("s")
    with pytest.raises(PostgresUnavailable):
        await store.kv_update("cooldown", "k", lambda old: 1)
    await proxy.start()
    assert await store.ping()
    assert await store.inbox_pending_ids() == [kept]  # the refused add was not stored
    assert await store.inbox_add("telegram:2", {"text": "redelivered"}) is not None
    assert [m.content for m in await store.load_messages("s")] == ["before"]


async def test_a_restart_is_ridden_out_within_the_retry_window(
    url: str, proxy: tests.pg.Proxy, cleanup: contextlib.AsyncExitStack
) -> None:
    store = await opened(cleanup, proxy.url(url), retry_for=5.0)
    await proxy.stop()
    back = asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(proxy.start()))
    cleanup.callback(back.cancel)
    assert await store.inbox_add("telegram:1", {"text": "x"}) == 1  # waited, not failed


async def test_an_outage_is_reported_within_one_retry_window(
    url: str, proxy: tests.pg.Proxy, cleanup: contextlib.AsyncExitStack
) -> None:
    """A webhook's 503 comes when connecting has failed for ``retry_for``, not after a
    second window (found by tests/test_crash.py's outage test: 9 s, not 4.6)."""
    store = await opened(cleanup, proxy.url(url), retry_for=1.0)
    await proxy.stop()
    assert not await store.ping()  # (the pool has seen its connections go)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(PostgresUnavailable, match="unreachable"):
        await store.inbox_add("telegram:1", {"text": "x"})
    assert loop.time() - began < 1.2  # gives up at ~0.75 s (was ~1.5: two windows)


def dispatcher_on(
    store: PostgresStorage, cleanup: contextlib.AsyncExitStack, config: Any = None
) -> tuple[Dispatcher, Sink]:
    runtime = AgentRuntime(
        config=config or load_config(data={}), demo_when_unconfigured=True, storage=store
    )
    dispatcher = owned(cleanup, Dispatcher(runtime, sweep_every=0.05))
    sink = Sink()
    dispatcher.register(sink)
    return dispatcher, sink


async def test_replay_after_a_crash_resumes_without_repeating(
    url: str, cleanup: contextlib.AsyncExitStack
) -> None:
    store = PostgresStorage(url)
    dispatcher, sink = dispatcher_on(store, cleanup)
    await dispatcher.runtime.start()
    # A process died: it had answered the first message half-way, and held a claim on
    # the second that nobody renews any more.
    first = await store.inbox_add("test:old1", inbound("first", "old1").to_dict())
    second = await store.inbox_add("test:old2", inbound("second", "old2", chat="c2").to_dict())
    assert first is not None and second is not None
    await store.inbox_set_reply(first, ["part A", "part B", "part C"])
    await store.inbox_mark_sent(first, 1)
    assert await store.inbox_claim(second, "dead-process#1", 0.2)
    await dispatcher.start()
    await wait_for(
        lambda: any("You said: second" in p for p in sink.sent),
        "the dead process's message to be answered once its claim lapsed",
        changed=sink.changed,
    )
    await wait_for(lambda: not dispatcher.claims, "both replayed messages' claims to be released")
    assert [part for part in sink.sent if part.startswith("part ")] == ["part B", "part C"]
    assert sum("You said: second" in p for p in sink.sent) == 1
    assert await store.inbox_pending() == []


async def test_a_turn_caught_by_an_outage_is_answered_once_it_is_over(
    url: str,
    proxy: tests.pg.Proxy,
    cleanup: contextlib.AsyncExitStack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = FakeAnthropic()
    await model.__aenter__()
    cleanup.push_async_callback(model.__aexit__, None, None, None)
    arrived = asyncio.Event()

    def reply(request: Recorded) -> Reply:
        arrived.set()
        return Reply(text=f"answer to {request.last_user_text}", delay=0.2)

    model.default = reply
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-pg-0000")
    config = load_config(
        data={
            "agent": {"model": "fake/m"},
            "providers": {"fake": {"type": "anthropic", "base_url": model.base_url}},
        }
    )
    store = PostgresStorage(proxy.url(url), retry_for=0.1)
    dispatcher, sink = dispatcher_on(store, cleanup, config)
    await dispatcher.start()
    assert await dispatcher.submit(inbound("hello", "m1")) is Outcome.ACCEPTED
    # (The first turn loads the SDK and the tokenizer: seconds on a loaded machine.)
    await wait_for_event(arrived, "the turn to reach the model", 30)
    with caplog.at_level(logging.WARNING, logger="bot.dispatch"):
        await proxy.stop()  # while the model thinks: the turn cannot record its answer
        with pytest.raises(bot.storage.base.UNAVAILABLE):  # a webhook would answer 503
            await dispatcher.submit(inbound("later", "m2"))
        await wait_for(
            lambda: "unreachable answering test:c1" in caplog.text,
            "the turn to fail, to be retried",
            30,
        )
    await proxy.start()
    assert await dispatcher.submit(inbound("later", "m2")) is Outcome.ACCEPTED  # redelivery
    await wait_for(
        lambda: {"answer to hello", "answer to later"} <= set(sink.sent),
        "both messages to be answered once PostgreSQL is back",
        30,
        changed=sink.changed,
    )
    await wait_for(lambda: not dispatcher.claims, "the claims to be released")
    assert sorted(p for p in sink.sent if p.startswith("answer")) == [
        "answer to hello",
        "answer to later",
    ]
    assert await store.inbox_pending() == []


async def _fill_sqlite(path: Path) -> None:
    store = SQLiteStorage(path)
    await store.open()
    try:
        await store.append_messages("telegram:1", [Message(Role.USER, "old chat")])
        await store.reset_session("telegram:1")
        await store.append_messages(
            "telegram:1", [Message(Role.USER, "héllo"), Message(Role.ASSISTANT, "hi 👋")]
        )
        await store.append_messages("slack:C1", [Message(Role.USER, "in slack")])
        await store.set_setting("telegram:1", "thinking_mode", "stream")
        answered = await store.inbox_add("telegram:u1", {"text": "answered"})
        assert answered is not None
        await store.inbox_done(answered)
        waiting = await store.inbox_add("telegram:u2", {"text": "waiting"})
        assert waiting is not None
        await store.inbox_begin(waiting)
        await store.inbox_set_reply(waiting, ["one", "two"])
        await store.inbox_mark_sent(waiting, 1)
        await store.kv_set("cooldown", "anthropic:1", {"until": 1234.5, "reason": "rate_limit"})
        await store.kv_set("summary", "telegram:1", {"text": "a summary"})
    finally:
        await store.close()


async def _snapshot(store: Any) -> dict[str, Any]:
    return {
        "messages": {
            s: [(m.id, m.role, m.content) for m in await store.load_messages(s)]
            for s in ("telegram:1", "slack:C1")
        },
        "settings": await store.get_settings("telegram:1"),
        "pending": [
            (i.id, i.data, i.reply, i.sent, i.attempts) for i in await store.inbox_pending()
        ],
        "kv": {ns: await store.kv_get_all(ns) for ns in ("cooldown", "summary")},
    }


async def _read(path: Path, url: str | None = None) -> dict[str, Any]:
    store: Any = PostgresStorage(url) if url else SQLiteStorage(path)
    await store.open()
    try:
        snapshot = await _snapshot(store)
        if url:  # the copied store goes on: dedupe, ids after the copied ones
            snapshot["redelivery"] = await store.inbox_add("telegram:u1", {"text": "x"})
            [new] = await store.append_messages("slack:C1", [Message(Role.USER, "new")])
            snapshot["next id"] = new.id
        return snapshot
    finally:
        await store.close()


def test_chatlane_migrate_copies_a_sqlite_store(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(_drop_schema(postgres_url))
    source = tmp_path / "data" / "chatlane.sqlite3"
    asyncio.run(_fill_sqlite(source))
    before = asyncio.run(_read(source))

    assert main(["migrate"]) == 1  # no DATABASE_URL
    assert "DATABASE_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    assert main(["migrate", "--sqlite", str(tmp_path / "nothing.sqlite3")]) == 1
    assert "no such SQLite file" in capsys.readouterr().err

    assert main(["migrate"]) == 0  # from chatlane.sqlite3 under CHATLANE_DATA_DIR
    out = capsys.readouterr().out
    assert "4 messages, 1 sessions, 2 inbox items (1 not yet answered)" in out
    assert "2 key-value entries (cooldown 1, summary 1)" in out
    after = asyncio.run(_read(source, postgres_url))
    assert after.pop("redelivery") is None
    assert after.pop("next id") == 5
    assert after == before
    assert asyncio.run(_read(source)) == before  # the file is left as it was

    assert main(["migrate"]) == 1  # twice would mix two histories: refused
    assert "already holds chatlane data" in capsys.readouterr().err
    asyncio.run(_drop_schema(postgres_url))


def test_chatlane_migrate_copies_the_media_files_too(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A bot moving to a PaaS keeps its photos: the data directory's media go into
    chatlane_media, checked against their names; a half-written file stays behind."""
    asyncio.run(_drop_schema(postgres_url))
    asyncio.run(_fill_sqlite(tmp_path / "data" / "chatlane.sqlite3"))
    local = MediaStore.default()
    photo, voice = b"\x89PNG\r\n\x1a\n" + bytes(range(256)), b"OggS" + bytes(range(256)) * 40
    ids = [asyncio.run(local.put(data)).media_id for data in (photo, voice)]
    damaged = local.path("ab" * 32)
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"not what its name says")
    (local.root / "tmp" / "half-written").write_bytes(b"\x89PNG")
    monkeypatch.setenv("DATABASE_URL", postgres_url)

    assert main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "2 key-value entries (cooldown 1, summary 1), 2 media files (0.0 MB; 1 damaged" in out

    async def read() -> list[tuple[str, bytes]]:
        connection = await asyncpg.connect(postgres_url)
        try:
            rows = await connection.fetch("SELECT id, data FROM chatlane_media ORDER BY id")
        finally:
            await connection.close()
        return [(row[0], row[1]) for row in rows]

    assert asyncio.run(read()) == sorted(zip(ids, (photo, voice), strict=True))
    asyncio.run(_drop_schema(postgres_url))
