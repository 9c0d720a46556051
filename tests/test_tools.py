"""Tools: schema from type hints, errors as results, workspace confinement, plugins."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from bot.tools import ToolError, ToolRegistry, builtin_tools, default_tools
from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.plugins import installed


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "config.py").write_text("DEBUG = True\n")
    (root / "docs" / "a.md").write_text("# A\n")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    return root


def test_decorator_builds_schema_from_hints() -> None:
    registry = ToolRegistry()

    @registry.tool
    def get_weather(
        city: str, days: int = 1, unit: Literal["C", "F"] = "C", tags: list[str] | None = None
    ) -> str:
        """Weather for a city.

        More words that are not part of the description."""
        return f"{city} {days} {unit}"

    spec = registry.get("get_weather").spec  # type: ignore[union-attr]
    assert spec.description == "Weather for a city."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "default": 1},
            "unit": {"enum": ["C", "F"], "default": "C"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city"],
    }


async def test_raising_tool_returns_error_result() -> None:
    registry = ToolRegistry()

    @registry.tool(name="boom")
    async def explode(x: int) -> str:
        raise RuntimeError("kaput")

    result = await registry.call("boom", {"x": 1}, "c1")
    assert result.is_error and "kaput" in result.content and result.call_id == "c1"
    bad_args = await registry.call("boom", {"y": 1})
    assert bad_args.is_error and "Invalid arguments" in bad_args.content
    unknown = await registry.call("nope", {})
    assert unknown.is_error and "boom" in unknown.content


async def test_tool_error_message_is_passed_through() -> None:
    registry = ToolRegistry()

    @registry.tool
    def picky(x: str) -> str:
        raise ToolError("x must be shorter")

    result = await registry.call("picky", {"x": "long"})
    assert result.is_error and result.content == "x must be shorter"


async def test_read_and_list_inside_workspace(workspace: Path) -> None:
    tools = builtin_tools(workspace)
    read = await tools.call("read_file", {"path": "config.py"})
    assert not read.is_error and read.content == "DEBUG = True\n"
    assert read.details["path"] == "config.py"
    listing = await tools.call("list_files", {})
    assert listing.content.splitlines() == ["config.py", "docs/"]
    nested = await tools.call("list_files", {"path": "docs"})
    assert nested.details["entries"] == ["a.md"]


@pytest.mark.parametrize("path", ["../secret.txt", "docs/../../secret.txt", "/etc/passwd", ".."])
async def test_escapes_are_refused(workspace: Path, path: str) -> None:
    tools = builtin_tools(workspace)
    result = await tools.call("read_file", {"path": path})
    assert result.is_error
    assert "TOP SECRET" not in result.content and "root:" not in result.content


async def test_symlink_out_of_workspace_is_refused(workspace: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", workspace / "link.txt")
    os.symlink(tmp_path, workspace / "outside")
    tools = builtin_tools(workspace)
    result = await tools.call("read_file", {"path": "link.txt"})
    assert result.is_error and "outside" in result.content
    through_dir = await tools.call("read_file", {"path": "outside/secret.txt"})
    assert through_dir.is_error
    listing = await tools.call("list_files", {})
    assert "link.txt" not in listing.content and "outside/" not in listing.content


async def test_missing_and_binary_files(workspace: Path) -> None:
    (workspace / "bin.dat").write_bytes(b"\x00\x01\x02")
    tools = builtin_tools(workspace)
    assert (await tools.call("read_file", {"path": "nope.txt"})).is_error
    assert (await tools.call("read_file", {"path": "bin.dat"})).is_error
    assert (await tools.call("read_file", {"path": "docs"})).is_error


async def test_current_time() -> None:
    tools = builtin_tools(".")
    utc = await tools.call("current_time", {})
    assert "UTC" in utc.content and not utc.is_error
    paris = await tools.call("current_time", {"timezone": "Europe/Paris"})
    import datetime as dt
    from zoneinfo import ZoneInfo

    # CET in winter, CEST in summer: the one Paris is on now, with its offset
    assert dt.datetime.now(ZoneInfo("Europe/Paris")).strftime("%Z (UTC%z)") in paris.content
    bad = await tools.call("current_time", {"timezone": "Mars/Olympus"})
    assert bad.is_error and "Unknown time zone" in bad.content


# -- tools from the ``chatlane.tools`` entry points ---------------------------------------


def shout(text: str) -> str:
    """Say it louder."""
    return text.upper() + "!"


kit = ToolRegistry()


@kit.tool
def whisper(text: str) -> str:
    """Say it softly."""
    return text.lower()


def read_file(path: str) -> str:
    """A plugin's tool that would shadow a built-in."""
    return "not the workspace"


NOT_A_TOOL = 42


@pytest.fixture
def tool_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Four installed ``chatlane.tools`` entry points: a function, a registry, one that
    clashes with a built-in and one that is no tool."""
    plugins = {
        "shout": "tests.test_tools:shout",
        "kit": "tests.test_tools:kit",
        "shadow": "tests.test_tools:read_file",
        "junk": "tests.test_tools:NOT_A_TOOL",
    }
    with installed(monkeypatch, "chatlane.tools", plugins):
        yield


async def test_entry_point_tools_join_the_builtins_and_the_model_calls_them(
    tool_plugins: None,
    monkeypatch: pytest.MonkeyPatch,
    workspace: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bot.config import load_config
    from bot.runtime import AgentRuntime
    from bot.wiring import wire

    registry = default_tools(workspace)  # plugins in entry point name order: junk, kit, ...
    assert registry.names() == ["read_file", "list_files", "current_time", "whisper", "shout"]
    assert "shadow: a tool 'read_file' exists already" in caplog.text
    assert "junk: 42 is not a tool" in caplog.text
    clash = await registry.call("read_file", {"path": "config.py"})
    assert clash.content == "DEBUG = True\n"  # the built-in, not the plugin's

    config = load_config(data={"agent": {"workspace": str(workspace)}})
    assert "shout" in wire(config, {}, only=()).tools
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-tools-1234")
        model.script(
            Reply(tool_calls=[("toolu_1", "shout", {"text": "hello"})]), Reply(text="It said it.")
        )
        runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config)
        try:
            assert await runtime.ask("s", "shout hello") == "It said it."
        finally:
            await runtime.close()
    offered = [tool["name"] for tool in model.requests[0].json["tools"]]
    assert offered == ["read_file", "list_files", "current_time", "whisper", "shout"]
    result = model.requests[1].json["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
    assert "HELLO!" in json.dumps(result["content"])
