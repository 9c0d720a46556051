"""kill -9 in the middle of a streamed reply: the next process finishes the same message.

A group reply is shown as one message edited while the model writes. The
process is killed after that message is on the platform and half written;
after a restart the stored message is answered again, and the new attempt
edits the message the first one left (its id was kept in storage while the
turn ran), so the chat ends with the complete reply, once. On SQLite and on
PostgreSQL (``storage_backend``).
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.fakes.models import FakeAnthropic, Recorded, Reply
from tests.fakes.telegram import FakeTelegram, update
from tests.procs import Durable, start_serve
from tests.test_crash import SECRET, telegram_env

pytestmark = pytest.mark.slow

GROUP = -1001
ANSWER = " ".join(f"word{n}" for n in range(60)) + " THE END"


async def test_kill_9_mid_stream_then_restart_finishes_the_same_message(
    tmp_path: Path, cleanup: contextlib.AsyncExitStack, storage_backend: Durable
) -> None:
    async with FakeAnthropic() as model, FakeTelegram() as telegram:
        asked: list[Recorded] = []

        def answer(request: Recorded) -> Reply:
            asked.append(request)
            slow = len(asked) == 1  # the first attempt writes slowly and is killed mid-way
            return Reply(text=ANSWER, chunks=30, pace=0.3 if slow else 0.0)

        model.default = answer
        stream = {"CHATLANE__CHANNELS__TELEGRAM__STREAM_EVERY": "0.1", **storage_backend.env}
        first = await start_serve(
            tmp_path, telegram_env(model, telegram, "first", **stream), name="first"
        )
        cleanup.push_async_callback(first.stop)
        async with ClientSession() as http:
            await first.wait_ready(http)
            group = update(1, "tell me", chat_id=GROUP, chat_type="supergroup", reply_to_bot=True)
            async with http.post(
                f"{first.url}/telegram/webhook",
                json=group,
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            ) as response:
                assert response.status == 200
            await telegram.wait_for("editMessageText", 2, seconds=30)
            first.proc.send_signal(signal.SIGKILL)
            await first.proc.wait()
            half = telegram.visible(GROUP)
            assert len(half) == 1 and "THE END" not in half[0], half
            [streamed] = [key[1] for key in telegram.messages]
            if storage_backend.env:  # its claim would hold for 30 s (CLAIM_TTL): run out now
                assert await storage_backend.lapse_leases() == 1

            second = await start_serve(
                tmp_path, telegram_env(model, telegram, "second", **stream), name="second"
            )
            cleanup.push_async_callback(second.stop)
            await second.wait_ready(http)
            await telegram.wait_until(
                lambda: any(t.endswith("THE END") for t in telegram.visible(GROUP)),
                "the reply finished after the restart",
                60,
            )
            await second.stop()
        assert second.proc.returncode == 0, second.log()
        assert telegram.visible(GROUP) == [ANSWER]  # one message, complete: no orphan half
        assert len(telegram.sent()) == 1  # the first process's; the second only edited
        by_second = [c for c in telegram.calls if c.via == "second" and c.method.startswith("edit")]
        assert by_second and all(c.params["message_id"] == streamed for c in by_second)
        assert len(asked) == 2
        assert await storage_backend.pending() == []
