"""A process's claims: taken once, in one trip for many, checked without a trip while fresh."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.claims import Claims
from bot.storage import Inbox, InboxClaims, MemoryStorage
from bot.storage.base import LocalClaims


class Counting(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.trips = 0

    async def inbox_renew(self, claims: Any, ttl: float) -> set[int]:
        self.trips += 1
        return await super().inbox_renew(claims, ttl)


async def test_take_once_many_in_one_trip_and_release() -> None:
    storage = Counting()
    ids = [await storage.inbox_add(f"t:{n}", {"n": n}) for n in range(4)]
    mine, theirs = Claims("a", lambda: storage), Claims("b", lambda: storage)
    assert await mine.take(ids[0])
    assert not await mine.take(ids[0])  # held here already
    assert not await theirs.take(ids[0])
    assert await theirs.take_many(ids) == ids[1:]
    assert await mine.take_many(ids) == []
    assert len(mine) == 1 and len(theirs) == 3
    await theirs.release(ids[1])
    assert ids[1] not in theirs
    assert await mine.take_many(ids) == [ids[1]]
    await mine.release_all()
    assert len(mine) == 0
    assert await theirs.take(ids[0])


async def test_a_fresh_claim_is_checked_without_a_trip_and_a_stale_one_with_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("bot.claims.time.monotonic", lambda: now[0])
    storage = Counting()
    item = await storage.inbox_add("t:1", {})
    claims = Claims("a", lambda: storage)
    assert await claims.take(item)
    assert await claims.check([item, 999]) == {item}
    assert storage.trips == 0
    now[0] += 20  # past half the 30 s lease: ask
    assert await claims.check([item]) == {item}
    assert storage.trips == 1
    assert await claims.check([item]) == {item}  # renewed just now: fresh again
    assert storage.trips == 1


async def test_a_lost_claim_is_let_go() -> None:
    storage = Counting()
    item = await storage.inbox_add("t:1", {})
    claims = Claims("a", lambda: storage)
    assert await claims.take(item)
    await storage.inbox_done(item)  # finished elsewhere: the claim is gone
    await claims.renew()
    assert item not in claims


async def test_a_renewal_racing_the_done_write_is_not_reported_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Marking a message done drops its claim in the same write; a renewal that reaches
    storage just after and is read before the claim is forgotten here finds it gone.
    That claim was not lost to another process: no warning. One that was, still warns."""
    storage = Counting()
    finished = await storage.inbox_add("t:0", {})
    taken_over = await storage.inbox_add("t:1", {})
    claims = Claims("a", lambda: storage)
    assert await claims.take_many([finished, taken_over]) == [finished, taken_over]
    claims.finishing(finished)
    await storage.inbox_done(finished)  # the done write landed; forget() not yet run
    await storage.inbox_release(taken_over, claims.token(taken_over) or "")
    assert await Claims("b", lambda: storage).take(taken_over)  # another process has it
    with caplog.at_level("WARNING", logger="bot.claims"):
        await claims.renew()
    assert finished not in claims and taken_over not in claims
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"lost the claim on inbox item {taken_over}; another process may answer it"]


async def test_a_renewal_while_a_claim_is_being_taken_leaves_it_alone() -> None:
    """The claim is marked here before its write lands; a renewal in between must not
    call it lost (the message would wait out a lease for nothing)."""
    landed = asyncio.Event()
    release = asyncio.Event()

    class Slow(MemoryStorage):
        async def inbox_claim_many(self, claims: Any, ttl: float) -> list[int]:
            landed.set()
            await release.wait()
            return await super().inbox_claim_many(claims, ttl)

    storage = Slow()
    item = await storage.inbox_add("t:1", {})
    claims = Claims("a", lambda: storage)
    taking = asyncio.ensure_future(claims.take_many([item]))
    await landed.wait()
    await claims.renew()  # in the window
    assert item in claims
    release.set()
    assert await taking == [item]
    assert await claims.check([item]) == {item}


async def test_claims_need_only_a_claims_store() -> None:
    """Typed against ``InboxClaims``: a store with leases and nothing else will do."""
    store = LocalClaims()
    assert isinstance(store, InboxClaims) and not isinstance(store, Inbox)
    mine, theirs = Claims("a", lambda: store), Claims("b", lambda: store)
    assert await mine.take_many([1, 2]) == [1, 2]
    assert not await theirs.take(1)
    assert await mine.check([1, 2]) == {1, 2}
    await mine.release(1)
    assert await theirs.take(1)
    assert 1 not in mine and 1 in theirs
