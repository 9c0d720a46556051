"""The web chat, end to end in headless Chromium, against the real server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.config import load_config
from bot.runtime import AgentRuntime
from bot.server import create_app
from tests.cdp import Browser, chromium_binary
from tests.fakes.models import FakeAnthropic, Reply

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(chromium_binary() is None, reason="no chromium (apt-get install chromium)"),
]


async def type_and_send(browser: Browser, text: str) -> None:
    await browser.evaluate(
        f"document.getElementById('input').value = {json.dumps(text)};"
        "document.getElementById('composer').requestSubmit(); true"
    )


@pytest.fixture
async def demo_server() -> AsyncIterator[TestServer]:
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    server = TestServer(create_app(runtime), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_demo_chat_in_the_browser(demo_server: TestServer, tmp_path: Path) -> None:
    url = str(demo_server.make_url("/"))
    async with Browser() as browser:
        await browser.goto(url)
        banner = await browser.wait_for(
            "!document.getElementById('banner').hidden && "
            "document.getElementById('banner').textContent"
        )
        assert banner.startswith("Offline demo model:")
        await type_and_send(browser, "hello <img src=x onerror='window.__pwned=1'>")
        answer = await browser.wait_for(
            "(() => { const a = document.querySelector('.msg.bot .answer:not(.streaming)');"
            " return a && a.textContent; })()"
        )
        assert "offline demo model" in answer
        assert await browser.evaluate("typeof window.__pwned") == "undefined"
        user = await browser.evaluate("document.querySelector('.msg.user').textContent")
        assert "<img" in user  # shown as text
        await type_and_send(browser, "what time is it?")
        card = await browser.wait_for(  # the card, once its result is in it
            "(() => { const c = document.querySelectorAll('details.tool');"
            " return c.length && c[0].querySelector('pre') && c[0].textContent; })()"
        )
        assert "current_time" in card and "Checked the time" in card


async def test_reasoning_streams_into_its_own_box(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-browser-0000")
        fake.script(
            Reply(
                text="Here: <think>hidden plan</think>The **answer** is <script>x</script>.",
                thinking="native thoughts",
            )
        )
        runtime = AgentRuntime(
            "anthropic/claude-sonnet-4-6", thinking_mode="stream", config=load_config()
        )
        server = TestServer(create_app(runtime), host="127.0.0.1")
        await server.start_server()
        try:
            async with Browser() as browser:
                await browser.goto(str(server.make_url("/")))
                await browser.wait_for("document.getElementById('model').textContent")
                await type_and_send(browser, "question")
                done: Any = await browser.wait_for(
                    "(() => { const a = document.querySelector('.answer:not(.streaming)');"
                    " if (!a) return null; const r = document.querySelector('.reasoning');"
                    " return {answer: a.textContent, html: a.innerHTML,"
                    " reasoning: r && r.textContent}; })()"
                )
        finally:
            await server.close()
    assert done["answer"].startswith("The answer is")
    assert "<strong>answer</strong>" in done["html"] and "<script" not in done["html"]
    assert "hidden plan" not in done["answer"] and "native" not in done["answer"]
    assert "native thoughts" in done["reasoning"] and "hidden plan" in done["reasoning"]


async def choose_file(browser: Browser, path: Path) -> None:
    """What picking a file in the attach dialog does: the input gets it, change fires."""
    found = await browser.send("Runtime.evaluate", expression="document.getElementById('file')")
    await browser.send(
        "DOM.setFileInputFiles", files=[str(path)], objectId=found["result"]["objectId"]
    )


def drop_file(name: str, size: int, head: str = "") -> str:
    """JS that drags a file of ``size`` bytes over the page and drops it."""
    return (
        "(() => { const bytes = new Uint8Array(" + str(size) + ");"
        f" const head = {json.dumps(head)};"
        " for (let i = 0; i < head.length; i++) bytes[i] = head.charCodeAt(i);"
        f" const file = new File([bytes], {json.dumps(name)});"
        " const dt = new DataTransfer(); dt.items.add(file);"
        " const init = {dataTransfer: dt, bubbles: true, cancelable: true};"
        " document.body.dispatchEvent(new DragEvent('dragover', init));"
        " const shown = !document.getElementById('drop').hidden;"
        " document.body.dispatchEvent(new DragEvent('drop', init)); return shown; })()"
    )


async def test_a_photo_with_a_caption_and_dropped_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    photo = b"\x89PNG\r\n\x1a\n" + b"\x01" * (1536 * 1024)  # over aiohttp's 1 MB body default
    (tmp_path / "cat.png").write_bytes(photo)
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-browser-0000")
        data = {"agent": {"model": "anthropic/claude-sonnet-4-6", "media": {"max_bytes": 2**21}}}
        server = TestServer(create_app(AgentRuntime(config=load_config(data=data))))
        await server.start_server()
        try:
            async with Browser() as browser:
                await browser.goto(str(server.make_url("/")))
                await browser.wait_for("document.getElementById('model').textContent")
                # Too big: refused in the page, nothing sent.
                assert await browser.evaluate(drop_file("huge.png", 2**21 + 1)) is True
                error = await browser.wait_for(
                    "(() => { const e = document.querySelector('.msg.error');"
                    " return e && e.textContent; })()"
                )
                assert error == "That file is too big for me: the limit is 2 MB."
                assert await browser.evaluate("document.getElementById('attachment').hidden")
                # The attach button's file, with a caption.
                await choose_file(browser, tmp_path / "cat.png")
                chip = await browser.wait_for(
                    "!document.getElementById('attachment').hidden && "
                    "document.getElementById('attachment-name').textContent"
                )
                assert chip == "📎 cat.png (2 MB)"
                await type_and_send(browser, "what is in it?")
                answer = await browser.wait_for(
                    "(() => { const a = document.querySelector('.answer:not(.streaming)');"
                    " return a && a.textContent; })()"
                )
                preview = await browser.wait_for(
                    "(() => { const i = document.querySelector('.msg.user img.preview');"
                    " return i && i.src.slice(0, 22); })()"
                )
                # An unsupported file, dropped, sent without a caption.
                await browser.evaluate(drop_file("notes.zip", 200, "PK\x03\x04"))
                await browser.wait_for("!document.getElementById('attachment').hidden")
                await type_and_send(browser, "")
                refused = await browser.wait_for(
                    "(() => { const a = document.querySelectorAll('.answer:not(.streaming)');"
                    " return a.length === 2 && a[1].textContent; })()"
                )
        finally:
            await server.close()
    assert answer.strip() == "echo: what is in it?" and preview == "data:image/png;base64,"
    assert refused.startswith("I can't read application/zip files.")
    (request,) = fake.requests
    blocks = request.json["messages"][-1]["content"]
    image = next(b for b in blocks if b["type"] == "image")
    assert base64.b64decode(image["source"]["data"]) == photo
