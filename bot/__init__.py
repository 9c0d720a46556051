"""chatlane: one LLM-backed bot on many chat channels.

The public names load lazily, so importing one submodule does not import
every SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.compaction import CompactionStrategy
    from bot.events import AgentEvent, EventType
    from bot.formatting import FormatMode
    from bot.runtime import AgentRuntime
    from bot.thinking import ThinkingMode

_EXPORTS = {
    "AgentEvent": "bot.events",
    "AgentRuntime": "bot.runtime",
    "CompactionStrategy": "bot.compaction",
    "EventType": "bot.events",
    "FormatMode": "bot.formatting",
    "ThinkingMode": "bot.thinking",
}

__all__ = [
    "AgentEvent",
    "AgentRuntime",
    "CompactionStrategy",
    "EventType",
    "FormatMode",
    "ThinkingMode",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bot' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
