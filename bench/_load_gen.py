"""The load benchmark's open-loop generator, a process of its own.

``python -m bench._load_gen PLAN_JSON`` sends signed Telegram updates at a
fixed rate and never waits for a reply before sending the next: message k
is due at ``start + k / rate``, whatever happened to the ones before it.
Chats take turns (every chat's first message, then every chat's second...),
so one chat's messages are ``chats / rate`` seconds apart. Each message is
a private-chat text holding its token (``q<k>z``) and goes to one of the
plan's URLs, picked at random with a fixed seed (a load balancer).

A non-2xx answer or a failed connection is retried after a second, up to
``retries`` times, as Telegram redelivers. It stops at the plan's
``stop_at`` (``time.monotonic()``, one clock for the machine) at the
latest, and prints one JSON line: ``sent``, per message [due, sent,
answered, final status (0: none), attempts], times from ``time.monotonic()``
(``sent - due`` is its own lag, the proof that it kept its schedule; a
message never sent has ``sent`` 0), and its own ``cpu`` and ``wall`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

RETRY_AFTER = 1.0

Row = list[Any]  # due, sent, answered (all time.monotonic()), HTTP status (0: none), attempts


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
    http: ClientSession, url: str, body: bytes, headers: dict[str, str], retries: int, row: Row
) -> None:
    """POST one update until it is acknowledged or refused for good; ``row`` records it."""
    row[1] = time.monotonic()
    for attempt in range(1, retries + 2):
        row[4] = attempt
        try:
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                row[2:4] = time.monotonic(), response.status
        except (ClientError, OSError, TimeoutError):
            row[2:4] = time.monotonic(), 0
        if 200 <= row[3] < 300 or row[3] in (400, 401, 403, 404):
            return
        if attempt <= retries:
            await asyncio.sleep(RETRY_AFTER)


async def main(plan: dict[str, Any]) -> list[Row]:
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
    start = time.monotonic() + 0.1
    rows: list[Row] = [[start + k / rate, 0.0, 0.0, 0, 0] for k in range(total)]
    tasks: list[asyncio.Task[None]] = []
    connector = TCPConnector(limit=int(plan["connections"]))
    timeout = ClientTimeout(total=float(plan["timeout"]))
    async with ClientSession(connector=connector, timeout=timeout) as http:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(float(plan["stop_at"])):  # the loop's clock: monotonic
                for (url, body), row in zip(bodies, rows, strict=True):
                    wait = row[0] - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    delivery = deliver(http, url, body, headers, int(plan["retries"]), row)
                    tasks.append(asyncio.ensure_future(delivery))
                await asyncio.gather(*tasks)
        for task in tasks:  # the run's end came first: what is unanswered stays status 0
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return rows


if __name__ == "__main__":
    began = time.monotonic()
    rows = asyncio.run(main(json.loads(sys.argv[1])))
    wall = time.monotonic() - began
    print(json.dumps({"sent": rows, "cpu": time.process_time(), "wall": wall}))
