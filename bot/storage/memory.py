"""In-process storage: nothing survives the process. For the terminal chat and tests."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import ClassVar

from bot.messages import Message
from bot.storage.base import JSON, InboxItem, LocalClaims, Updater


class MemoryStorage(LocalClaims):
    shared = False
    # Never chosen from the environment: built by hand (the terminal chat, tests).
    url_env: ClassVar[str | None] = None
    schemes: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0
    default: ClassVar[bool] = False
    unavailable: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._messages: dict[str, list[Message]] = defaultdict(list)
        self._settings: dict[str, dict[str, JSON]] = defaultdict(dict)
        self._kv: dict[str, dict[str, JSON]] = defaultdict(dict)
        self._next_id = 1
        self._inbox: dict[int, InboxItem] = {}
        self._seen: set[str] = set()
        self._next_inbox = 1

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, max_connections: int | None = None
    ) -> MemoryStorage:
        return cls()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def append_messages(
        self,
        session_id: str,
        messages: Sequence[Message],
        reply: tuple[int, list[JSON]] | None = None,
    ) -> list[Message]:
        if reply is not None:
            await self.inbox_set_reply(*reply)
        stored = []
        for message in messages:
            saved = message.with_id(self._next_id)
            self._next_id += 1
            self._messages[session_id].append(saved)
            stored.append(saved)
        return stored

    async def load_messages(self, session_id: str, after_id: int | None = None) -> list[Message]:
        messages = self._messages.get(session_id, ())
        if after_id is None:
            return list(messages)
        return [m for m in messages if m.id is not None and m.id > after_id]

    async def reset_session(self, session_id: str) -> None:
        self._messages.pop(session_id, None)

    async def get_settings(self, session_id: str) -> dict[str, JSON]:
        return dict(self._settings.get(session_id, {}))

    async def set_setting(self, session_id: str, key: str, value: JSON | None) -> None:
        if value is None:
            self._settings[session_id].pop(key, None)
        else:
            self._settings[session_id][key] = value

    async def kv_get(self, namespace: str, key: str) -> JSON | None:
        return copy.deepcopy(self._kv[namespace].get(key))

    async def kv_get_all(self, namespace: str) -> dict[str, JSON]:
        return copy.deepcopy(self._kv[namespace])

    async def kv_set(self, namespace: str, key: str, value: JSON) -> None:
        self._kv[namespace][key] = copy.deepcopy(value)

    async def kv_delete(self, namespace: str, key: str) -> None:
        self._kv[namespace].pop(key, None)

    async def kv_update(self, namespace: str, key: str, update: Updater) -> JSON | None:
        # No await between read and write: atomic on one event loop.
        new = update(copy.deepcopy(self._kv[namespace].get(key)))
        if new is None:
            self._kv[namespace].pop(key, None)
        else:
            self._kv[namespace][key] = copy.deepcopy(new)
        return new

    async def inbox_add(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float] | None = None
    ) -> int | None:
        if dedupe_key in self._seen:
            return None
        self._seen.add(dedupe_key)
        item_id = self._next_inbox
        self._next_inbox += 1
        self._inbox[item_id] = InboxItem(item_id, copy.deepcopy(data))
        if claim is not None:
            await self.inbox_claim(item_id, *claim)
        return item_id

    async def inbox_take(
        self, dedupe_key: str, data: dict[str, JSON], claim: tuple[str, float]
    ) -> tuple[int, bool] | None:
        # Only this process answers from it: its mailbox keeps each chat's order.
        item_id = await self.inbox_add(dedupe_key, data, claim)
        if item_id is None:
            return None
        self._inbox[item_id].attempts = 1
        return item_id, True

    async def inbox_pending(self) -> list[InboxItem]:
        return [copy.deepcopy(item) for _, item in sorted(self._inbox.items())]

    async def inbox_pending_ids(self) -> list[int]:
        return sorted(self._inbox)

    async def inbox_get(self, item_id: int) -> InboxItem | None:
        item = self._inbox.get(item_id)
        return copy.deepcopy(item) if item else None

    async def inbox_begin(self, item_id: int) -> int:
        item = self._inbox[item_id]
        item.attempts += 1
        return item.attempts

    async def inbox_open(
        self, item_id: int, claim: str | None = None, turn: Sequence[int] = ()
    ) -> InboxItem | None:
        # Only this process answers from it: its mailbox keeps each chat's order.
        item = self._inbox.get(item_id)
        if item is None:
            return None
        item.attempts += 1
        return copy.deepcopy(item)

    async def inbox_set_reply(self, item_id: int, parts: list[JSON]) -> None:
        self._inbox[item_id].reply = copy.deepcopy(parts)

    async def inbox_mark_sent(self, item_id: int, sent: int) -> None:
        self._inbox[item_id].sent = sent

    async def inbox_done(self, item_id: int) -> list[int]:
        self._inbox.pop(item_id, None)
        self._claims.pop(item_id, None)
        return []
