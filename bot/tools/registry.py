"""Tools: a registry, and the ``@tool`` decorator that turns a typed function into a tool.

::

    @tool(timeout=10)
    def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        \"\"\"Current weather for a city.

        Args:
            city: The city's name, in English.
        \"\"\"
        ...

    registry = ToolRegistry([make_tool(get_weather)])

The JSON schema and the validation of the model's arguments come from the
signature through pydantic (``bot.tools.schema``); the description from the
docstring's first paragraph. Sync functions run in a thread; async ones are
awaited. Arguments that do not fit, a tool that raises, one that runs past
its timeout: each is an error result for the model, never the end of the
turn. An exception's own text stays in the log (it may hold a path or a
secret); the model is told which kind of failure it was. ``ToolError``'s
message is meant for the model and passed on as it is.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.providers.base import ToolSpec
from bot.tools.result import ToolResult
from bot.tools.schema import ArgumentsError, Signature, description_of

log = logging.getLogger(__name__)

ToolFunc = Callable[..., Any]
MAX_RESULT_CHARS = 50_000  # what one result may put into the model's context
DEFAULT_TIMEOUT = 60.0
_OPTIONS = "__chatlane_tool__"


class ToolError(Exception):
    """Raise from a tool to return a plain error message to the model."""


@dataclass(frozen=True, slots=True)
class ToolOptions:
    name: str | None = None
    timeout: float | None = None
    description: str | None = None


def tool(
    func: ToolFunc | None = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    description: str | None = None,
) -> Any:
    """``@tool`` or ``@tool(name=..., timeout=..., description=...)``: mark a function as a
    tool with these options. The function is returned as it is (still callable)."""

    def mark(f: ToolFunc) -> ToolFunc:
        setattr(f, _OPTIONS, ToolOptions(name, timeout, description))
        return f

    return mark(func) if func is not None else mark


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call. ``raw``: ``func`` takes the arguments dict as it
    came (an MCP server validates its own); otherwise ``signature`` validates them."""

    name: str
    description: str
    parameters: dict[str, Any]
    func: ToolFunc
    timeout: float | None = None  # None: the registry's
    signature: Signature | None = None
    raw: bool = False

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    async def call(
        self,
        arguments: dict[str, Any],
        call_id: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the registry's default, for wait_for)
        max_chars: int = MAX_RESULT_CHARS,
    ) -> ToolResult:
        """Validate, run within the timeout, cap the result; every failure is an error result."""

        def failed(message: str) -> ToolResult:
            return ToolResult(self.name, message, arguments, is_error=True, call_id=call_id)

        try:
            kwargs = self._arguments(arguments)
        except ArgumentsError as exc:
            return failed(f"Invalid arguments for {self.name}: {exc}. Fix them and call again.")
        limit = self.timeout if self.timeout is not None else timeout
        try:
            value = await asyncio.wait_for(self._run(arguments, kwargs), limit)
        except ToolError as exc:
            return failed(str(exc))
        except TimeoutError:
            log.warning("tool %s timed out after %ss", self.name, limit)
            return failed(f"The tool {self.name} took longer than {limit:g} s and was stopped.")
        except Exception as exc:
            log.warning("tool %s raised %s", self.name, type(exc).__name__, exc_info=True)
            return failed(
                f"The tool {self.name} failed ({type(exc).__name__}); "
                "the details are in the bot's log."
            )
        if isinstance(value, ToolResult):
            return replace(
                value,
                name=value.name or self.name,
                content=_capped(value.content, max_chars),
                arguments=value.arguments or arguments,
                call_id=call_id,
            )
        return ToolResult(
            self.name, _capped(_to_text(value), max_chars), arguments, call_id=call_id
        )

    def _arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.raw:
            return arguments
        if not isinstance(arguments, dict):
            raise ArgumentsError("the arguments must be a JSON object")
        if self.signature is None:
            return arguments
        return self.signature.validate(arguments)

    async def _run(self, arguments: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        if self.raw:
            return await self.func(arguments)
        if inspect.iscoroutinefunction(self.func):
            return await self.func(**kwargs)
        # A sync tool runs in a thread; past its timeout the thread is abandoned, not killed.
        return await asyncio.to_thread(self.func, **kwargs)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if hasattr(value, "model_dump_json"):  # a pydantic model
        return str(value.model_dump_json(indent=2))
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return str(value)


def _capped(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        text[:limit] + f"\n[truncated: the result had {len(text)} characters; "
        f"only the first {limit} are shown]"
    )


def permitted(name: str, allowed: Sequence[str] | None, disabled: Sequence[str] = ()) -> bool:
    """Whether ``allowed_tools`` / ``disabled_tools`` (glob patterns) let ``name`` in."""
    if allowed is not None and not any(fnmatch.fnmatchcase(name, p) for p in allowed):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in disabled)


class ToolRegistry:
    """The tools by name. ``timeout``: the default for a tool without its own
    (None: no limit); ``max_result_chars``: the cap on what a result gives the model."""

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_result_chars: int = MAX_RESULT_CHARS,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        # built once per change of tools and per channel filter (providers cache by identity)
        self._specs: dict[tuple[Any, ...], tuple[ToolSpec, ...]] = {}
        self.timeout = timeout
        self.max_result_chars = max_result_chars
        for item in tools:
            self.add(item)

    def add(self, tool: Tool) -> Tool:
        self._tools[tool.name] = tool
        self._specs = {}
        return tool

    def remove(self, name: str) -> None:
        if self._tools.pop(name, None) is not None:
            self._specs = {}

    def tool(
        self, func: ToolFunc | None = None, *, name: str | None = None, timeout: float | None = None
    ) -> Any:
        """Decorator: ``@registry.tool`` or ``@registry.tool(name="...", timeout=...)``."""

        def register(f: ToolFunc) -> ToolFunc:
            self.add(make_tool(f, name=name, timeout=timeout))
            return f

        return register(func) if func is not None else register

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def specs(
        self, allowed: Sequence[str] | None = None, disabled: Sequence[str] = ()
    ) -> tuple[ToolSpec, ...]:
        """The same tuple every turn until a tool is added or removed; only the tools a
        channel's ``allowed`` / ``disabled`` patterns let in."""
        key = (None if allowed is None else tuple(allowed), tuple(disabled))
        found = self._specs.get(key)
        if found is None:
            found = tuple(
                t.spec for t in self._tools.values() if permitted(t.name, allowed, disabled)
            )
            self._specs[key] = found
        return found

    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    async def call(self, name: str, arguments: dict[str, Any], call_id: str = "") -> ToolResult:
        found = self._tools.get(name)
        if found is None:
            return ToolResult(
                name,
                f"Unknown tool {name!r}. Available tools: {', '.join(self._tools) or 'none'}.",
                arguments,
                is_error=True,
                call_id=call_id,
            )
        return await found.call(
            arguments, call_id, timeout=self.timeout, max_chars=self.max_result_chars
        )


def make_tool(
    func: ToolFunc,
    *,
    name: str | None = None,
    timeout: float | None = None,
    description: str | None = None,
) -> Tool:
    """A ``Tool`` from a typed function; ``@tool(...)`` options apply where these are not given.
    Raises ``TypeError`` for a signature pydantic cannot read."""
    options = getattr(func, _OPTIONS, None) or ToolOptions()
    try:
        signature = Signature(func)
        parameters = signature.json_schema()
    except Exception as exc:  # pydantic's schema errors
        raise TypeError(f"{getattr(func, '__name__', func)!r}: {exc}") from exc
    return Tool(
        name or options.name or func.__name__,
        description or options.description or description_of(func) or func.__name__,
        parameters,
        func,
        timeout=timeout if timeout is not None else options.timeout,
        signature=signature,
    )


ToolHandler = Callable[[dict[str, Any]], Awaitable[ToolResult]]
