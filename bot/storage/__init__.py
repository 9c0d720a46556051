"""Where transcripts, settings and shared state live: SQLite by default, Redis when configured."""

from bot.storage.base import Storage
from bot.storage.memory import MemoryStorage
from bot.storage.sqlite import SQLiteStorage

__all__ = ["MemoryStorage", "SQLiteStorage", "Storage"]
