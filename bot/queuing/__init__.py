"""Lanes: one turn at a time per chat, a global cap, and what to do with messages that wait."""

from bot.queuing.lane import Lane, LaneFull
from bot.queuing.mailbox import Mailbox, QueueMode, SubmitResult
from bot.queuing.queue import QueueManager, Slot

__all__ = ["Lane", "LaneFull", "Mailbox", "QueueManager", "QueueMode", "Slot", "SubmitResult"]
