"""The load benchmark's open-loop generator, a process of its own.

``python -m bench._load_gen PLAN_JSON`` sends signed Telegram updates at a
fixed rate and never waits for a reply before sending the next: message k
is due at ``start + k / rate``, whatever happened to the ones before it.
Chats take turns (every chat's first message, then every chat's second...),
so one chat's messages are ``chats / rate`` seconds apart. Each message is
a private-chat text holding its token (``q<k>z``) and goes to one of the
plan's URLs, picked at random with a fixed seed (a load balancer).

A non-2xx answer or a failed connection is retried after a second, up to
``retries`` times, as Telegram redelivers. At the end it prints one JSON
line: ``sent``, per message [due, sent, acknowledged, final status,
attempts], all ``time.monotonic()`` (``sent - due`` is its own lag, the
proof that it kept its schedule), and its own ``cpu`` and ``wall`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

RETRY_AFTER = 1.0


def update(k: int, chat_id: int, update_id: int) -> bytes:
    message = {
        "message_id": k + 1,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private", "first_name": "Ada"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Ada", "username": "ada"},
        "text": f"Load message q{k}z, please answer it",
    }
    return json.dumps({"update_id": update_id, "message": message}).encode()


async def deliver(
    http: ClientSession, url: str, body: bytes, headers: dict[str, str], retries: int
) -> tuple[float, float, int, int]:
    sent = time.monotonic()
    status = 0
    for attempt in range(1, retries + 2):
        try:
            async with http.post(url, data=body, headers=headers) as response:
                status = response.status
                await response.read()
        except (ClientError, OSError, TimeoutError):
            status = 0
        if 200 <= status < 300 or status in (400, 401, 403, 404):
            return sent, time.monotonic(), status, attempt
        if attempt <= retries:
            await asyncio.sleep(RETRY_AFTER)
    return sent, time.monotonic(), status, retries + 1


async def main(plan: dict[str, Any]) -> list[list[float]]:
    rate, chats, per_chat = float(plan["rate"]), int(plan["chats"]), int(plan["per_chat"])
    urls: list[str] = plan["urls"]
    pick = random.Random(plan.get("seed", 1))
    headers = {
        "X-Telegram-Bot-Api-Secret-Token": plan["secret"],
        "Content-Type": "application/json",
    }
    total = chats * per_chat
    bodies = [
        (urls[pick.randrange(len(urls))], update(k, 100_000 + k % chats, 1 + k))
        for k in range(total)
    ]
    due = [0.0] * total
    tasks: list[asyncio.Task[tuple[float, float, int, int]]] = []
    connector = TCPConnector(limit=int(plan["connections"]), force_close=False)
    timeout = ClientTimeout(total=float(plan["timeout"]))
    async with ClientSession(connector=connector, timeout=timeout) as http:
        start = time.monotonic() + 0.1
        for k, (url, body) in enumerate(bodies):
            due[k] = start + k / rate
            wait = due[k] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(
                asyncio.ensure_future(deliver(http, url, body, headers, int(plan["retries"])))
            )
        done = await asyncio.gather(*tasks)
    return [[due[k], *row] for k, row in enumerate(done)]


if __name__ == "__main__":
    began = time.monotonic()
    rows = asyncio.run(main(json.loads(sys.argv[1])))
    wall = time.monotonic() - began
    print(json.dumps({"sent": rows, "cpu": time.process_time(), "wall": wall}))
