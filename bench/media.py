"""Memory while many chats send big files at once: ``python -m bench media``.

50 chats each send a 10 MB file (``--quick``: 1 MB) at the same moment; each is fetched
by ``bot.media.download`` from a file server in this process (which streams it in 64 KB
writes, as a platform's CDN would) and streamed into a ``MediaStore`` in a temporary
directory. VmRSS is sampled every 5 ms; the figure is the peak growth over the RSS
measured just before, against the bytes in flight (chats x file size).
Target: peak growth < 2x the bytes in flight (streamed to storage, not held in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.media import MediaFetch, MediaStore, download

CHATS = 50
MB = 1024 * 1024


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def measure(size: int) -> tuple[int, int, float]:
    chunk = b"\xff\xd8\xff" + b"\x5a" * (64 * 1024 - 3)

    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        left = size
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            await response.write(piece)
            left -= len(piece)
        return response

    app = web.Application()
    app.router.add_get("/f/{n}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss())
            await asyncio.sleep(0.005)

    try:
        with tempfile.TemporaryDirectory() as folder:
            store = MediaStore(Path(folder))
            urls = [str(server.make_url(f"/f/{n}")) for n in range(CHATS)]
            await download(MediaFetch(urls[0]), store, max_bytes=size, stall=30)  # warm up
            before = rss()
            sampler = asyncio.ensure_future(sample())
            started = time.perf_counter()
            fetches = [download(MediaFetch(u), store, max_bytes=size, stall=30) for u in urls]
            results = await asyncio.gather(*fetches)
            seconds = time.perf_counter() - started
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            assert all(r.size == size for r in results)
    finally:
        await server.close()
    return before, max(peak, rss()), seconds


def run(quick: bool = False) -> list[tuple[str, float, Any]]:
    size = (1 if quick else 10) * MB
    before, peak, seconds = asyncio.run(measure(size))
    in_flight = CHATS * size
    growth = max(peak - before, 0)
    return [
        ("bytes in flight (MB)", in_flight / MB, f"{CHATS} chats x {size // MB} MB at once"),
        ("peak RSS growth (MB)", growth / MB, f"over {before / MB:.0f} MB before"),
        ("growth / bytes in flight", growth / in_flight, "target < 2"),
        ("throughput (MB/s)", in_flight / MB / seconds, "all downloads, fetched and stored"),
    ]


if __name__ == "__main__":
    for figure, value, note in run():
        print(f"{figure:28} {value:10.3f}  {note}")
