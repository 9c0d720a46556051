"""Tools the model may call: a registry, the ``@tool`` decorator and the built-ins."""

from bot.tools.builtin import Workspace, builtin_tools
from bot.tools.plugins import configured_tools, default_tools
from bot.tools.registry import Tool, ToolError, ToolRegistry, make_tool, tool
from bot.tools.result import ToolResult

__all__ = [
    "Tool",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "Workspace",
    "builtin_tools",
    "configured_tools",
    "default_tools",
    "make_tool",
    "tool",
]
