"""A real MCP server written with the official SDK (``mcp.server.MCPServer``), for the tests.

Run ``python -m tests.fakes.mcp_server`` to serve it over stdio; ``app()`` is its
streamable HTTP app. Tools: ``echo``, ``add`` (typed, validated by the SDK), ``crash``
(the process exits mid-call), ``slow`` (sleeps), ``fail`` (an error result).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from mcp.server import MCPServer

server = MCPServer("fake-tools")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int = 1) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
def crash() -> str:
    """End the server's process in the middle of the call."""
    sys.stdout.flush()
    os._exit(3)


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("the fake tool failed on purpose")


@server.tool(name="dotted.name")
def dotted() -> str:
    """A tool whose name needs cleaning for model APIs."""
    return "dotted"


def app() -> Any:
    """The streamable HTTP app (a Starlette app), served at ``/mcp``."""
    return server.streamable_http_app(json_response=False)


if __name__ == "__main__":
    server.run("stdio")
