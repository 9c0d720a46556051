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
            "unit": {"type": "string", "enum": ["C", "F"], "default": "C"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city"],
        "additionalProperties": False,
    }


async def test_raising_tool_returns_error_result() -> None:
    registry = ToolRegistry()

    @registry.tool(name="boom")
    async def explode(x: int) -> str:
        raise RuntimeError("kaput")

    result = await registry.call("boom", {"x": 1}, "c1")
    assert result.is_error and result.call_id == "c1"
    # the kind of failure reaches the model; the exception's text (paths, secrets) does not
    assert "RuntimeError" in result.content and "kaput" not in result.content
    bad_args = await registry.call("boom", {"y": 1})
    assert bad_args.is_error and "Invalid arguments" in bad_args.content
    assert "x: required argument is missing" in bad_args.content
    assert "y: unknown argument" in bad_args.content
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


# -- schemas through pydantic, one feature at a time -------------------------------------

from enum import Enum  # noqa: E402
from typing import Annotated  # noqa: E402

from pydantic import BaseModel, Field  # noqa: E402

from bot.tools import make_tool, tool  # noqa: E402


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    """Where to send it."""

    street: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]


def _schema(func: object) -> dict[str, object]:
    return make_tool(func).parameters  # type: ignore[arg-type]


async def test_annotated_field_keeps_constraints_and_description() -> None:
    def forecast(days: Annotated[int, Field(ge=1, le=7, description="How many days")] = 1) -> str:
        """Forecast."""
        return f"{days} days"

    assert _schema(forecast)["properties"] == {
        "days": {
            "type": "integer",
            "minimum": 1,
            "maximum": 7,
            "default": 1,
            "description": "How many days",
        }
    }
    made = make_tool(forecast)
    assert (await made.call({"days": "3"})).content == "3 days"  # "3" is validated into 3
    refused = await made.call({"days": 9})
    assert refused.is_error and "days: Input should be less than or equal to 7" in refused.content


async def test_basemodel_parameter_is_validated_into_the_model() -> None:
    seen: list[object] = []

    def ship(to: Address, express: bool = False) -> str:
        """Ship a parcel."""
        seen.append(to)
        return f"to {to.street}"

    props = _schema(ship)["properties"]
    assert props["to"] == {  # type: ignore[index]
        "type": "object",
        "description": "Where to send it.",
        "properties": {
            "street": {"type": "string"},
            "zip_code": {"type": "string", "pattern": r"^\d{5}$"},
        },
        "required": ["street", "zip_code"],
    }
    made = make_tool(ship)
    ok = await made.call({"to": {"street": "Main St", "zip_code": "12345"}})
    assert ok.content == "to Main St" and isinstance(seen[0], Address)
    bad = await made.call({"to": {"street": "Main St", "zip_code": "12"}})
    assert bad.is_error and "to.zip_code" in bad.content and not seen[1:]


async def test_enum_is_a_member_and_its_default_a_value() -> None:
    got: list[Color] = []

    def paint(color: Color = Color.RED) -> str:
        """Paint."""
        got.append(color)
        return color.value

    assert _schema(paint)["properties"] == {
        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"}
    }
    await make_tool(paint).call({"color": "blue"})
    await make_tool(paint).call({})
    assert got == [Color.BLUE, Color.RED]
    wrong = await make_tool(paint).call({"color": "green"})
    assert wrong.is_error and "color: Input should be 'red' or 'blue'" in wrong.content


async def test_literal_optional_list_and_defaults() -> None:
    def search(
        query: str,
        sort: Literal["new", "top"] = "top",
        limit: int | None = None,
        tags: list[str] = [],  # noqa: B006 (a default the schema shows)
    ) -> str:
        """Search."""
        return f"{query}|{sort}|{limit}|{tags}"

    schema = _schema(search)
    assert schema["properties"] == {
        "query": {"type": "string"},
        "sort": {"type": "string", "enum": ["new", "top"], "default": "top"},
        "limit": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "default": []},
    }
    assert schema["required"] == ["query"]
    made = make_tool(search)
    assert (await made.call({"query": "q", "limit": None})).content == "q|top|None|[]"
    assert (await made.call({"query": "q", "tags": ["a"]})).content == "q|top|None|['a']"
    assert (await made.call({"query": "q", "sort": "old"})).is_error
    assert (await made.call({"query": "q", "tags": "a"})).is_error


def test_args_section_describes_parameters() -> None:
    def book(
        city: str, nights: int = 1, note: Annotated[str, Field(description="Own")] = ""
    ) -> str:
        """Book a hotel.

        Longer text that is not the description.

        Args:
            city: The city, in English,
                as on a map.
            nights (int): How many nights.
            note: Ignored: the Field's description wins.

        Returns:
            A booking code.
        """
        return city

    made = make_tool(book)
    assert made.description == "Book a hotel."
    props = made.parameters["properties"]
    assert props["city"]["description"] == "The city, in English, as on a map."
    assert props["nights"]["description"] == "How many nights."
    assert props["note"]["description"] == "Own"


async def test_parameter_names_that_are_basemodel_attributes_work() -> None:
    def fetch(json: str, schema: str = "s") -> str:
        """Fetch."""
        return json + schema

    assert set(_schema(fetch)["properties"]) == {"json", "schema"}  # type: ignore[arg-type]
    assert (await make_tool(fetch).call({"json": "j"})).content == "js"


async def test_tool_decorator_options_timeout_and_result_cap() -> None:
    import asyncio
    import time

    @tool(name="nap", timeout=0.05)
    async def sleepy() -> str:
        """Sleep too long."""
        await asyncio.sleep(5)
        return "never"

    @tool
    def blocking() -> str:
        """A sync tool: runs in a thread, so the loop keeps going."""
        time.sleep(0.2)
        return "woke"

    def huge() -> str:
        """A long result."""
        return "x" * 500

    registry = ToolRegistry(
        [make_tool(sleepy), make_tool(blocking), make_tool(huge)], max_result_chars=100
    )
    assert registry.names() == ["nap", "blocking", "huge"]
    assert sleepy.__name__ == "sleepy"  # the decorated function stays a function
    started = time.monotonic()
    late = await registry.call("nap", {})
    assert late.is_error and "took longer than 0.05 s" in late.content
    assert time.monotonic() - started < 2
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    assert (await registry.call("blocking", {})).content == "woke"
    ticker.cancel()
    assert ticks >= 5  # the loop ran while the sync tool slept
    capped = await registry.call("huge", {})
    assert capped.content.startswith("x" * 100)
    assert "[truncated: the result had 500 characters; only the first 100 are shown]" in (
        capped.content
    )


def test_channel_filters_choose_the_offered_tools() -> None:
    registry = builtin_tools(".")
    everything = registry.specs()
    assert registry.specs() is everything  # cached: providers key on the tuple
    files = registry.specs(["*_files", "read_*"])
    assert [s.name for s in files] == ["read_file", "list_files"]
    assert [s.name for s in registry.specs(None, ["read_file"])] == ["list_files", "current_time"]


# -- tools named in the config, from a module on PYTHONPATH -------------------------------

USER_TOOLS = '''
from typing import Annotated
from pydantic import BaseModel, Field
from bot.tools import ToolError, tool

class Order(BaseModel):
    item: str
    quantity: Annotated[int, Field(ge=1)]

def place_order(order: Order, note: str = "") -> str:
    """Place an order.

    Args:
        order: What to order.
    """
    return f"ordered {order.quantity} x {order.item}"

@tool(name="vault")
def leak() -> str:
    """Fails with a message holding a path and a secret."""
    raise OSError("/srv/app/secrets.env: sk-live-SECRET")

def refuse() -> str:
    """Says no on purpose."""
    raise ToolError("Not today.")

class Opaque:
    pass

def weird(thing: Opaque) -> str:
    """A parameter type pydantic cannot describe."""
    return "?"
'''


@pytest.fixture
def user_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import importlib
    import sys

    folder = tmp_path / "userpkg"
    folder.mkdir()
    name = f"chatlane_user_tools_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (folder / f"{name}.py").write_text(USER_TOOLS)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


async def test_config_tools_reach_the_model_validated_and_safe(
    user_tools: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.config import load_config
    from bot.runtime import AgentRuntime
    from bot.wiring import wire

    config = load_config(
        data={
            "agent": {"workspace": str(workspace)},
            "tools": [
                f"{user_tools}:place_order",
                f"{user_tools}:leak",
                {"function": f"{user_tools}:refuse", "name": "say_no", "timeout": 5},
            ],
        }
    )
    assert {"place_order", "vault", "say_no"} <= set(wire(config, {}, only=()).tools.names())
    async with FakeAnthropic() as model:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-tools-1234")
        model.script(
            Reply(
                tool_calls=[
                    ("t1", "place_order", {"order": {"item": "tea", "quantity": "2"}}),
                    ("t2", "place_order", {"order": {"item": "tea", "quantity": 0}}),
                    ("t3", "vault", {}),
                    ("t4", "say_no", {}),
                ]
            ),
            Reply(text="Done."),
        )
        runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config)
        try:
            assert await runtime.ask("s", "order tea") == "Done."
        finally:
            await runtime.close()
    offered = {t["name"]: t for t in model.requests[0].json["tools"]}
    order = offered["place_order"]["input_schema"]["properties"]["order"]
    assert order["description"] == "What to order."
    assert order["properties"]["quantity"] == {"type": "integer", "minimum": 1}
    results = [
        json.dumps(block["content"])
        for block in model.requests[1].json["messages"][-1]["content"]
        if block["type"] == "tool_result"
    ]
    assert "ordered 2 x tea" in results[0]
    assert "order.quantity: Input should be greater than or equal to 1" in results[1]
    assert "OSError" in results[2]
    assert "secrets.env" not in results[2] and "SECRET" not in results[2]
    assert "Not today." in results[3]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("no_such_module_xyz:tool", "module 'no_such_module_xyz' cannot be imported"),
        ("{mod}:missing", "has no 'missing'"),
        ("{mod}:weird", "its signature cannot be made a tool"),
        ("{mod}:USER", "is not a function"),
        ("bot.tools.builtin:current_time", "a tool named 'current_time' exists already"),
    ],
)
def test_bad_tool_entries_stop_the_start_naming_the_entry(
    user_tools: str, entry: str, problem: str
) -> None:
    import sys

    from bot.config import ConfigError, load_config
    from bot.tools import configured_tools

    __import__(user_tools)
    sys.modules[user_tools].USER = 42  # type: ignore[attr-defined]
    config = load_config(data={"tools": [entry.format(mod=user_tools)]})
    with pytest.raises(ConfigError) as caught:
        configured_tools(config)
    assert str(caught.value).startswith("tools.0 (") and problem in str(caught.value)
