"""Where transcripts, settings, the inbox and shared state live: SQLite by default, Redis
when configured, or any backend installed under the ``chatlane.storage`` entry points."""

from bot.storage.base import (
    ConversationStore,
    Inbox,
    InboxClaims,
    KeyValue,
    Lifecycle,
    SettingsStore,
    Storage,
    TranscriptStore,
)
from bot.storage.memory import MemoryStorage
from bot.storage.sqlite import SQLiteStorage

__all__ = [
    "ConversationStore",
    "Inbox",
    "InboxClaims",
    "KeyValue",
    "Lifecycle",
    "MemoryStorage",
    "SQLiteStorage",
    "SettingsStore",
    "Storage",
    "TranscriptStore",
]
