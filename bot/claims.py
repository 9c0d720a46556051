"""The stored messages this process holds the right to answer: leases with fencing tokens.

A claim is taken in storage with a token of its own (never reused, not even
by this process), so a late renewal or release by a holder that lost its
claim cannot touch the next holder's. All of a process's claims are renewed
in one trip every third of the lease. A claim renewed less than half a lease
ago is ours for sure (nobody can take a claim before its lease runs out), so
checking it costs nothing; an older one is renewed to know. A renewal never
re-creates a lost claim: its holder must not send anything for it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.storage.base import InboxClaims

log = logging.getLogger(__name__)

CLAIM_TTL = 30.0


@dataclass(slots=True)
class Claim:
    """A claim held: its fencing token, and when it was last taken or renewed (this
    process's clock, read before the request went out)."""

    token: str
    since: float
    confirmed: bool = False  # storage said yes; until then renewals leave it alone
    finishing: bool = False  # its message is being marked done, which drops the claim

    def fresh(self, now: float) -> bool:
        return now - self.since < CLAIM_TTL / 2


class Claims:
    """This process's claims, by inbox id. ``storage`` is called for the store each time
    (the runtime opens it lazily)."""

    def __init__(self, owner: str, storage: Callable[[], InboxClaims]) -> None:
        self.owner = owner
        self._storage = storage
        self._held: dict[int, Claim] = {}
        self._tokens = itertools.count(1)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def _mark(self, item_id: int) -> str:
        """Hold ``item_id`` here before asking storage, so nothing takes it twice."""
        token = f"{self.owner}#{next(self._tokens)}"
        self._held[item_id] = Claim(token, time.monotonic())
        return token

    def _drop(self, item_id: int, token: str) -> None:
        claim = self._held.get(item_id)
        if claim is not None and claim.token == token:
            del self._held[item_id]

    async def take(self, item_id: int) -> bool:
        """Claim one stored message; False if this process or another holds it."""
        if item_id in self._held:
            return False
        token = self._mark(item_id)
        taken = False
        try:
            taken = bool(await self._storage().inbox_claim(item_id, token, CLAIM_TTL))
        finally:
            self._settle(item_id, token, taken)
        return taken

    async def take_many(self, item_ids: Iterable[int]) -> list[int]:
        """Claim the messages nobody holds, in one trip; the ids taken, in order."""
        wanted = {n: self._mark(n) for n in item_ids if n not in self._held}
        if not wanted:
            return []
        taken: set[int] = set()
        try:
            taken = set(await self._storage().inbox_claim_many(wanted, CLAIM_TTL))
        finally:
            for n, token in wanted.items():
                self._settle(n, token, n in taken)
        return [n for n in wanted if n in taken]

    def _settle(self, item_id: int, token: str, taken: bool) -> None:
        claim = self._held.get(item_id)
        if claim is None or claim.token != token:
            return
        if taken:
            claim.confirmed = True
        else:
            del self._held[item_id]

    def ahead(self) -> tuple[tuple[str, float], float]:
        """A claim (token, lease) to take in the same step as the item's write
        (``inbox_add(claim=)``), and the time before that went out: ``adopt`` it after."""
        return (f"{self.owner}#{next(self._tokens)}", CLAIM_TTL), time.monotonic()

    def adopt(self, item_id: int, token: str, since: float) -> None:
        """Hold a claim storage granted with the item's write."""
        self._held[item_id] = Claim(token, since, confirmed=True)

    def token(self, item_id: int) -> str | None:
        claim = self._held.get(item_id)
        return claim.token if claim is not None else None

    def finishing(self, item_id: int) -> None:
        """The message is about to be marked done, and its claim dropped with it: a
        renewal that finds it gone in the meantime says nothing (it was not lost)."""
        claim = self._held.get(item_id)
        if claim is not None:
            claim.finishing = True

    def forget(self, item_id: int) -> None:
        """The message is done: its claim went with it."""
        self._held.pop(item_id, None)

    async def release(self, item_id: int) -> None:
        claim = self._held.pop(item_id, None)
        if claim is not None:
            await self._storage().inbox_release(item_id, claim.token)

    async def release_all(self) -> None:
        for item_id in list(self._held):
            await self.release(item_id)

    async def renew(self) -> None:
        """Renew every claim held, in one trip; say which were lost. A claim whose
        write has not landed yet is not asked about: it would look lost."""
        held = {n: claim for n, claim in self._held.items() if claim.confirmed}
        await self._renew(held, quiet=False)

    async def check(self, item_ids: Iterable[int]) -> set[int]:
        """The ids among ``item_ids`` whose claim this process still holds."""
        now = time.monotonic()
        ours: set[int] = set()
        stale: dict[int, Claim] = {}
        for n in item_ids:
            claim = self._held.get(n)
            if claim is not None and claim.confirmed:
                if claim.fresh(now):
                    ours.add(n)
                else:
                    stale[n] = claim
        if stale:
            ours |= await self._renew(stale, quiet=True)
        return ours

    async def _renew(self, held: dict[int, Claim], *, quiet: bool) -> set[int]:
        now = time.monotonic()
        tokens = {n: claim.token for n, claim in held.items()}
        lost: set[int] = await self._storage().inbox_renew(tokens, CLAIM_TTL)
        for n, claim in held.items():
            if n not in lost:
                claim.since = max(claim.since, now)
                continue
            # (not one finished meanwhile, nor one whose message is being marked done)
            if self._held.get(n) is claim and not quiet and not claim.finishing:
                log.warning("lost the claim on inbox item %s; another process may answer it", n)
            self._drop(n, claim.token)
        return set(held) - lost
