"""Tools from other packages: the ``chatlane.tools`` entry point group.

An entry point names a tool function (its signature and docstring become the
schema, as with ``@registry.tool``), a ``Tool``, or a whole ``ToolRegistry``::

    [project.entry-points."chatlane.tools"]
    weather = "my_package.tools:get_weather"
    my_kit = "my_package.tools:registry"

Plugin tools come after the built-ins and never replace one: a name already
taken is logged and skipped, as is an object that is none of the three.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.registry import load_entry_points
from bot.tools.builtin import builtin_tools
from bot.tools.registry import Tool, ToolRegistry, make_tool

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatlane.tools"


def default_tools(workspace: str | Path) -> ToolRegistry:
    """The built-in tools, then every installed plugin's."""
    registry = builtin_tools(workspace)
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
