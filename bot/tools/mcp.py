"""MCP servers' tools, through the official ``mcp`` SDK: stdio and streamable HTTP.

``McpServers(config.mcp_servers, registry, env)`` owns one supervisor task per
server. Each connects (a command started over stdio, or a URL), lists the
server's tools and adds them to the registry as ``mcp__<server>__<tool>``,
then keeps the connection: a ping every ``ping_every`` seconds, and a call that
finds the connection closed, tell it the server died; it reconnects with
backoff (1 s, 2 s, 5 s ... up to a minute) and lists the tools again. A server
that fails to start is logged with its reason and skipped: the bot runs
without its tools (a call says the server is unavailable) while the supervisor
keeps trying. Every call is bounded by the server's ``timeout``.

``${VAR}`` in a server's ``args``, ``env``, ``url`` and ``headers`` is taken
from the environment, so tokens never sit in the config file. A stdio server
gets only the SDK's safe variables (PATH, HOME, ...) and its own ``env``.
The SDK is imported only when a server is configured (it takes a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from bot.config import McpServerConfig
from bot.tools.registry import Tool, ToolRegistry
from bot.tools.result import ToolResult

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
PING_EVERY = 30.0
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class McpConfigError(ValueError):
    """A server's settings cannot be used as they are (a variable is not set)."""


def tool_name(server: str, tool: str) -> str:
    """``mcp__<server>__<tool>``, in the characters model APIs accept, at most 64 of them."""
    return f"mcp__{server}__{re.sub(r'[^A-Za-z0-9_-]', '_', tool)}"[:64]


def expand(value: str, env: Mapping[str, str], key: str) -> str:
    """``${VAR}`` replaced by the variable's value; ``McpConfigError`` naming ``key`` if unset."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise McpConfigError(f"{key}: the variable {name} is not set")
        return env[name]

    return _VAR.sub(one, value)


class McpServer:
    """One configured server: its connection, its tools, and what state it is in."""

    def __init__(
        self,
        name: str,
        config: McpServerConfig,
        registry: ToolRegistry,
        env: Mapping[str, str],
        *,
        backoff: Sequence[float] = BACKOFF,
        ping_every: float = PING_EVERY,
    ) -> None:
        self.name = name
        self.config = config
        self.registry = registry
        self.env = env
        self.backoff = tuple(backoff)
        self.ping_every = ping_every
        self.state = "not started"
        self.error: str | None = None  # why the last attempt failed
        self.tools: dict[str, str] = {}  # exposed name -> the server's own name
        self.starts = 0  # connections made (a restart adds one)
        self._session: Any = None
        self._dead = asyncio.Event()  # a call found the connection closed, or stop() was asked
        self._stopping = asyncio.Event()
        self._attempted = asyncio.Event()  # the first attempt has succeeded or failed
        self._task: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def ready(self) -> bool:
        return self._session is not None

    def describe(self) -> str:
        if self.config.command is not None:
            return f"stdio: {self.config.command}"
        return f"http: {self.config.url}"

    def start(self) -> None:
        if self._task is None:
            self.state = "starting"
            self._stopping.clear()
            self._attempted.clear()
            self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.name}")

    async def wait_started(self, seconds: float) -> bool:
        """Wait until the first attempt has succeeded or failed; True when ready."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), seconds)
        return self.ready

    async def stop(self, grace: float = 5.0) -> None:
        """Close the connection (a stdio server's process is ended), within ``grace`` seconds."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            if self._scope is not None:
                self._scope.cancel()  # anyio's cancel: the SDK's shielded clean-up still runs
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._forget_tools()
        self.state = "stopped"

    async def _supervise(self) -> None:
        with anyio.CancelScope() as self._scope:
            await self._keep_up()

    async def _keep_up(self) -> None:
        failures = 0
        while True:
            before = self.starts
            try:
                await self._serve()
            except McpConfigError as exc:
                self._failed(str(exc))
                self._attempted.set()
                return  # the environment will not change while the process runs
            except Exception as exc:
                if self.starts == before:
                    self._failed(_reason(exc))
            self._session = None
            self._attempted.set()
            if self._stopping.is_set():
                return
            if self.starts > before:  # it was up, then died
                failures = 0
                log.warning("MCP server %s stopped; restarting it", self.name)
                self.state = "restarting"
            await anyio.sleep(self.backoff[min(failures, len(self.backoff) - 1)])
            failures += 1

    def _failed(self, reason: str) -> None:
        level = logging.WARNING if self.error != reason else logging.DEBUG
        log.log(level, "MCP server %s (%s) is unavailable: %s", self.name, self.describe(), reason)
        self.error = reason
        self.state = f"failed: {reason}"

    async def _serve(self) -> None:
        """Connect, list the tools, then hold the connection until it dies."""
        from mcp import ClientSession

        async with AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            session = await stack.enter_async_context(ClientSession(read, write))
            # anyio's scopes, not asyncio's: the SDK's shielded clean-up (stopping the
            # process) survives them, and it does not survive a native task.cancel().
            with anyio.fail_after(self.config.start_timeout):
                await session.initialize()
                listed = await _list_tools(session)
            self._dead.clear()
            self._add_tools(listed)
            self._session, self.error = session, None
            self.starts += 1
            self.state = f"ready, {len(self.tools)} tool(s)"
            self._attempted.set()
            log.info("MCP server %s ready with tools: %s", self.name, ", ".join(self.tools))
            try:
                await self._watch(session)
            finally:
                self._session = None

    async def _watch(self, session: Any) -> None:
        """Until the server dies (a ping or a call finds it gone) or ``stop`` is asked."""
        while not self._stopping.is_set():
            with anyio.move_on_after(self.ping_every):
                await self._dead.wait()
            if self._dead.is_set():
                return
            try:
                with anyio.fail_after(self.config.timeout):
                    await session.send_ping()
            except Exception:
                return

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        config, key = self.config, f"mcp_servers.{self.name}"
        if config.command is not None:
            from mcp import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=config.command,
                args=[expand(a, self.env, f"{key}.args") for a in config.args],
                env={k: expand(v, self.env, f"{key}.env.{k}") for k, v in config.env.items()},
                cwd=config.cwd,
            )
            async with stdio_client(params, errlog=_errlog()) as streams:
                yield streams
            return
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        assert config.url is not None
        url = expand(config.url, self.env, f"{key}.url")
        headers = {k: expand(v, self.env, f"{key}.headers.{k}") for k, v in config.headers.items()}
        async with (
            create_mcp_http_client(headers=headers) as client,
            streamable_http_client(url, http_client=client) as streams,
        ):
            yield streams

    def _add_tools(self, listed: list[Any]) -> None:
        self._forget_tools()
        for item in listed:
            exposed = tool_name(self.name, item.name)
            if exposed in self.registry:
                log.warning("MCP server %s: a tool %r exists already; skipped", self.name, exposed)
                continue
            schema = dict(item.input_schema or {})
            schema.pop("title", None)
            schema.setdefault("type", "object")
            schema.setdefault("properties", {})
            self.tools[exposed] = item.name
            self.registry.add(
                Tool(
                    exposed,
                    item.description or item.name,
                    schema,
                    _Caller(self, item.name),
                    timeout=self.config.timeout,
                    raw=True,
                )
            )

    def _forget_tools(self) -> None:
        for exposed in self.tools:
            self.registry.remove(exposed)
        self.tools = {}

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolResult:
        """The server's answer as a result; a server that is down or dies is an error result."""
        session = self._session
        exposed = tool_name(self.name, tool)
        if session is None:
            return _error(
                exposed, arguments, f"The MCP server {self.name} is not available right now."
            )
        from mcp import MCPError

        try:
            result = await session.call_tool(
                tool, arguments, read_timeout_seconds=self.config.timeout + 5
            )
        except MCPError as exc:
            if "closed" in str(exc).lower():
                self._dead.set()
                log.warning("MCP server %s: the connection closed during %s", self.name, tool)
                return _error(
                    exposed,
                    arguments,
                    f"The MCP server {self.name} stopped during the call; it is being restarted.",
                )
            return _error(exposed, arguments, f"The MCP server {self.name} refused: {exc}")
        return ToolResult(exposed, _text_of(result), arguments, is_error=bool(result.is_error))


class _Caller:
    """A raw tool function bound to one server and one of its tools."""

    def __init__(self, server: McpServer, tool: str) -> None:
        self.server, self.tool = server, tool

    async def __call__(self, arguments: dict[str, Any]) -> ToolResult:
        return await self.server.call(self.tool, arguments)


class McpServers:
    """Every configured server, started with the runtime and stopped with it."""

    def __init__(
        self,
        configs: Mapping[str, McpServerConfig],
        registry: ToolRegistry,
        env: Mapping[str, str],
        **options: Any,
    ) -> None:
        self.servers = {
            name: McpServer(name, config, registry, env, **options)
            for name, config in configs.items()
            if config.enabled
        }

    async def start(self) -> None:
        """Start every server and wait (each within its ``start_timeout``) for its first try."""
        for server in self.servers.values():
            server.start()
        await asyncio.gather(
            *(s.wait_started(s.config.start_timeout + 1) for s in self.servers.values())
        )

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers.values()))


async def _list_tools(session: Any) -> list[Any]:
    found: list[Any] = []
    cursor: str | None = None
    while True:
        from mcp.types import PaginatedRequestParams

        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        found.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return found


def _text_of(result: Any) -> str:
    parts: list[str] = []
    for block in result.content or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        elif kind == "resource_link":
            parts.append(f"[resource: {block.uri}]")
        else:
            parts.append(f"[{kind or 'content'}: {getattr(block, 'mime_type', '')}]".strip())
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, indent=2))
    return "\n".join(parts)


def _errlog() -> Any:
    """Where a stdio server's stderr goes: ours, or the process's own when ours is no file."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__
    return sys.stderr


def _error(name: str, arguments: dict[str, Any], message: str) -> ToolResult:
    return ToolResult(name, message, arguments, is_error=True)


def _reason(exc: BaseException) -> str:
    """One line on why a connection failed (an exception group: its first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "it did not answer in time (start_timeout)"
    if isinstance(exc, FileNotFoundError):
        return f"command not found ({exc.filename or exc})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__
