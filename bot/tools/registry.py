"""Tools: a registry and a decorator that turns a typed function into a tool.

::

    registry = ToolRegistry()

    @registry.tool
    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        \"\"\"Current weather for a city.\"\"\"
        ...

The JSON schema comes from the signature (str, int, float, bool, lists,
``Literal``, ``Optional``); the description from the docstring's first
paragraph. Sync functions run in a thread; async ones are awaited. A tool
that raises returns an error result to the model; it never ends the turn.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from bot.providers.base import ToolSpec
from bot.tools.result import ToolResult

log = logging.getLogger(__name__)

ToolFunc = Callable[..., Any]


class ToolError(Exception):
    """Raise from a tool to return a plain error message to the model."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    func: ToolFunc

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    async def call(self, arguments: dict[str, Any], call_id: str = "") -> ToolResult:
        try:
            bound = inspect.signature(self.func).bind(**arguments)
        except TypeError as exc:
            return ToolResult(
                self.name, f"Invalid arguments: {exc}", arguments, is_error=True, call_id=call_id
            )
        try:
            if inspect.iscoroutinefunction(self.func):
                value = await self.func(*bound.args, **bound.kwargs)
            else:
                value = await asyncio.to_thread(self.func, *bound.args, **bound.kwargs)
        except ToolError as exc:
            return ToolResult(self.name, str(exc), arguments, is_error=True, call_id=call_id)
        except Exception as exc:
            log.warning("tool %s raised %s", self.name, type(exc).__name__, exc_info=True)
            return ToolResult(
                self.name,
                f"The tool failed: {type(exc).__name__}: {exc}",
                arguments,
                is_error=True,
                call_id=call_id,
            )
        if isinstance(value, ToolResult):
            return ToolResult(
                value.name or self.name,
                value.content,
                value.arguments or arguments,
                value.is_error,
                value.details,
                call_id,
            )
        return ToolResult(self.name, _to_text(value), arguments, call_id=call_id)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return str(value)


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._specs: tuple[ToolSpec, ...] | None = None  # built once per change of tools
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> Tool:
        self._tools[tool.name] = tool
        self._specs = None
        return tool

    def tool(self, func: ToolFunc | None = None, *, name: str | None = None) -> Any:
        """Decorator: ``@registry.tool`` or ``@registry.tool(name="...")``."""

        def register(f: ToolFunc) -> ToolFunc:
            self.add(make_tool(f, name=name))
            return f

        return register(func) if func is not None else register

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(self) -> tuple[ToolSpec, ...]:
        """The same tuple every turn until a tool is added (providers cache by it)."""
        if self._specs is None:
            self._specs = tuple(tool.spec for tool in self._tools.values())
        return self._specs

    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    async def call(self, name: str, arguments: dict[str, Any], call_id: str = "") -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(
                name,
                f"Unknown tool {name!r}. Available tools: {', '.join(self._tools) or 'none'}.",
                arguments,
                is_error=True,
                call_id=call_id,
            )
        return await tool.call(arguments, call_id)


def make_tool(func: ToolFunc, *, name: str | None = None) -> Tool:
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = _schema_for(hints.get(param.name, str))
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif param.default is not None:
            schema["default"] = param.default
        properties[param.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    doc = inspect.getdoc(func) or ""
    description = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    return Tool(name or func.__name__, description or func.__name__, parameters, func)


_SIMPLE: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema_for(hint: Any) -> dict[str, Any]:
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _schema_for(options[0])
        return {"anyOf": [_schema_for(a) for a in options]}
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        item = _schema_for(args[0]) if args else {}
        return {"type": "array", "items": item}
    if origin is dict or hint is dict:
        return {"type": "object"}
    return {"type": "string"}


ToolHandler = Callable[[dict[str, Any]], Awaitable[ToolResult]]
