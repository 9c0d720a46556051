"""Tools from other packages: the ``chatlane.tools`` entry point group.

An entry point names a tool function (its signature and docstring become the
schema, as with ``@registry.tool``), a ``Tool``, or a whole ``ToolRegistry``::

    [project.entry-points."chatlane.tools"]
    weather = "my_package.tools:get_weather"
    my_kit = "my_package.tools:registry"

Plugin tools come after the built-ins and never replace one: a name already
taken is logged and skipped, as is an object that is none of the three.

The config's ``tools:`` list comes last: ``"module:function"`` import strings
(a function, a ``Tool`` or a ``ToolRegistry``, as above), or mappings
``{function, name, timeout}``. The person asked for each of these by name,
so one that cannot be imported, is no tool, or takes a name already used
stops the start with a ``ConfigError`` naming the entry and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.config import Config, ConfigError, ToolEntry
from bot.registry import load_entry_points
from bot.tools.builtin import builtin_tools
from bot.tools.registry import DEFAULT_TIMEOUT, Tool, ToolRegistry, make_tool

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatlane.tools"


def default_tools(
    workspace: str | Path, *, timeout: float | None = DEFAULT_TIMEOUT
) -> ToolRegistry:
    """The built-in tools, then every installed plugin's."""
    registry = builtin_tools(workspace)
    registry.timeout = timeout
    for plugin, loaded in load_entry_points(ENTRY_POINT_GROUP).items():
        for tool in _tools_of(plugin, loaded):
            if tool.name in registry:
                log.warning("tool plugin %s: a tool %r exists already; skipped", plugin, tool.name)
                continue
            registry.add(tool)
    return registry


def _tools_of(plugin: str, loaded: Any) -> Iterator[Tool]:
    if isinstance(loaded, Tool):
        yield loaded
    elif isinstance(loaded, ToolRegistry):
        yield from loaded
    elif callable(loaded):
        try:
            yield make_tool(loaded)
        except Exception:  # a signature the schema builder cannot read
            log.exception("tool plugin %s: %r is not a usable tool; skipped", plugin, loaded)
    else:
        log.warning("tool plugin %s: %r is not a tool, function or registry", plugin, loaded)


def configured_tools(config: Config) -> ToolRegistry:
    """The built-ins, the plugins, then the config's ``tools:`` (``tools_timeout`` the default)."""
    registry = default_tools(config.agent.workspace, timeout=config.tools_timeout)
    for index, entry in enumerate(config.tools):
        spec = entry if isinstance(entry, ToolEntry) else ToolEntry(function=entry)
        key = f"tools.{index} ({spec.function})"
        loaded = import_object(spec.function, key)
        if isinstance(loaded, Tool | ToolRegistry):
            found = [loaded] if isinstance(loaded, Tool) else list(loaded)
        elif callable(loaded):
            try:
                found = [make_tool(loaded, name=spec.name, timeout=spec.timeout)]
            except TypeError as exc:
                raise ConfigError(
                    f"{key}: its signature cannot be made a tool ({exc}); "
                    "give every parameter a type pydantic understands"
                ) from None
        else:
            raise ConfigError(f"{key}: {loaded!r} is not a function, Tool or ToolRegistry")
        for tool in found:
            if tool.name in registry:
                raise ConfigError(
                    f"{key}: a tool named {tool.name!r} exists already; give this one "
                    "another name (name: in the entry, or @tool(name=...))"
                )
            registry.add(tool)
    return registry


def import_object(target: str, key: str) -> Any:
    """``module`` or ``module:attribute.path`` imported; ``ConfigError`` naming ``key`` if not."""
    import importlib

    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{key}: module {module_name!r} cannot be imported ({exc.msg}); install it or "
            "put its folder on PYTHONPATH"
        ) from None
    except Exception as exc:
        log.exception("%s: importing %s raised", key, module_name)
        raise ConfigError(
            f"{key}: importing {module_name!r} raised {type(exc).__name__}; see the log above"
        ) from None
    for part in filter(None, attribute.split(".")):
        if not hasattr(found, part):
            raise ConfigError(f"{key}: {module_name!r} has no {attribute!r}; check the name")
        found = getattr(found, part)
    return found
