"""The streaming benchmark's model: a fake Anthropic Messages API that writes slowly.

``python -m bench._stream_model PORT``. Every streamed request waits
``delay`` seconds (thinking), then writes its reply one text delta at a time,
a random 20-50 ms apart (``pace``), for about ``seconds``; the last delta
ends with ``END<k>.``, where ``q<k>z`` is the token in the last user message,
so the complete reply is recognisable at the platform. Deltas follow an
absolute schedule (a late one is not made up by delaying the rest).

For every chat token it notes when the first and the last delta were written
(``time.monotonic()``, one clock for the machine) and how far each write
fell behind its schedule (the fake's own lag: if it grows, the model, not the
system, is late). ``POST /plan`` sets delay, seconds and pace; ``GET /records``
gives ``{k: [first, last, deltas, worst lag, released]}``, ``released`` being
when the reply's first line grew past ``LEAD_IN_MAX`` characters: chatlane's
thinking extractor holds a short first line back until then (it may be a
lead-in to a ``<think>`` tag), so no text can show before it; ``POST /reset`` clears them.
``LagMonitor`` (also used by the platform fakes) measures how late the
process's event loop wakes up: a busy fake shows here.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time

from aiohttp import web

from bench._load_fakes import _sse, last_user_text
from bot.thinking.extractor import LEAD_IN_MAX

TOKEN = re.compile(r"q(\d+)z")


def end_marker(k: int) -> str:
    return f"END{k}."


class LagMonitor:
    """How late a 5 ms sleep wakes up, sampled for as long as the loop runs."""

    def __init__(self, every: float = 0.005) -> None:
        self.every = every
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.every)
            self.samples.append(time.monotonic() - before - self.every)

    def take(self) -> list[float]:
        """The samples since the last take (a reset too)."""
        out, self.samples = self.samples, []
        return out


class Model:
    def __init__(self) -> None:
        self.plan: dict[str, float] = {"delay": 0.2, "seconds": 3.0, "lo": 0.02, "hi": 0.05}
        self.records: dict[int, list[float]] = {}
        self.lag = LagMonitor()

    def deltas(self, k: int) -> list[tuple[float, str]]:
        """(seconds after the first delta, text) for chat ``k``'s reply: the same every run."""
        pick = random.Random(k)
        out: list[tuple[float, str]] = []
        at = 0.0
        while at < self.plan["seconds"]:
            out.append((at, f"word{len(out)} "))
            at += pick.uniform(self.plan["lo"], self.plan["hi"])
        out.append((at, end_marker(k)))
        return out

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        found = TOKEN.search(last_user_text(body))
        k = int(found.group(1)) if found else -1
        model = body.get("model", "claude")
        await asyncio.sleep(self.plan["delay"])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = {
            "id": "msg_stream",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 1},
        }
        head = _sse("message_start", {"message": start}) + _sse(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        )
        await response.write(head.encode())
        await self._stream(response, k)
        tail = (
            _sse("content_block_stop", {"index": 0})
            + _sse(
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 100},
                },
            )
            + _sse("message_stop", {})
        )
        await response.write(tail.encode())
        await response.write_eof()
        return response

    async def _stream(self, response: web.StreamResponse, k: int) -> None:
        plan = self.deltas(k)
        began = time.monotonic()
        worst = 0.0
        first = last = released = began
        written = 0
        for index, (offset, text) in enumerate(plan):
            wait = began + offset - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            last = time.monotonic()
            worst = max(worst, last - began - offset)
            if index == 0:
                first = last
            if written <= LEAD_IN_MAX < written + len(text):
                released = last
            written += len(text)
            delta = {"index": 0, "delta": {"type": "text_delta", "text": text}}
            await response.write(_sse("content_block_delta", delta).encode())
        self.records[k] = [first, last, len(plan), worst, released]

    async def set_plan(self, request: web.Request) -> web.Response:
        self.plan.update({key: float(v) for key, v in (await request.json()).items()})
        return web.json_response(self.plan)

    async def get_records(self, request: web.Request) -> web.Response:
        return web.json_response({"records": self.records, "loop_lag": self.lag.take()})

    async def reset(self, request: web.Request) -> web.Response:
        self.records.clear()
        self.lag.take()
        return web.json_response({})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"records": len(self.records)})


def app() -> web.Application:
    model = Model()

    async def started(_: web.Application) -> None:
        model.lag.start()

    application = web.Application()
    application.router.add_post("/v1/messages", model.messages)
    application.router.add_post("/plan", model.set_plan)
    application.router.add_get("/records", model.get_records)
    application.router.add_get("/stats", model.stats)
    application.router.add_post("/reset", model.reset)
    application.on_startup.append(started)
    return application


def main(argv: list[str]) -> None:
    web.run_app(app(), host="127.0.0.1", port=int(argv[0]), print=None, access_log=None)


if __name__ == "__main__":
    main(sys.argv[1:])
