"""Hooks: your code around each turn and each tool call.

A hook is any object (a module, a class, an instance) with one or more of
these methods, sync or async::

    def before_turn(turn: TurnStart) -> AddContext | Refuse | None
    def after_turn(turn: TurnEnd) -> None
    def before_tool(call: ToolUse) -> Refuse | None
    def after_tool(call: ToolUse, result: ToolResult) -> None

``before_turn`` may add context for this turn (appended to the system
prompt, not stored) or refuse the turn with a message the person gets
instead of a model call. ``before_tool`` may refuse a call: the model gets
the message as the tool's error. Hooks come from the ``hooks:`` import
strings (``"module"`` or ``"module:object"``; a class is instantiated with no
arguments) and the ``chatlane.hooks`` entry points, and run in that order.

A hook that raises or runs past ``timeout`` seconds is logged and passed
over: the turn goes on as if it had returned None. Only a returned ``Refuse``
stops anything. Sync hooks run in a thread so they never block the bot.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.config import Config
from bot.events import Usage
from bot.registry import load_entry_points
from bot.tools.plugins import import_object
from bot.tools.result import ToolResult

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatlane.hooks"
HOOK_TIMEOUT = 10.0
METHODS = ("before_turn", "after_turn", "before_tool", "after_tool")


@dataclass(frozen=True, slots=True)
class TurnStart:
    session_id: str
    channel: str | None  # None: the Python API without a channel
    text: str  # the person's message


@dataclass(frozen=True, slots=True)
class TurnEnd:
    session_id: str
    channel: str | None
    text: str
    reply: str  # the answer as the person got it ("" when the turn failed)
    model: str | None = None
    usage: Usage | None = None
    error: str | None = None  # the failure's reason (rate_limit, ...), when it failed
    refused: bool = False  # a before_turn hook refused it


@dataclass(frozen=True, slots=True)
class ToolUse:
    session_id: str
    channel: str | None
    name: str
    arguments: Mapping[str, Any]
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Returned by ``before_turn`` or ``before_tool``: do not go on; say this instead."""

    message: str


@dataclass(frozen=True, slots=True)
class AddContext:
    """Returned by ``before_turn``: text the model sees with the system prompt, this turn only."""

    text: str


@dataclass
class Hooks:
    """The hooks of a process, in order; each call bounded by ``timeout`` seconds."""

    hooks: list[Any] = field(default_factory=list)
    timeout: float = HOOK_TIMEOUT

    def __bool__(self) -> bool:
        return bool(self.hooks)

    async def before_turn(self, turn: TurnStart) -> tuple[list[str], Refuse | None]:
        """Contexts to add, or the first refusal (later hooks are not asked)."""
        contexts: list[str] = []
        for hook in self.hooks:
            answer = await self._call(hook, "before_turn", turn)
            if isinstance(answer, Refuse):
                log.info("turn refused by hook %s session=%s", _name(hook), turn.session_id)
                return contexts, answer
            if isinstance(answer, AddContext) and answer.text:
                contexts.append(answer.text)
        return contexts, None

    async def after_turn(self, turn: TurnEnd) -> None:
        for hook in self.hooks:
            await self._call(hook, "after_turn", turn)

    async def before_tool(self, call: ToolUse) -> Refuse | None:
        for hook in self.hooks:
            answer = await self._call(hook, "before_tool", call)
            if isinstance(answer, Refuse):
                log.info("tool %s refused by hook %s", call.name, _name(hook))
                return answer
        return None

    async def after_tool(self, call: ToolUse, result: ToolResult) -> None:
        for hook in self.hooks:
            await self._call(hook, "after_tool", call, result)

    async def _call(self, hook: Any, method: str, *args: Any) -> Any:
        func = getattr(hook, method, None)
        if func is None or not callable(func):
            return None
        try:
            if inspect.iscoroutinefunction(func):
                return await asyncio.wait_for(func(*args), self.timeout)
            return await asyncio.wait_for(asyncio.to_thread(func, *args), self.timeout)
        except TimeoutError:
            log.warning("hook %s.%s took over %gs; passed over", _name(hook), method, self.timeout)
        except Exception:
            log.exception("hook %s.%s failed; passed over", _name(hook), method)
        return None


def load_hooks(config: Config, *, extra: Iterable[Any] = ()) -> Hooks:
    """The ``hooks:`` import strings (a ``ConfigError`` for one that cannot be imported), then
    the ``chatlane.hooks`` entry points, then ``extra``."""
    found: list[Any] = []
    for index, target in enumerate(config.hooks):
        found.append(_usable(import_object(target, f"hooks.{index} ({target})")))
    for name, loaded in load_entry_points(ENTRY_POINT_GROUP).items():
        try:
            found.append(_usable(loaded))
        except Exception:
            log.exception("hook plugin %s could not be set up; skipped", name)
    found.extend(extra)
    for hook in found:
        if not any(callable(getattr(hook, m, None)) for m in METHODS):
            log.warning("hook %s has none of %s; it does nothing", _name(hook), ", ".join(METHODS))
    return Hooks(found)


def _usable(loaded: Any) -> Any:
    return loaded() if inspect.isclass(loaded) else loaded


def _name(hook: Any) -> str:
    return str(getattr(hook, "__name__", None) or type(hook).__name__)


__all__ = [
    "AddContext",
    "Hooks",
    "Refuse",
    "ToolUse",
    "TurnEnd",
    "TurnStart",
    "load_hooks",
]
