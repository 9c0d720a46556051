"""The storage contract: transcripts, per-session settings, the inbox, small shared state.

Each consumer is typed against the narrow protocol it uses (``TranscriptStore``,
``SettingsStore``, ``Inbox``, ``InboxClaims``, ``KeyValue``, ``Lifecycle``, or
``ConversationStore`` for transcripts with their summaries); ``Storage`` is all
of them, what a backend implements and the runtime holds. ``MediaBlobs`` is
optional: media bytes in the database, for PostgreSQL (see ``bot.media``).

Backends are found through the ``chatlane.storage`` entry points (see
``bot.storage.factory``): SQLite (the default, under ``CHATLANE_DATA_DIR``),
Redis (when ``REDIS_URL`` is set, shared by every process) and ``MemoryStorage``
(everything in the process, for the terminal chat and tests).

Key-value state (``kv_*``) holds JSON-able values in namespaces, e.g.
``cooldown`` (auth profile state) or ``summary`` (compaction summaries).
``kv_update`` is atomic per key across tasks (and, for Redis, processes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson

from bot.messages import Message

JSON = Any
Updater = Callable[[JSON | None], JSON | None]

# One encoder for every stored message: ``json.dumps`` with options builds a new one per call.
_encode: Callable[[Any], str] = json.JSONEncoder(ensure_ascii=False).encode
# What orjson writes unlike json goes to json (its encoder takes 5-8x as long): subclasses,
# keys that are not strings, ints past 64 bits, lone surrogates; and what json refuses,
# dataclasses and datetimes, is refused still (plain Enums and UUIDs orjson does write).
_ORJSON_LIKE_JSON = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def to_json(value: Any) -> str:
    """JSON text for storage, as ``json.dumps(value, ensure_ascii=False)`` reads back:
    every reader uses ``json.loads``. Written by orjson (no spaces; NaN and infinities
    as null, which nothing stores), else by json, which writes or refuses as always."""
    try:
        return orjson.dumps(value, default=_refuse, option=_ORJSON_LIKE_JSON).decode()
    except TypeError:  # orjson.JSONEncodeError too
        return _encode(value)


if TYPE_CHECKING:
    UNAVAILABLE: tuple[type[Exception], ...]
    """Errors meaning the store cannot be reached or written just now (Redis down or
    restarting, SQLite locked or its disk full): try again later, never give up on
    a message because of them. The union of every installed backend's ``unavailable``,
    collected once, on first use (``bot.storage.factory.unavailable``)."""
else:

    def __getattr__(name: str) -> Any:
        # Lazily: the backends import this module, so the union cannot be built while it loads.
        if name == "UNAVAILABLE":
            from bot.storage.factory import unavailable

            return unavailable()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EarlierPending(Exception):
    """``inbox_open``: an earlier message of the same chat is not answered yet and not
    part of the turn, so this one must wait for it; its claim was released in the same
    step (whoever answers the earlier one takes it next: see ``inbox_done``)."""

    def __init__(self, item_id: int) -> None:
        super().__init__(item_id)
        self.item_id = item_id


def chat_of(data: Mapping[str, JSON]) -> str:
    """The chat a stored inbound message belongs to (its lane: channel, chat, thread),
    which orders a chat's messages across processes on shared storage."""
    chat = f"{data.get('channel')}:{data.get('chat_id')}"
    thread = data.get("thread_id")
    return f"{chat}:{thread}" if thread else chat


@dataclass(slots=True)
class InboxItem:
    """An accepted inbound message and how far its answer got.

    ``reply`` holds the rendered reply parts once the turn has finished;
    ``sent`` counts the parts already delivered, so a replay after a crash
    resumes there instead of answering twice.
    """

    id: int
    data: dict[str, JSON]
    reply: list[JSON] | None = None
    sent: int = 0
    attempts: int = 0
    extra: dict[str, JSON] = field(default_factory=dict)


class LocalClaims:
    """Inbox claims for a store only this process writes: they need only live in memory."""

    def __init__(self) -> None:
        self._claims: dict[int, tuple[str, float]] = {}

    async def inbox_claim(self, item_id: int, token: str, ttl: float) -> bool:
        now = time.monotonic()
        holder = self._claims.get(item_id)
        if holder is not None and holder[0] != token and holder[1] > now:
            return False
        self._claims[item_id] = (token, now + ttl)
        return True

    async def inbox_claim_many(self, claims: Mapping[int, str], ttl: float) -> list[int]:
        return [n for n, token in claims.items() if await self.inbox_claim(n, token, ttl)]

    async def inbox_renew(self, claims: Mapping[int, str], ttl: float) -> set[int]:
        now = time.monotonic()
        lost = set()
        for item_id, token in claims.items():
            holder = self._claims.get(item_id)
            if holder is None or holder[0] != token or holder[1] <= now:
                lost.add(item_id)
            else:
                self._claims[item_id] = (token, now + ttl)
        return lost

    async def inbox_release(self, item_id: int, token: str) -> None:
        holder = self._claims.get(item_id)
        if holder is not None and holder[0] == token:
            del self._claims[item_id]


@runtime_checkable
class Lifecycle(Protocol):
    #: True when other processes write to the same store (Redis): readers must
    #: not trust what they cached. False: this process is the only writer.
    shared: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers; used by ``/healthz``."""
        ...


@runtime_checkable
class TranscriptStore(Protocol):
    """Conversations: everything is kept; ``reset`` starts a new one."""

    shared: bool  # (as in ``Lifecycle``) whether a cached transcript may be stale

    async def append_messages(
        self,
        session_id: str,
        messages: Sequence[Message],
        reply: tuple[int, list[JSON]] | None = None,
    ) -> list[Message]:
        """Store messages in order; returns them with their ``id`` set.

        ``reply`` (inbox id, parts): that item's reply (``inbox_set_reply``) in the same
        step, so a turn's transcript and the reply it is about to send are stored
        together: a crash between two writes would leave an answered transcript and an
        unanswered message, which a restart would ask the model about again."""
        ...

    async def load_messages(self, session_id: str, after_id: int | None = None) -> list[Message]:
        """The current conversation (since the last reset), oldest first.

        With ``after_id``, only the messages stored after that one (ids grow
        monotonically), so a caller holding a cached prefix reads only what is new.
        """
        ...

    async def reset_session(self, session_id: str) -> None: ...


@runtime_checkable
class SettingsStore(Protocol):
    """Per-session settings (``/think``, ``/model``)."""

    shared: bool  # (as in ``Lifecycle``) whether cached settings may be stale

    async def get_settings(self, session_id: str) -> dict[str, JSON]: ...

    async def set_setting(self, session_id: str, key: str, value: JSON | None) -> None: ...


@runtime_checkable
class InboxClaims(Protocol):
    """Leases on inbox items: who may answer one just now."""

    async def inbox_claim(self, item_id: int, token: str, ttl: float) -> bool:
        """Take the right to answer an item for ``ttl`` seconds; True when ``token`` holds it.

        A claim is a lease with a fencing token: ``token`` is unique to one claim
        (never reused, not even by the same process), so a late release or renewal
        by a holder that lost its claim cannot touch the next holder's. A process
        that dies stops renewing, its claims lapse, and another picks the items up.
        """
        ...

    async def inbox_claim_many(self, claims: Mapping[int, str], ttl: float) -> list[int]:
        """``inbox_claim`` for many items in one trip; the ids taken."""
        ...

    async def inbox_renew(self, claims: Mapping[int, str], ttl: float) -> set[int]:
        """Extend claims still held by their tokens, in one trip; returns the ids lost.

        A renewal never re-creates a claim: one that lapsed, was released, was
        taken by another token or whose item is done stays lost, so its holder
        must not send anything for it.
        """
        ...

    async def inbox_release(self, item_id: int, token: str) -> None: ...


@runtime_checkable
class Inbox(InboxClaims, Protocol):
    """Accepted inbound messages, stored before the platform is acknowledged."""

    shared: bool  # (as in ``Lifecycle``) whether other processes answer from it too

    async def inbox_add(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float] | None = None
    ) -> int | None:
        """Store a message; None when ``dedupe_key`` was seen before (a redelivery).
        ``claim`` (token, ttl): the new item is claimed by that token in the same step,
        as ``inbox_claim`` would."""
        ...

    async def inbox_take(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float]
    ) -> tuple[int, bool] | None:
        """``inbox_add`` for a message this process answers: claimed by ``claim`` and, when
        no earlier message of its chat is pending, opened in the same step (its first
        attempt counted, as ``inbox_open`` would when its turn starts; that turn then
        need not open it, one trip or commit less a turn). (id, opened); None for a
        redelivery. A backend that cannot order a chat's messages in that step says
        False, and the turn opens the item as before."""
        ...

    async def inbox_pending(self) -> list[InboxItem]:
        """Messages not yet fully answered, oldest first."""
        ...

    async def inbox_get(self, item_id: int) -> InboxItem | None: ...

    async def inbox_pending_ids(self) -> list[int]:
        """The ids of messages not yet fully answered, oldest first (cheap: no data)."""
        ...

    async def inbox_begin(self, item_id: int) -> int:
        """Count one more processing attempt; returns the count."""
        ...

    async def inbox_open(
        self, item_id: int, claim: str | None = None, turn: Sequence[int] = ()
    ) -> InboxItem | None:
        """``inbox_get`` and ``inbox_begin`` in one step, for a turn about to answer it: the
        item with this attempt counted; None (and nothing counted) if it is done.

        ``claim``, the caller's claim token on the item, asks for a chat's order across
        processes (shared storage; a backend only this process writes ignores it): when
        an earlier message of the same chat is not done and not among ``turn`` (the ids
        the turn answers together), nothing is counted, the item's claim (by ``claim``)
        is released and ``EarlierPending`` is raised.
        """
        ...

    async def inbox_set_reply(self, item_id: int, parts: list[JSON]) -> None: ...

    async def inbox_mark_sent(self, item_id: int, sent: int) -> None: ...

    async def inbox_done(self, item_id: int) -> list[int]:
        """Mark an item answered; on shared storage, the ids of the same chat's later
        messages that nobody holds, oldest first (handed back by ``inbox_open`` while
        this one waited), for the caller to claim and answer next. Else ``[]``."""
        ...


@runtime_checkable
class KeyValue(Protocol):
    """Small shared state in namespaces: auth key cooldowns, compaction summaries."""

    shared: bool  # (as in ``Lifecycle``) whether another process may change a value

    async def kv_get(self, namespace: str, key: str) -> JSON | None: ...

    async def kv_get_all(self, namespace: str) -> dict[str, JSON]: ...

    async def kv_set(self, namespace: str, key: str, value: JSON) -> None: ...

    async def kv_delete(self, namespace: str, key: str) -> None: ...

    async def kv_update(self, namespace: str, key: str, update: Updater) -> JSON | None:
        """Atomically replace the value with ``update(old)`` (None deletes); return the new one."""
        ...


@runtime_checkable
class MediaBlobs(Protocol):
    """Media bytes kept with the rest of the durable state (PostgreSQL), for a process
    whose disk is wiped at restart or that answers media another process stored.

    Optional: a backend without it leaves the bytes on the local disk alone (SQLite
    shares that disk; Redis keeps nothing on disk and large values hurt it). A blob is
    named by the sha256 of its bytes, so a put of an id already held changes nothing.
    """

    async def blob_put(self, blob_id: str, data: bytes) -> bool:
        """Store ``data`` under ``blob_id`` unless held already; True when this put stored it."""
        ...

    async def blob_get(self, blob_id: str) -> bytes | None: ...

    async def blob_delete(self, blob_id: str) -> None:
        """Remove a blob no message names (an upload whose message was refused)."""
        ...


@runtime_checkable
class ConversationStore(TranscriptStore, KeyValue, Protocol):
    """What building a model's context reads and writes: transcripts and their summaries."""


@runtime_checkable
class Storage(Lifecycle, TranscriptStore, SettingsStore, Inbox, KeyValue, Protocol):
    """Everything: what a backend implements and the runtime holds."""
