"""Storage backends: transcripts survive a restart, resets, settings, kv atomicity, the inbox."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path
from typing import Any, ClassVar

import pytest

import bot.registry
import bot.storage.base
import tests.pg
from bot.messages import Message, Role, ToolCall
from bot.registry import load_entry_points
from bot.storage import (
    ConversationStore,
    Inbox,
    InboxClaims,
    KeyValue,
    Lifecycle,
    MemoryStorage,
    SettingsStore,
    SQLiteStorage,
    Storage,
    TranscriptStore,
)
from bot.storage.base import EarlierPending, MediaBlobs
from bot.storage.batch import Batcher
from bot.storage.factory import backends, default_storage, unavailable
from bot.storage.postgres import PostgresStorage, PostgresUnavailable
from bot.storage.redis import RedisStorage
from bot.storage.redis_client import redis_tls
from tests.helpers import wait_for
from tests.procs import free_port


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A database of this module's own on the real PostgreSQL, emptied after each test."""
    with tests.pg.database() as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    store: Any
    if request.param == "postgres":
        store = PostgresStorage(request.getfixturevalue("postgres_url"))
    elif request.param == "redis":
        url = request.getfixturevalue("redis_server")
        store = RedisStorage(url, prefix=request.getfixturevalue("redis_prefix"))
    elif request.param == "sqlite":
        store = SQLiteStorage(tmp_path / "db.sqlite")
    else:
        store = MemoryStorage()
    await store.open()
    yield store
    if isinstance(store, RedisStorage):
        keys = [k async for k in store.client.scan_iter(match=store.prefix + "*")]
        if keys:
            await store.client.delete(*keys)
    await store.close()
    if isinstance(store, PostgresStorage):
        await tests.pg.truncate(store.url)


async def test_append_and_load_keep_order_and_fields(storage: Any) -> None:
    call = ToolCall("call_1", "read_file", {"path": "a.txt"})
    stored = await storage.append_messages(
        "s1",
        [
            Message(Role.USER, "héllo 👋"),
            Message(
                Role.ASSISTANT, "", tool_calls=(call,), thinking="hm", thinking_signature="sig"
            ),
            Message(Role.TOOL, "contents", tool_call_id="call_1", name="read_file", is_error=True),
        ],
    )
    assert [m.id for m in stored] == sorted(m.id for m in stored)
    loaded = await storage.load_messages("s1")
    assert [m.content for m in loaded] == ["héllo 👋", "", "contents"]
    assert loaded[1].tool_calls == (call,)
    assert loaded[1].thinking_signature == "sig"
    assert loaded[2].is_error and loaded[2].tool_call_id == "call_1"
    assert await storage.load_messages("other") == []


async def test_after_id_reads_only_new_messages(storage: Any) -> None:
    first = await storage.append_messages("s", [Message(Role.USER, "one")])
    await storage.append_messages("elsewhere", [Message(Role.USER, "x")])
    await storage.append_messages("s", [Message(Role.ASSISTANT, "two")])
    newer = await storage.load_messages("s", after_id=first[0].id)
    assert [m.content for m in newer] == ["two"]


async def test_reset_starts_a_new_conversation(storage: Any) -> None:
    await storage.append_messages("s", [Message(Role.USER, "old")])
    await storage.reset_session("s")
    assert await storage.load_messages("s") == []
    await storage.append_messages("s", [Message(Role.USER, "new")])
    assert [m.content for m in await storage.load_messages("s")] == ["new"]


async def test_settings(storage: Any) -> None:
    await storage.set_setting("s", "thinking_mode", "stream")
    await storage.set_setting("s", "model", "openai/gpt-4o")
    await storage.set_setting("s", "model", None)
    assert await storage.get_settings("s") == {"thinking_mode": "stream"}


async def test_kv_update_is_atomic_under_concurrency(storage: Any) -> None:
    def bump(old: Any) -> Any:
        return {"n": (old or {"n": 0})["n"] + 1}

    await asyncio.gather(*(storage.kv_update("counter", "k", bump) for _ in range(50)))
    assert await storage.kv_get("counter", "k") == {"n": 50}
    assert await storage.kv_get_all("counter") == {"k": {"n": 50}}
    await storage.kv_update("counter", "k", lambda old: None)
    assert await storage.kv_get("counter", "k") is None


async def test_inbox_dedupes_and_tracks_progress(storage: Any) -> None:
    first = await storage.inbox_add("telegram:1", {"text": "hi"})
    assert first is not None
    assert await storage.inbox_add("telegram:1", {"text": "hi again"}) is None
    second = await storage.inbox_add("telegram:2", {"text": "two"})
    pending = await storage.inbox_pending()
    assert [item.id for item in pending] == [first, second]
    assert await storage.inbox_begin(first) == 1
    await storage.inbox_set_reply(first, ["part one", {"text": "part two"}])
    await storage.inbox_mark_sent(first, 1)
    item = await storage.inbox_get(first)
    assert item is not None
    assert item.reply == ["part one", {"text": "part two"}] and item.sent == 1
    assert item.attempts == 1
    await storage.inbox_done(first)
    assert [item.id for item in await storage.inbox_pending()] == [second]
    assert await storage.inbox_add("telegram:1", {"text": "late redelivery"}) is None


async def test_inbox_open_reads_and_counts_an_attempt_in_one_step(storage: Any) -> None:
    first = await storage.inbox_add("telegram:open-1", {"text": "hi"})
    assert first is not None
    opened = await storage.inbox_open(first)
    assert opened is not None
    assert (opened.id, opened.data, opened.reply, opened.sent) == (first, {"text": "hi"}, None, 0)
    assert opened.attempts == 1
    await storage.inbox_set_reply(first, ["one", "two"])
    await storage.inbox_mark_sent(first, 1)
    again = await storage.inbox_open(first)
    assert again is not None
    assert (again.attempts, again.reply, again.sent) == (2, ["one", "two"], 1)
    assert await storage.inbox_begin(first) == 3  # the same count inbox_begin keeps
    await storage.inbox_done(first)
    assert await storage.inbox_open(first) is None  # done: not opened, nothing re-created
    assert await storage.inbox_get(first) is None
    assert await storage.inbox_pending_ids() == []


async def test_a_message_is_claimed_in_the_same_step_as_it_is_stored(storage: Any) -> None:
    held = await storage.inbox_add("telegram:c1", {"text": "hi"}, ("A#1", 30))
    free = await storage.inbox_add("telegram:c2", {"text": "hi"})
    assert await storage.inbox_add("telegram:c1", {"text": "again"}, ("B#1", 30)) is None
    assert await storage.inbox_claim_many({held: "B#2", free: "B#3"}, 30) == [free]
    assert await storage.inbox_renew({held: "A#1"}, 30) == set()  # A holds it
    await storage.inbox_release(held, "A#1")
    assert await storage.inbox_claim(held, "B#4", 30)


def chat_message(n: int, chat: int = 5, thread: str | None = None) -> dict[str, Any]:
    return {"channel": "telegram", "chat_id": chat, "thread_id": thread, "text": f"m{n}"}


async def test_a_message_opens_only_after_its_chats_earlier_ones_on_shared_storage(
    storage: Any,
) -> None:
    """Another process holds a chat's first message: the second is not opened (nothing
    counted, its claim let go) until the first is done, which hands it back."""
    first = await storage.inbox_add("telegram:o1", chat_message(1))
    second = await storage.inbox_add("telegram:o2", chat_message(2))
    third = await storage.inbox_add("telegram:o3", chat_message(3))
    elsewhere = await storage.inbox_add("telegram:o4", chat_message(4, chat=6))
    thread = await storage.inbox_add("telegram:o5", chat_message(5, thread="t"))
    assert await storage.inbox_claim_many({first: "A#1", second: "B#1", third: "B#2"}, 30)
    if not storage.shared:  # one process answers from it: its mailbox keeps the order
        assert (await storage.inbox_open(second, "B#1", [second])).attempts == 1
        assert await storage.inbox_done(first) == []
        return
    with pytest.raises(EarlierPending):
        await storage.inbox_open(second, "B#1", [second])
    assert await storage.inbox_claim(second, "C#1", 30)  # B's claim went with the check
    await storage.inbox_release(second, "C#1")
    # Answered together with the earlier one (collect): opened.
    together = await storage.inbox_open(third, "B#2", [first, second, third])
    assert together is not None and together.attempts == 1
    # Other chats and threads wait for nothing; without a claim nothing is checked.
    assert await storage.inbox_open(elsewhere, "B#3", [elsewhere]) is not None
    assert await storage.inbox_open(thread, "B#4", [thread]) is not None
    assert (await storage.inbox_open(second)).attempts == 1  # (not counted when it waited)
    # The first done: the chat's later messages nobody holds come back, oldest first.
    assert await storage.inbox_done(first) == [second]
    assert await storage.inbox_open(second, "A#2", [second]) is not None
    await storage.inbox_release(third, "B#2")
    assert await storage.inbox_done(second) == [third]
    assert await storage.inbox_done(third) == []


async def test_a_message_taken_first_of_its_chat_is_opened_as_it_is_stored(
    storage: Any,
) -> None:
    """``inbox_take`` stores, claims and, when nothing earlier of its chat is pending,
    opens (attempt 1) in one step; a later message of a chat with one pending is left
    for its turn to open (on shared storage: that open checks the order)."""
    assert await storage.inbox_take("telegram:t1", chat_message(1), ("A#1", 30)) is not None
    first_id, first_opened = await storage.inbox_take(
        "telegram:t2", chat_message(2, 8), ("A#2", 30)
    )
    assert await storage.inbox_take("telegram:t2", chat_message(2, 8), ("B#1", 30)) is None
    second_id, second_opened = await storage.inbox_take(
        "telegram:t3", chat_message(3, 8), ("A#3", 30)
    )
    assert (await storage.inbox_get(first_id)).attempts == (1 if first_opened else 0)
    assert await storage.inbox_renew({first_id: "A#2", second_id: "A#3"}, 30) == set()
    if isinstance(storage, PostgresStorage):  # leaves it to the turn's one-statement open
        assert not first_opened and not second_opened
        return
    assert first_opened
    assert second_opened is not storage.shared
    if storage.shared:
        with pytest.raises(EarlierPending):
            await storage.inbox_open(second_id, "A#3", [second_id])
    await storage.inbox_done(first_id)
    await storage.inbox_done(second_id)
    # With the chat's earlier messages done, the next one stored is first again.
    _, opened = await storage.inbox_take("telegram:t4", chat_message(4, 8), ("A#4", 30))
    assert opened


async def test_a_turns_transcript_and_its_reply_are_stored_in_one_write(storage: Any) -> None:
    item = await storage.inbox_add("telegram:r1", {"text": "hi"})
    stored = await storage.append_messages(
        "s", [Message(Role.USER, "hi"), Message(Role.ASSISTANT, "hello")], (item, ["hello"])
    )
    assert [m.content for m in stored] == ["hi", "hello"]
    assert stored[0].id is not None and stored[1].id == stored[0].id + 1
    assert [m.content for m in await storage.load_messages("s")] == ["hi", "hello"]
    assert (await storage.inbox_get(item)).reply == ["hello"]
    # Nothing left to store but the reply (a resumed turn): the reply alone.
    assert await storage.append_messages("s", [], (item, ["again", {"text": "two"}])) == []
    assert (await storage.inbox_get(item)).reply == ["again", {"text": "two"}]
    assert len(await storage.load_messages("s")) == 2


@pytest.mark.parametrize("on_the_loop", [True, False])
async def test_sqlite_stores_transcript_and_reply_in_one_transaction(
    tmp_path: Path, on_the_loop: bool
) -> None:
    """On the loop's connection, or on aiosqlite's thread (the fast connection busy or
    gone): one transaction, and a failed statement takes all of it back."""
    storage = SQLiteStorage(tmp_path / "t.sqlite")
    await storage.open()
    try:
        if not on_the_loop:
            storage._fast = None
        item = await storage.inbox_add("telegram:r2", {"text": "hi"})
        await storage.append_messages("s", [Message(Role.USER, "hi")], (item, ["one"]))
        assert (await storage.inbox_get(item)).reply == ["one"]
        with pytest.raises(sqlite3.Error):
            await storage._hot_transaction(
                [
                    ("INSERT INTO messages (session_id, epoch, data) VALUES (?, 0, '{}')", ["s"]),
                    ("UPDATE no_such_table SET x = 1", []),
                ]
            )
        assert len(await storage.load_messages("s")) == 1  # the insert was rolled back
        await storage.append_messages("s", [Message(Role.USER, "next")], (item, ["two"]))
        assert len(await storage.load_messages("s")) == 2  # and the connection works on
    finally:
        await storage.close()


async def test_concurrent_adds_are_each_stored_once_in_order(storage: Any) -> None:
    """Adds made at once share writes (group commit) but keep their own ids and data;
    a key repeated within the burst, or stored before it, is a duplicate."""
    earlier = await storage.inbox_add("telegram:0", {"text": "earlier"})
    keys = [f"telegram:{n}" for n in range(1, 201)] + ["telegram:7", "telegram:0"]
    ids = await asyncio.gather(*(storage.inbox_add(key, {"text": key}) for key in keys))
    assert ids[-2:] == [None, None]
    stored = ids[:-2]
    assert None not in stored and stored == sorted(set(stored))  # arrival order kept
    pending = {item.id: item.data["text"] for item in await storage.inbox_pending()}
    assert pending == {earlier: "earlier", **dict(zip(stored, keys[:-2], strict=True))}


async def test_sqlite_acknowledges_adds_only_once_committed(tmp_path: Path) -> None:
    """While another writer holds the database the adds wait; once they return, their
    rows are in the file for any other connection (a crash right then loses nothing)."""
    path = tmp_path / "chat.sqlite"
    store = SQLiteStorage(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        adds = asyncio.gather(*(store.inbox_add(f"t:{n}", {"text": str(n)}) for n in range(50)))
        await asyncio.sleep(0.3)
        assert not adds.done()
        other.execute("COMMIT")
        ids = await adds
        rows = other.execute("SELECT id, dedupe FROM inbox ORDER BY id").fetchall()
        assert rows == [(n, f"t:{i}") for i, n in enumerate(ids)]
        assert await store.inbox_add("t:3", {"text": "again"}) is None
    finally:
        other.close()
        await store.close()


async def test_batcher_writes_concurrent_calls_together() -> None:
    batches: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0)  # a round trip
        if -1 in items:
            raise OSError("store unreachable")
        return [n * 10 for n in items]

    batcher: Batcher[int, int] = Batcher(write, limit=50)
    assert await asyncio.gather(*(batcher.submit(n) for n in range(120))) == [
        n * 10 for n in range(120)
    ]
    assert [len(batch) for batch in batches] == [50, 50, 20]
    failed = await asyncio.gather(*(batcher.submit(n) for n in (1, -1, 2)), return_exceptions=True)
    assert [type(result) for result in failed] == [OSError] * 3  # the batch, not the rest
    assert await batcher.submit(3) == 30
    gone, kept = asyncio.ensure_future(batcher.submit(4)), asyncio.ensure_future(batcher.submit(5))
    await asyncio.sleep(0)
    gone.cancel()  # a caller that gives up: its item is still written, the others answered
    assert await kept == 50 and batches[-1] == [4, 5]
    late = asyncio.ensure_future(batcher.submit(6))
    await asyncio.sleep(0)
    await batcher.close()  # waits for what was submitted
    assert late.done() and late.result() == 60


async def test_sqlite_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "chat.sqlite"
    store = SQLiteStorage(path)
    await store.open()
    await store.append_messages("s", [Message(Role.USER, "remember me")])
    await store.kv_set("cooldown", "p1", {"until": 123})
    item = await store.inbox_add("sms:SM1", {"text": "queued"})
    await store.close()

    again = SQLiteStorage(path)
    await again.open()
    assert [m.content for m in await again.load_messages("s")] == ["remember me"]
    assert await again.kv_get("cooldown", "p1") == {"until": 123}
    assert [i.id for i in await again.inbox_pending()] == [item]
    assert await again.ping()
    await again.close()
    assert not await again.ping()


async def test_sqlite_message_ids_grow_across_restarts_and_old_files(tmp_path: Path) -> None:
    """New files number messages by rowid; a file made with the AUTOINCREMENT table
    before that still takes new messages after its highest id."""
    old = tmp_path / "old.sqlite"
    raw = sqlite3.connect(old)
    raw.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "session_id TEXT NOT NULL, epoch INTEGER NOT NULL, data TEXT NOT NULL)"
    )
    raw.execute(
        "INSERT INTO messages (id, session_id, epoch, data) VALUES (41, 's', 0, ?)",
        ('{"role": "user", "content": "from before"}',),
    )
    raw.commit()
    raw.close()
    for path, floor in ((tmp_path / "new.sqlite", 0), (old, 41)):
        ids: list[int] = []
        for text in ("one", "two"):
            store = SQLiteStorage(path)
            await store.open()
            stored = await store.append_messages("s", [Message(Role.USER, text)] * 2)
            ids += [m.id for m in stored if m.id is not None]
            await store.close()
        assert len(ids) == 4 and ids == sorted(set(ids)) and ids[0] > floor
        store = SQLiteStorage(path)
        await store.open()
        loaded = [m.id for m in await store.load_messages("s")]
        assert loaded == ([41] if floor else []) + ids
        await store.close()


def test_with_id_keeps_every_other_field() -> None:
    message = Message(
        Role.ASSISTANT,
        "text",
        tool_calls=(ToolCall("c1", "search", {"q": 1}),),
        tool_call_id="t1",
        name="n",
        is_error=True,
        thinking="hmm",
        thinking_signature="sig",
        pinned=True,
        created_at=12.5,
    )
    assert message.with_id(7) == dataclasses.replace(message, id=7)


async def test_sqlite_transcript_write_waits_for_another_writer_off_the_loop(
    tmp_path: Path,
) -> None:
    """The fast transcript insert never blocks the loop on a lock: while another
    connection holds the write lock it takes the aiosqlite path and waits there."""
    path = tmp_path / "busy.sqlite"
    store = SQLiteStorage(path)
    await store.open()
    await store.append_messages("s", [Message(Role.USER, "first")])  # the fast path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO kv (namespace, key, value) VALUES ('x', 'y', '1')")
    write = asyncio.ensure_future(store.append_messages("s", [Message(Role.USER, "second")]))
    ticks = 0
    while ticks < 20:  # the loop keeps running while the write waits for the lock
        await asyncio.sleep(0.01)
        ticks += 1
    assert not write.done()
    other.execute("COMMIT")
    other.close()
    stored = await asyncio.wait_for(write, 10)
    loaded = await store.load_messages("s")
    assert [m.content for m in loaded] == ["first", "second"]
    assert stored[0].id == loaded[1].id  # the fallback path reports the row's own id
    await store.close()


async def test_default_storage_follows_environment(tmp_path: Path) -> None:
    assert isinstance(default_storage({"CHATLANE_DATA_DIR": str(tmp_path)}), SQLiteStorage)
    redis = default_storage({"REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert isinstance(redis, RedisStorage)
    for scheme in ("postgres", "postgresql"):
        url = f"{scheme}://app:pw@db.example.com:5432/app"
        postgres = default_storage({"DATABASE_URL": url}, max_connections=64)
        assert isinstance(postgres, PostgresStorage) and postgres.url == url
        assert postgres.pool_size == 8  # a PaaS database takes few connections
        assert "pw" not in repr(postgres)
    # Both: durable state in PostgreSQL (lanes stay in Redis: bot.components.build_lanes).
    both = {"DATABASE_URL": "postgres://h/app", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert isinstance(default_storage(both), PostgresStorage)
    sized = default_storage({"DATABASE_URL": "postgres://h/app", "DATABASE_POOL_SIZE": "3"})
    assert isinstance(sized, PostgresStorage) and sized.pool_size == 3


@pytest.mark.parametrize("bad", ["0", "lots", "-2"])
def test_a_bad_pool_size_names_the_variable(bad: str) -> None:
    with pytest.raises(ValueError, match=r"DATABASE_POOL_SIZE: .* positive whole number"):
        default_storage({"DATABASE_URL": "postgres://h/app", "DATABASE_POOL_SIZE": bad})


def test_a_database_url_of_another_kind_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL") as refused:
        default_storage({"DATABASE_URL": "mysql://app:s3cret@db.example.com/app"})
    assert "postgresql://" in str(refused.value) and "s3cret" not in str(refused.value)


async def test_unopened_storage_says_so(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="open"):
        await SQLiteStorage(tmp_path / "x.sqlite").load_messages("s")


async def test_inbox_claims_are_exclusive_and_lapse(storage: Any) -> None:
    item = await storage.inbox_add("slack:Ev1", {"text": "x"})
    assert await storage.inbox_claim(item, "proc-a", 0.2)
    assert not await storage.inbox_claim(item, "proc-b", 0.2)
    assert await storage.inbox_claim(item, "proc-a", 0.2)  # renewal by the holder
    await storage.inbox_release(item, "proc-b")  # not the holder: no effect
    assert not await storage.inbox_claim(item, "proc-b", 0.2)
    await storage.inbox_release(item, "proc-a")
    assert await storage.inbox_claim(item, "proc-b", 0.05)
    await wait_for(
        lambda: storage.inbox_claim(item, "proc-c", 0.05), "proc-b's claim to lapse for proc-c"
    )


async def test_claims_are_fenced_by_token(storage: Any) -> None:
    """A holder that lost its claim cannot release, renew or re-create the next one's."""
    first = await storage.inbox_add("telegram:1", {"text": "x"})
    second = await storage.inbox_add("telegram:2", {"text": "y"})
    assert await storage.inbox_claim(first, "a#1", 0.05)
    await wait_for(lambda: storage.inbox_claim(first, "b#1", 30), "a's lease to lapse for b")
    await storage.inbox_release(first, "a#1")  # late release by the old holder
    assert not await storage.inbox_claim(first, "c#1", 30), "the old holder freed b's claim"
    assert await storage.inbox_renew({first: "a#1"}, 30) == {first}
    assert await storage.inbox_renew({first: "b#1"}, 30) == set()
    # A lapsed claim is lost for good, even when nobody took it meanwhile.
    assert await storage.inbox_claim(second, "a#2", 0.05)
    await asyncio.sleep(0.1)  # twice the lease
    assert await storage.inbox_renew({second: "a#2"}, 30) == {second}
    # Done: no claim survives it, and none can be renewed.
    await storage.inbox_done(first)
    assert await storage.inbox_renew({first: "b#1"}, 30) == {first}


async def test_claims_many_in_one_trip(storage: Any) -> None:
    ids = [await storage.inbox_add(f"telegram:{n}", {"text": str(n)}) for n in range(5)]
    assert await storage.inbox_claim(ids[1], "other#1", 30)
    taken = await storage.inbox_claim_many({n: f"me#{n}" for n in ids}, 30)
    assert sorted(taken) == sorted(n for n in ids if n != ids[1])
    assert await storage.inbox_pending_ids() == ids
    await storage.inbox_done(ids[0])
    assert await storage.inbox_pending_ids() == ids[1:]


TURNS = 300


async def test_sqlite_writes_from_both_connections_never_find_the_database_locked(
    tmp_path: Path,
) -> None:
    """Turn bookkeeping (attempts, replies, settings, cooldowns) and the loop-thread writes
    (transcripts, sends) interleave under load: none fails, none is lost."""
    storage = SQLiteStorage(tmp_path / "busy.sqlite")
    await storage.open()
    try:
        ids = [await storage.inbox_add(f"t:{n}", {"text": str(n)}) for n in range(TURNS)]

        async def turn(n: int, item: int) -> None:
            await storage.inbox_begin(item)
            await storage.append_messages(f"s{n % 7}", [Message(Role.USER, f"q{n}")])
            await storage.kv_update("cooldown", f"k{n % 3}", lambda old: (old or 0) + 1)
            await storage.inbox_set_reply(item, [f"a{n}"])
            await storage.set_setting(f"s{n % 7}", "model", f"m{n}")
            await storage.inbox_done(item)

        await asyncio.gather(*(turn(n, item) for n, item in enumerate(ids)))
        assert await storage.inbox_pending_ids() == []
        counts = await storage.kv_get_all("cooldown")
        assert sum(counts.values()) == TURNS
    finally:
        await storage.close()


async def test_sqlite_reads_see_loop_thread_writes_after_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background checkpoint's result is read to its end: a PRAGMA left unread kept a
    read snapshot open on aiosqlite's connection, whose reads then went stale (done
    messages looked pending, and a sweep answered them again)."""
    monkeypatch.setattr("bot.storage.sqlite.CHECKPOINT_EVERY", 2)
    storage = SQLiteStorage(tmp_path / "cp.sqlite")
    await storage.open()
    try:
        first = await storage.inbox_add("t:1", {"n": 1})
        second = await storage.inbox_add("t:2", {"n": 2})
        await storage.inbox_mark_sent(first, 1)
        await storage.inbox_mark_sent(second, 1)  # the second fast write: a checkpoint
        assert storage._checkpoint is not None
        await storage._checkpoint
        assert await storage.inbox_pending_ids() == [first, second]  # a read after it
        await storage.inbox_done(first)
        assert await storage.inbox_pending_ids() == [second]
        assert await storage.inbox_get(first) is None
    finally:
        await storage.close()


@pytest.mark.parametrize(
    "protocol",
    [Storage, Lifecycle, TranscriptStore, SettingsStore, Inbox, InboxClaims, KeyValue],
)
async def test_backends_implement_every_protocol(storage: Any, protocol: type) -> None:
    assert isinstance(storage, protocol)
    assert isinstance(storage, ConversationStore)
    assert not isinstance(object(), protocol)


async def test_only_postgresql_implements_the_media_blobs_protocol(storage: Any) -> None:
    # Redis keeps nothing on disk (and 10 MB values hurt it); SQLite's disk is the media's.
    assert isinstance(storage, MediaBlobs) == isinstance(storage, PostgresStorage)


# A third-party backend, as a package would ship it: registered under ``chatlane.storage``.
class FakeStoreDown(Exception):
    """The fake backend's own "cannot reach the store just now"."""


class FakeStore(MemoryStorage):
    url_env: ClassVar[str | None] = "FAKESTORE_URL"
    schemes: ClassVar[tuple[str, ...]] = ("fake",)
    priority: ClassVar[int] = 5
    default: ClassVar[bool] = False
    unavailable: ClassVar[tuple[type[Exception], ...]] = (FakeStoreDown,)

    def __init__(self, url: str = "") -> None:
        super().__init__()
        self.url = url

    @classmethod
    def from_env(cls, env: Any, *, max_connections: int | None = None) -> FakeStore:
        return cls(env["FAKESTORE_URL"])


class Undeclared:
    """Forgets to say what it serves."""


@pytest.fixture
def third_party(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake backends join the installed ones where the registry reads entry points."""
    real = bot.registry.entry_points
    extra = [
        EntryPoint("fake", f"{__name__}:FakeStore", "chatlane.storage"),
        EntryPoint("undeclared", f"{__name__}:Undeclared", "chatlane.storage"),
    ]

    def entry_points(*, group: str) -> EntryPoints:
        found = list(real(group=group))
        return EntryPoints(found + extra if group == "chatlane.storage" else found)

    def forget() -> None:
        load_entry_points.cache_clear()
        backends.cache_clear()
        unavailable.cache_clear()

    monkeypatch.setattr(bot.registry, "entry_points", entry_points)
    forget()
    yield
    monkeypatch.undo()
    forget()


def test_a_third_party_backend_is_chosen_by_its_url(
    third_party: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="bot.storage.factory"):
        installed = backends()
    assert list(installed) == ["postgres", "redis", "fake", "memory", "sqlite"]  # by priority
    assert "storage backend undeclared does not declare url_env" in caplog.text
    store = default_storage({"FAKESTORE_URL": "fake://here", "CHATLANE_DATA_DIR": str(tmp_path)})
    assert isinstance(store, FakeStore) and store.url == "fake://here"
    both = {"FAKESTORE_URL": "fake://here", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert isinstance(default_storage(both), RedisStorage)  # the higher priority
    assert isinstance(default_storage({"CHATLANE_DATA_DIR": str(tmp_path)}), SQLiteStorage)


def test_a_third_party_backends_errors_count_as_unavailable(third_party: None) -> None:
    errors = bot.storage.base.UNAVAILABLE
    assert FakeStoreDown in errors and sqlite3.OperationalError in errors
    assert ValueError not in errors
    with pytest.raises(ValueError):  # anything else still propagates
        try:
            raise ValueError("a bug")
        except bot.storage.base.UNAVAILABLE:
            pytest.fail("a bug was taken for an outage")
    try:
        raise FakeStoreDown("connection refused")
    except bot.storage.base.UNAVAILABLE as error:
        assert isinstance(error, FakeStoreDown)


def test_unavailable_is_the_union_of_the_installed_backends() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    assert set(bot.storage.base.UNAVAILABLE) == {
        PostgresUnavailable,
        RedisConnectionError,
        RedisTimeoutError,
        sqlite3.OperationalError,
    }
    with pytest.raises(AttributeError, match="NOT_THERE"):
        bot.storage.base.NOT_THERE  # noqa: B018 (the module's own lookup must still refuse)


def test_a_url_no_backend_serves_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="REDIS_URL") as refused:
        default_storage({"REDIS_URL": "http://user:s3cret@example.com:6379"})
    assert "http:// URLs" in str(refused.value) and "rediss://" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ValueError, match="without a scheme"):
        default_storage({"REDIS_URL": "/no/scheme"})


def test_an_installed_package_adds_a_backend_that_consumers_see(tmp_path: Path) -> None:
    """Through real package metadata in a fresh process: ``except UNAVAILABLE`` in the
    dispatcher (bound when it is imported) catches the new backend's errors too."""
    (tmp_path / "fakestore.py").write_text(
        textwrap.dedent(
            """
            from bot.storage.memory import MemoryStorage

            class Down(Exception):
                pass

            class Store(MemoryStorage):
                url_env = "FAKESTORE_URL"
                schemes = ("fake",)
                priority = 5
                default = False
                unavailable = (Down,)

                @classmethod
                def from_env(cls, env, *, max_connections=None):
                    return cls()
            """
        )
    )
    info = tmp_path / "fakestore-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakestore\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[chatlane.storage]\nfake = fakestore:Store\n")
    script = textwrap.dedent(
        """
        import bot.dispatch, fakestore
        from bot.storage.factory import default_storage
        assert fakestore.Down in bot.dispatch.UNAVAILABLE, bot.dispatch.UNAVAILABLE
        store = default_storage({"FAKESTORE_URL": "fake://x"})
        assert type(store) is fakestore.Store, store
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[1]}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A real redis-server speaking only TLS, with a self-signed certificate (as Heroku
    Redis has); its ``rediss://`` URL."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if binary is None or openssl is None:
        pytest.skip("needs redis-server and openssl")
    cert, key, log = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "redis.log"
    subject = ["-subj", "/CN=redis.example.com", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject],
        check=True,
        capture_output=True,
        timeout=30,
    )
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    tls += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    quiet = ["--save", "", "--appendonly", "no", "--logfile", str(log)]
    proc = subprocess.Popen([binary, "--port", "0", "--bind", "127.0.0.1", *tls, *quiet])
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            if proc.poll() is not None:  # e.g. built without TLS
                pytest.skip(f"redis-server would not serve TLS: {log.read_text()[-200:]}")
            assert time.monotonic() < deadline, "redis-server (TLS) did not start in 10 s"
            time.sleep(0.02)
        yield f"rediss://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_rediss_with_a_self_signed_certificate_and_cert_reqs_none(
    tls_redis: str, cleanup: contextlib.AsyncExitStack
) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from bot.components import build_lanes
    from bot.config import load_config

    # By default the certificate is checked, and a self-signed one refused.
    strict = aioredis.Redis.from_url(tls_redis, **redis_tls({"REDIS_URL": tls_redis}))
    cleanup.push_async_callback(strict.aclose)
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await strict.ping()
    env = {"REDIS_URL": tls_redis, "REDIS_SSL_CERT_REQS": "none"}
    store = default_storage(env)
    assert isinstance(store, RedisStorage)
    await store.open()
    cleanup.push_async_callback(store.close)
    assert await store.ping()
    item = await store.inbox_add("telegram:1", {"text": "over TLS"})
    assert [i.data for i in await store.inbox_pending()] == [{"text": "over TLS"}]
    assert await store.inbox_claim(item, "a#1", 30)
    lanes = build_lanes(load_config(data={}), env)  # lanes ride the same TLS options
    assert lanes is not None
    cleanup.push_async_callback(lanes.aclose)
    assert await lanes.ping()


async def test_tls_options_come_from_the_environment(redis_server: str) -> None:
    assert redis_tls({}) == {}
    assert redis_tls({"REDIS_SSL_CERT_REQS": "None"}) == {
        "ssl_cert_reqs": "none",
        "ssl_check_hostname": False,
    }
    files = {"REDIS_SSL_CA_CERTS": "/ca.pem", "REDIS_SSL_CERTFILE": "/c.pem"}
    assert redis_tls({**files, "REDIS_SSL_CERT_REQS": "required"}) == {
        "ssl_ca_certs": "/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_cert_reqs": "required",
    }
    with pytest.raises(ValueError, match="REDIS_SSL_CERT_REQS: 'off' is not one of none"):
        redis_tls({"REDIS_SSL_CERT_REQS": "off"})
    # A plain redis:// URL leaves them out (redis-py would refuse them there).
    plain = RedisStorage.from_env({"REDIS_URL": redis_server, "REDIS_SSL_CERT_REQS": "none"})
    await plain.open()
    try:
        assert await plain.ping()
    finally:
        await plain.close()
