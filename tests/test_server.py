"""The HTTP server and the web chat API, with the offline demo model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import create_app
from bot.storage import MemoryStorage


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    app = create_app(runtime)
    async with TestClient(TestServer(app)) as client:
        yield client


async def chat(
    client: TestClient[Any, Any], text: str, session: str = "s1"
) -> list[dict[str, Any]]:
    response = await client.post("/api/chat", json={"session_id": session, "text": text})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    body = await response.text()
    return [json.loads(line) for line in body.splitlines() if line]


async def test_healthz(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    data = await response.json()
    assert data["status"] == "ok" and data["storage"] == "ok" and data["demo"] is True


async def test_healthz_is_503_when_storage_is_down() -> None:
    storage = MemoryStorage()
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True, storage=storage)

    async def down() -> bool:
        return False

    storage.ping = down  # type: ignore[method-assign]
    async with TestClient(TestServer(create_app(runtime))) as client:
        response = await client.get("/healthz")
        assert response.status == 503
        assert (await response.json())["storage"] == "unreachable"


async def test_page_and_assets_need_no_internet(client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/")).text()
    assert "<title>chatlane</title>" in page
    assert "http://" not in page and "https://" not in page
    script = await client.get("/static/chat.js")
    assert script.status == 200
    assert "https://" not in await script.text()
    info = await (await client.get("/api/info")).json()
    assert info["model"] == "demo/chatlane-demo" and "offline demo" in info["demo"]


async def test_chat_streams_a_demo_answer(client: TestClient[Any, Any]) -> None:
    events = await chat(client, "hello **there**")
    kinds = [e["type"] for e in events]
    assert kinds.count("text") > 3 and kinds[-1] == "done"
    done = events[-1]["data"]
    assert "offline demo model" in done["text"]
    assert "<strong>there</strong>" in done["html"]
    assert "error" not in done


async def test_chat_shows_tool_calls(client: TestClient[Any, Any]) -> None:
    events = await chat(client, "what time is it?")
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["tool_call", "tool_result"]
    assert events[1]["data"]["display"].startswith("Checked the time")


async def test_commands_are_answered_without_the_model(client: TestClient[Any, Any]) -> None:
    status = await chat(client, "/status")
    assert status[0]["type"] == "command"
    assert "Model: demo/chatlane-demo" in status[0]["data"]["text"]
    think = await chat(client, "/think stream")
    assert think[0]["data"]["text"] == "Thinking mode set to stream."
    streamed = await chat(client, "hi")
    assert any(e["type"] == "thinking" and e["data"]["mode"] == "stream" for e in streamed)
    reset = await chat(client, "/new")
    assert reset[0]["data"]["text"] == "Started a new conversation."


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1,2]",
        b'{"session_id": "", "text": "x"}',
        b'{"session_id": "a", "text": ""}',
        b'{"session_id": "a"}',
    ],
)
async def test_bad_requests_are_400(client: TestClient[Any, Any], body: bytes) -> None:
    response = await client.post(
        "/api/chat", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400


async def test_rate_limit_applies_to_the_web_chat() -> None:
    config = load_config(data={"channels": {"web": {"rate_limit_per_minute": 2}}})
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True)
    async with TestClient(TestServer(create_app(runtime))) as client:
        await chat(client, "one")
        await chat(client, "two")
        third = await chat(client, "three")
        assert third[0]["type"] == "error" and "too quickly" in third[0]["data"]["message"]


START_AND_ONE_TURN = """
import asyncio, sys
from bot.server import HOST_KEY, create_app
app = create_app(env={})  # no credentials: the web chat on the offline demo model
runtime = app[HOST_KEY].runtime
async def main():
    await runtime.start()
    await runtime.ask("s", "hello")
    await runtime.close()
asyncio.run(main())
heavy = ("anthropic", "bpe_openai", "discord", "openai", "slack_sdk", "twilio")
print(" ".join(m for m in heavy if m in sys.modules))
"""


def modules_loaded_by(script: str, cwd: Any) -> list[str]:
    """What ``script``, run in a fresh interpreter, printed: the modules it found loaded."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_unused_sdks_and_the_vocabulary_stay_out_of_memory(tmp_path: Any) -> None:
    # Each costs megabytes a process would hold for nothing: anthropic 45, openai 12,
    # discord.py 8, twilio 5, slack_sdk 3, a tokenizer's vocabulary 140.
    assert modules_loaded_by(START_AND_ONE_TURN, tmp_path) == []


START_ON_CLAUDE = """
import asyncio, sys
from bot.config import load_config
from bot.runtime import AgentRuntime
config = load_config(data={"agent": {"model": "anthropic/claude-sonnet-4-6"}})
runtime = AgentRuntime(config=config, env={"ANTHROPIC_API_KEY": "sk-test"})
async def main():
    await runtime.start()
    print(" ".join(m for m in ("anthropic", "openai") if m in sys.modules))
    await runtime.close()
asyncio.run(main())
"""


def test_the_configured_models_sdk_is_imported_at_start_not_in_the_first_turn(
    tmp_path: Any,
) -> None:
    # Importing anthropic takes over a second of CPU: inside a turn it would stall every
    # request the process serves for as long.
    assert modules_loaded_by(START_ON_CLAUDE, tmp_path) == ["anthropic"]
