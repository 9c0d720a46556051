"""Hooks around a turn and a tool call: they add context, refuse, raise and time out."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, load_config
from bot.hooks import AddContext, Hooks, Refuse, ToolUse, TurnEnd, TurnStart, load_hooks
from bot.runtime import AgentRuntime
from bot.tools import ToolResult
from tests.fakes.models import FakeAnthropic, Reply
from tests.fakes.plugins import installed


class Recorder:
    def __init__(self) -> None:
        self.ends: list[TurnEnd] = []
        self.tools: list[tuple[ToolUse, ToolResult]] = []

    async def before_turn(self, turn: TurnStart) -> AddContext | Refuse | None:
        if "forbidden" in turn.text:
            return Refuse("I can't help with that here.")
        return AddContext(f"The user writes from {turn.channel or 'the API'}.")

    def after_turn(self, turn: TurnEnd) -> None:  # sync: run in a thread
        self.ends.append(turn)

    async def before_tool(self, call: ToolUse) -> Refuse | None:
        return Refuse("No clocks today.") if call.name == "current_time" else None

    async def after_tool(self, call: ToolUse, result: ToolResult) -> None:
        self.tools.append((call, result))


class Broken:
    def before_turn(self, turn: TurnStart) -> None:
        raise RuntimeError("hook bug")

    async def before_tool(self, call: ToolUse) -> None:
        await asyncio.sleep(10)  # past the timeout: passed over

    def after_turn(self, turn: TurnEnd) -> None:
        raise ValueError("after bug")


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> Any:
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-hooks-1234")
        yield fake


async def test_hooks_add_context_refuse_turns_and_tools(model: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    config = load_config(data={"agent": {"workspace": str(tmp_path)}})
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config, hooks=[recorder])
    model.script(
        Reply(tool_calls=[("t1", "current_time", {}), ("t2", "list_files", {})]),
        Reply(text="Here."),
    )
    try:
        assert await runtime.ask("s", "what time is it", channel="web") == "Here."
        refused = await runtime.ask("s", "something forbidden")
    finally:
        await runtime.close()
    assert refused == "I can't help with that here."
    assert len(model.requests) == 2  # the refused turn never called the model
    system = model.requests[0].json["system"]
    system_text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
    assert system_text.endswith("The user writes from web.")
    results = model.requests[1].json["messages"][-1]["content"]
    assert results[0]["is_error"] and "No clocks today." in str(results[0]["content"])
    assert not results[1].get("is_error")
    assert [call.name for call, _ in recorder.tools] == ["list_files"]  # the refused one ran not
    first, second = recorder.ends
    assert first.reply == "Here." and first.channel == "web" and first.model
    assert first.usage is not None and not first.refused
    assert second.refused and second.reply == "I can't help with that here."


async def test_failing_and_slow_hooks_are_passed_over(
    model: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(data={"agent": {"workspace": str(tmp_path)}})
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config, hooks=[Broken()])
    runtime.hooks.timeout = 0.05
    model.script(Reply(tool_calls=[("t1", "list_files", {})]), Reply(text="Fine."))
    try:
        assert await runtime.ask("s", "hi") == "Fine."
    finally:
        await runtime.close()
    assert "hook Broken.before_turn failed; passed over" in caplog.text
    assert "hook Broken.before_tool took over 0.05s; passed over" in caplog.text
    assert "hook Broken.after_turn failed; passed over" in caplog.text
    result = model.requests[1].json["messages"][-1]["content"][0]
    assert not result.get("is_error")  # the tool ran: a broken hook refuses nothing


HOOK_MODULE = """
from bot.hooks import Refuse

calls = []

def before_turn(turn):
    calls.append(turn.text)
    return Refuse("closed") if turn.text == "stop" else None

class Audit:
    def __init__(self):
        self.seen = []
    def after_turn(self, turn):
        calls.append("after:" + turn.reply)
"""


async def test_hooks_from_config_and_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"chatlane_hooks_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(HOOK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    config = load_config(data={"hooks": [name, f"{name}:Audit"]})
    with installed(monkeypatch, "chatlane.hooks", {"recorder": "tests.test_hooks:Recorder"}):
        hooks = load_hooks(config)
    assert [type(h).__name__ for h in hooks.hooks] == ["module", "Audit", "Recorder"]
    _, refusal = await hooks.before_turn(TurnStart("s", None, "stop"))
    assert refusal == Refuse("closed")
    contexts, refusal = await hooks.before_turn(TurnStart("s", "sms", "go"))
    assert refusal is None and contexts == ["The user writes from sms."]
    await hooks.after_turn(TurnEnd("s", None, "go", reply="ok"))
    assert sys.modules[name].calls == ["stop", "go", "after:ok"]
    with pytest.raises(ConfigError, match=r"hooks.0 \(no_such_hooks_mod\): module"):
        load_hooks(load_config(data={"hooks": ["no_such_hooks_mod"]}))


async def test_no_hooks_is_falsy_and_costs_nothing() -> None:
    hooks = Hooks()
    assert not hooks
    assert await hooks.before_turn(TurnStart("s", None, "x")) == ([], None)
    assert await hooks.before_tool(ToolUse("s", None, "t", {})) is None


async def test_channel_prompt_and_tool_filter(model: Any, tmp_path: Path) -> None:
    prompt = tmp_path / "sms-prompt.md"
    prompt.write_text("Answer in one short line.")
    config = load_config(
        data={
            "agent": {"workspace": str(tmp_path), "system_prompt": "Default prompt."},
            "channels": {
                "sms": {"system_prompt_file": str(prompt), "allowed_tools": ["current_*"]},
                "web": {"system_prompt": "Web prompt.", "disabled_tools": ["read_file"]},
            },
        }
    )
    runtime = AgentRuntime("anthropic/claude-sonnet-4", config=config)
    model.script(
        Reply(tool_calls=[("t1", "list_files", {})]),
        Reply(text="one"),
        Reply(text="two"),
        Reply(text="three"),
    )
    try:
        await runtime.ask("a", "hi", channel="sms")
        await runtime.ask("b", "hi", channel="web")
        await runtime.ask("c", "hi")
    finally:
        await runtime.close()

    def system(request: Any) -> str:
        value = request.json["system"]
        return value if isinstance(value, str) else " ".join(b["text"] for b in value)

    def offered(request: Any) -> list[str]:
        return [t["name"] for t in request.json.get("tools", [])]

    sms, sms_after_tool, web, api = model.requests
    assert system(sms) == "Answer in one short line." and offered(sms) == ["current_time"]
    refused = sms_after_tool.json["messages"][-1]["content"][0]
    assert refused["is_error"] and "not available here" in str(refused["content"])
    assert system(web) == "Web prompt." and offered(web) == ["list_files", "current_time"]
    assert system(api) == "Default prompt." and "read_file" in offered(api)
