"""MCP servers' tools: a real server (tests/fakes/mcp_server.py, written with the ``mcp``
SDK) over stdio and over streamable HTTP, one that crashes mid-call, one that never
starts, one whose command does not exist."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, McpServerConfig, load_config
from bot.runtime import AgentRuntime
from bot.tools import ToolRegistry
from bot.tools.mcp import McpServers, expand, tool_name
from tests.fakes.models import FakeAnthropic, Reply
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
FAKE = {"command": sys.executable, "args": ["-m", "tests.fakes.mcp_server"], "cwd": str(ROOT)}


@pytest.fixture
async def http_server() -> AsyncIterator[dict[str, Any]]:
    """The fake MCP server's streamable HTTP app on 127.0.0.1, recording request headers."""
    import uvicorn

    from tests.fakes.mcp_server import app

    inner = app()
    seen: dict[str, Any] = {"headers": []}

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen["headers"].append({k.decode(): v.decode() for k, v in scope["headers"]})
        await inner(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(recording, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_for(lambda: server.started, "the MCP HTTP server to start")
    seen["url"] = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    try:
        yield seen
    finally:
        server.should_exit = True
        await task
        sock.close()


def test_names_and_variables() -> None:
    assert tool_name("files", "read.file") == "mcp__files__read_file"
    assert len(tool_name("s", "x" * 100)) == 64
    assert expand("Bearer ${TOKEN}", {"TOKEN": "t0k"}, "k") == "Bearer t0k"
    with pytest.raises(ValueError, match=r"mcp_servers.gh.headers.Authorization: .* GH_TOKEN"):
        expand("Bearer ${GH_TOKEN}", {}, "mcp_servers.gh.headers.Authorization")


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ({}, "give either command (a stdio server) or url"),
        ({"command": "x", "url": "http://h/mcp"}, "give either command"),
        ({"url": "http://h/mcp", "env": {"A": "b"}}, "args, env and cwd are for a command"),
        ({"command": "x", "headers": {"A": "b"}}, "headers are for a url server"),
        ({"command": "x", "timeout": 0}, "mcp_servers.s.timeout"),
    ],
)
def test_bad_server_config_names_the_key(server: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(data={"mcp_servers": {"s": server}})
    assert problem in str(caught.value) and "mcp_servers.s" in str(caught.value)


async def test_streamable_http_server_tools_with_headers_from_env(
    http_server: dict[str, Any],
) -> None:
    registry = ToolRegistry()
    config = McpServerConfig(
        url=http_server["url"], headers={"Authorization": "Bearer ${MCP_TEST_TOKEN}"}, timeout=0.5
    )
    servers = McpServers({"web": config}, registry, {"MCP_TEST_TOKEN": "tok-123"})
    await servers.start()
    try:
        server = servers.servers["web"]
        assert server.ready and server.state == "ready, 6 tool(s)"
        assert "mcp__web__echo" in registry and "mcp__web__dotted_name" in registry
        add = registry.get("mcp__web__add")
        assert add is not None and add.description == "Add two whole numbers."
        assert add.parameters["properties"]["a"]["type"] == "integer"
        assert "title" not in add.parameters
        assert (await registry.call("mcp__web__add", {"a": 2, "b": 40})).content == "42"
        echoed = await registry.call("mcp__web__echo", {"text": "hi"}, "c1")
        assert echoed.content == "echo: hi" and echoed.call_id == "c1" and not echoed.is_error
        failed = await registry.call("mcp__web__fail", {})
        assert failed.is_error
        invalid = await registry.call("mcp__web__add", {"a": "many"})
        assert invalid.is_error and "a" in invalid.content
        slow = await registry.call("mcp__web__slow", {"seconds": 5})
        assert slow.is_error and "took longer than 0.5 s" in slow.content
        assert all(h.get("authorization") == "Bearer tok-123" for h in http_server["headers"])
    finally:
        await servers.stop()
    assert "mcp__web__echo" not in registry


async def test_server_with_an_unset_variable_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    registry = ToolRegistry()
    config = McpServerConfig(url="http://127.0.0.1:9/mcp", headers={"X": "${NOT_SET_ANYWHERE}"})
    servers = McpServers({"gh": config}, registry, {})
    await servers.start()
    try:
        state = servers.servers["gh"].state
        assert state == "failed: mcp_servers.gh.headers.X: the variable NOT_SET_ANYWHERE is not set"
        assert "MCP server gh (http: http://127.0.0.1:9/mcp) is unavailable" in caplog.text
        assert len(registry) == 0
    finally:
        await servers.stop()


async def test_unreachable_http_server_is_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = ToolRegistry()
    config = McpServerConfig(url=f"http://127.0.0.1:{port}/mcp", start_timeout=2)
    servers = McpServers({"down": config}, registry, {}, backoff=(0.01,))
    await servers.start()
    try:
        server = servers.servers["down"]
        assert server.state.startswith("failed:") and not server.ready
        result = await server.call("echo", {})
        assert result.is_error and "not available right now" in result.content
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        await asyncio.sleep(0.2)  # a few more tries: logged once, not once per try
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == len(warnings)
    finally:
        await servers.stop()


@pytest.mark.slow
async def test_stdio_server_reaches_the_model_and_comes_back_after_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = load_config(
        data={
            "agent": {"workspace": str(tmp_path)},
            "mcp_servers": {
                "fake": {**FAKE, "timeout": 10},
                "never": {
                    "command": sys.executable,
                    "args": ["-c", "import time; time.sleep(30)"],
                    "start_timeout": 0.5,
                },
                "missing": {"command": str(tmp_path / "no-such-server")},
            },
        }
    )
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-mcp-1234")
        model.script(
            Reply(tool_calls=[("t1", "mcp__fake__add", {"a": 2, "b": 3})]),
            Reply(text="Five."),
            Reply(tool_calls=[("t2", "mcp__fake__crash", {})]),
            Reply(text="It crashed."),
        )
        runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config)
        try:
            await runtime.start()
            servers = runtime.mcp.servers
            assert servers["fake"].ready
            assert servers["missing"].state.startswith("failed: command not found")
            assert not servers["never"].ready
            assert await runtime.ask("s", "add 2 and 3") == "Five."
            assert await runtime.ask("s", "crash it") == "It crashed."
            await wait_for(lambda: servers["fake"].starts == 2, "the crashed server to restart")
            echoed = await runtime.tools.call("mcp__fake__echo", {"text": "back"})
            assert echoed.content == "echo: back"
        finally:
            await runtime.close()
    offered = [t["name"] for t in model.requests[0].json["tools"]]
    assert offered[:3] == ["read_file", "list_files", "current_time"]
    assert "mcp__fake__echo" in offered and not any("never" in n for n in offered)
    added = model.requests[1].json["messages"][-1]["content"][0]
    assert added["tool_use_id"] == "t1" and not added.get("is_error")
    assert added["content"] in ("5", [{"type": "text", "text": "5"}])
    crashed = json.dumps(model.requests[3].json["messages"][-1]["content"])
    assert "stopped during the call; it is being restarted" in crashed


@pytest.mark.slow
async def test_stop_ends_a_server_still_connecting() -> None:
    """A server stopped while its first try is under way is stopped, not waited for."""
    registry = ToolRegistry()
    config = McpServerConfig(
        command=sys.executable, args=["-c", "import time; time.sleep(30)"], start_timeout=20
    )
    servers = McpServers({"slowstart": config}, registry, {})
    servers.servers["slowstart"].start()
    await asyncio.sleep(0.1)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(servers.stop(), 10)
    assert servers.servers["slowstart"].state == "stopped"


async def test_check_lists_each_server_and_its_tools(
    http_server: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.check import run_check

    config = load_config(
        data={
            "agent": {"workspace": str(tmp_path)},
            "mcp_servers": {
                "web": {"url": http_server["url"]},
                "gone": {"command": str(tmp_path / "no-such-server")},
            },
        }
    )
    await run_check(config, {"CHATLANE_DATA_DIR": str(tmp_path)})
    out = capsys.readouterr().out
    section = out[out.index("MCP servers:") :]
    assert f"  web (http: {http_server['url']}): ready, 6 tool(s)" in section
    assert "    tools: mcp__web__echo, mcp__web__add, mcp__web__crash" in section
    assert f"  gone (stdio: {tmp_path / 'no-such-server'}): failed: command not found" in section
