"""Chat commands that change a chat: /model only to the operator's models, admins in groups."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from bot.commands import handle_command
from bot.config import load_config
from bot.inbound import InboundMessage
from bot.runtime import AgentRuntime
from bot.storage import SQLiteStorage


@pytest.fixture
async def runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: contextlib.AsyncExitStack
) -> AgentRuntime:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-commands-1111")
    config = load_config(
        data={
            "agent": {
                "model": "anthropic/claude-sonnet-4-6",
                "fallback_models": ["anthropic/claude-haiku-4-5"],
                "allowed_models": ["anthropic/claude-opus-4-5", "openai/gpt-4o"],
            },
            "channels": {"telegram": {"admins": ["42", "@ada"]}},
        }
    )
    made = AgentRuntime(config=config, storage=SQLiteStorage(tmp_path / "c.sqlite"))
    cleanup.push_async_callback(made.close)
    return made


async def test_model_accepts_only_the_chain_and_allowed_models(runtime: AgentRuntime) -> None:
    refused = await handle_command(runtime, "s", "/model anthropic/claude-3-opus-expensive")
    assert refused and "not one of this bot's models" in refused
    assert "anthropic/claude-opus-4-5" in refused and "anthropic/claude-sonnet-4-6" in refused
    assert (await runtime.status("s"))["session"]["model"] == "anthropic/claude-sonnet-4-6"
    assert await handle_command(runtime, "s", "/model anthropic/claude-opus-4-5") == (
        "Model set to anthropic/claude-opus-4-5 for this chat."
    )
    assert await handle_command(runtime, "s", "/model anthropic/claude-haiku-4-5")


async def test_model_without_a_key_is_refused(runtime: AgentRuntime) -> None:
    reply = await handle_command(runtime, "s", "/model openai/gpt-4o")
    assert reply == "openai/gpt-4o cannot be used: no API key is set for openai."


@pytest.mark.parametrize(
    "text", ["/new", "/reset", "/model anthropic/claude-opus-4-5", "/think on"]
)
async def test_group_changes_need_an_admin(runtime: AgentRuntime, text: str) -> None:
    stranger = InboundMessage("telegram", "-100", "7", text, "1", sender_name="eve", group=True)
    assert await handle_command(runtime, "g", text, message=stranger) == (
        "In a group chat only the bot's admins can change that."
    )
    for admin in (
        InboundMessage("telegram", "-100", "42", text, "2", group=True),
        InboundMessage("telegram", "-100", "9", text, "3", sender_name="ada", group=True),
    ):
        answer = await handle_command(runtime, "g", text, message=admin)
        assert answer and "admins" not in answer
    direct = InboundMessage("telegram", "7", "7", text, "4", sender_name="eve")
    answer = await handle_command(runtime, "d", text, message=direct)
    assert answer and "admins" not in answer


async def test_reading_status_in_a_group_needs_no_admin(runtime: AgentRuntime) -> None:
    stranger = InboundMessage("telegram", "-100", "7", "/model", "1", group=True)
    assert await handle_command(runtime, "g", "/model", message=stranger) == (
        "Model: anthropic/claude-sonnet-4-6"
    )
