"""A small Chrome DevTools Protocol client: headless Debian chromium, driven over a websocket."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import tempfile
from typing import Any

import aiohttp

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.profile = tempfile.TemporaryDirectory()
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ids = itertools.count(1)

    async def __aenter__(self) -> Browser:
        binary = chromium_binary()
        assert binary is not None
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={self.profile.name}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        port = None
        async with asyncio.timeout(30):
            while port is None:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise RuntimeError("chromium exited before its DevTools endpoint was up")
                match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if match:
                    port = int(match.group(1))
        self._drain = asyncio.ensure_future(self._discard(self.proc.stderr))
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as response:
            pages = [t for t in await response.json() if t["type"] == "page"]
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def _discard(self, stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self._drain.cancel()
        await asyncio.gather(self._drain, return_exceptions=True)
        self.profile.cleanup()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        message_id = next(self.ids)
        await self.ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        async with asyncio.timeout(30):
            while True:
                message = json.loads((await self.ws.receive()).data)
                if message.get("id") == message_id:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    result: dict[str, Any] = message.get("result", {})
                    return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(
            "document.readyState === 'complete' && location.href.startsWith("
            + json.dumps(url[:20])
            + ")"
        )

    async def wait_for(self, expression: str, seconds: float = 15) -> Any:
        """Poll a JS condition until it is truthy, within ``seconds``."""
        async with asyncio.timeout(seconds):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await asyncio.sleep(0.05)

    async def screenshot(self) -> bytes:
        import base64

        data = await self.send("Page.captureScreenshot", format="png")
        return base64.b64decode(data["data"])
