"""Lanes across real processes over a real redis-server: no overlap, the cap, a killed holder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.queuing import QueueManager
from bot.queuing.redis_backend import RedisLanes
from tests.helpers import wait_for

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "queuing_proc" / "contender.py"


def spawn(url: str, prefix: str, name: str, turns: int, hold: float, lease: float) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), url, prefix, name, str(turns), str(hold), str(lease)],
        env=env,
    )


async def log_of(url: str, prefix: str) -> list[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return list(await client.lrange(prefix + "log", 0, -1))
    finally:
        await client.aclose()


async def cleanup(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def wait_process(proc: subprocess.Popen[bytes], seconds: float = 60) -> int:
    await wait_for(lambda: proc.poll() is not None, f"contender {proc.args[4]} to exit", seconds)
    return proc.returncode


@pytest.mark.slow
async def test_two_processes_never_overlap_on_one_chat(
    redis_server: str, redis_prefix: str
) -> None:
    procs = [spawn(redis_server, redis_prefix, name, 6, 0.03, 5) for name in ("a", "b")]
    try:
        assert [await wait_process(p) for p in procs] == [0, 0]
        entries = [line.split() for line in await log_of(redis_server, redis_prefix)]
        assert len(entries) == 24
        holder = None
        for kind, name, _ in entries:  # the log alternates start/end of the same process
            if kind == "start":
                assert holder is None, entries
                holder = name
            else:
                assert holder == name
                holder = None
        assert {name for _, name, _ in entries} == {"a", "b"}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        await cleanup(redis_server, redis_prefix)


@pytest.mark.slow
async def test_a_killed_holder_loses_its_lease(redis_server: str, redis_prefix: str) -> None:
    holder = spawn(redis_server, redis_prefix, "dies", 1, -1, 1.0)
    other = None

    async def holding() -> bool:
        return "holding dies" in await log_of(redis_server, redis_prefix)

    try:
        await wait_for(holding, "the first contender to hold the chat's lane", 30)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        other = spawn(redis_server, redis_prefix, "next", 1, 0.01, 1.0)
        assert await wait_process(other) == 0
        lines = await log_of(redis_server, redis_prefix)
        assert any(line.startswith("end next") for line in lines)
    finally:
        for proc in (holder, other):
            if proc is not None and proc.poll() is None:
                proc.kill()
        await cleanup(redis_server, redis_prefix)


async def test_global_cap_across_managers(redis_server: str, redis_prefix: str) -> None:
    lanes = [RedisLanes(redis_server, prefix=redis_prefix, lease=5, global_cap=2) for _ in range(2)]
    managers = [QueueManager(max_concurrent_global=10, redis=lane) for lane in lanes]
    inside = 0
    peak = 0
    release = asyncio.Event()

    async def turn(manager: QueueManager, chat: str) -> None:
        nonlocal inside, peak
        async with manager.hold(chat):
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(turn(managers[i % 2], f"chat-{i}")) for i in range(6)]
    try:
        await wait_for(lambda: inside >= 2, "two turns to hold the shared global slots", 10)
        await asyncio.sleep(0.3)  # a window for a third to get in, were the cap not held
        assert inside == 2
        release.set()
        await asyncio.gather(*tasks)
        assert peak == 2
    finally:
        for lane in lanes:
            await lane.aclose()
        await cleanup(redis_server, redis_prefix)


async def test_positions_and_cancel_while_waiting(redis_server: str, redis_prefix: str) -> None:
    lanes = RedisLanes(redis_server, prefix=redis_prefix, lease=5)
    manager = QueueManager(redis=lanes)
    other = QueueManager(redis=lanes)
    try:
        async with manager.slot("c") as first:
            async for _ in first.wait():
                pass
            async with other.slot("c") as second:
                waiting = second.wait()
                assert await waiting.__anext__() == 1
                await waiting.aclose()
        async with asyncio.timeout(5), other.hold("c"):
            pass
    finally:
        await lanes.aclose()
        await cleanup(redis_server, redis_prefix)


async def test_a_release_wakes_the_next_waiter_without_polling(
    redis_server: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter's own retry is pushed past the test's deadline: only the wake-up that
    the holder's release publishes can let it in, and the wake-up is the grant (the
    woken ticket is within the capacity): no script runs to ask again."""
    monkeypatch.setattr("bot.queuing.redis_backend.RETRY_EVERY", 3600.0)
    lanes = [RedisLanes(redis_server, prefix=redis_prefix, lease=30) for _ in range(2)]
    scripts: list[str] = []
    original = lanes[1].client.evalsha

    async def counted(sha: str, *args: Any) -> Any:
        scripts.append(sha)
        return await original(sha, *args)

    monkeypatch.setattr(lanes[1].client, "evalsha", counted)
    first = lanes[0].session("chat").ticket()
    async for _ in first.acquire():
        raise AssertionError("a free lane made the first contender wait")
    second = lanes[1].session("chat").ticket()
    positions: list[int] = []
    waiting = asyncio.Event()

    async def wait_turn() -> None:
        async for position in second.acquire():
            positions.append(position)
            waiting.set()

    waiter = asyncio.ensure_future(wait_turn())
    try:
        await waiting.wait()
        await wait_for(lambda: bool(lanes[1].wakes._waiters), "the waiter to listen")
        scripts.clear()
        await first.release()
        async with asyncio.timeout(5):
            await waiter
        assert positions == [1]
        assert scripts == []
        assert await second.still_holds()
    finally:
        waiter.cancel()
        await second.release()
        for lane in lanes:
            await lane.aclose()
        await cleanup(redis_server, redis_prefix)


async def test_a_wake_up_reaches_only_the_process_whose_ticket_it_names(
    redis_server: str, redis_prefix: str
) -> None:
    """Each process listens on its own channel, named in the queue members it adds: a
    release wakes the waiter's process and no other (with N processes, one delivery
    a release, not N)."""
    lanes = [RedisLanes(redis_server, prefix=redis_prefix, lease=30) for _ in range(3)]
    holder, waiting_side, bystander = lanes
    heard: list[str] = []
    bystander.wakes._wake = heard.append  # type: ignore[method-assign]
    first = holder.session("chat").ticket()
    second = waiting_side.session("chat").ticket()
    try:
        async for _ in first.acquire():
            raise AssertionError("a free lane made the first contender wait")
        assert first.member.endswith("@" + holder.wakes.owner)
        assert not await bystander.wakes.wait("session:none", 0, 5)  # subscribes
        acquired = asyncio.Event()

        async def wait_turn() -> None:
            async for _ in second.acquire():
                pass
            acquired.set()

        waiter = asyncio.ensure_future(wait_turn())
        await wait_for(lambda: bool(waiting_side.wakes._waiters), "the waiter to listen")
        await first.release()
        async with asyncio.timeout(5):
            await acquired.wait()
        await waiter
        probe = await bystander.client.publish(bystander.wakes.channel, "probe|0")
        await wait_for(lambda: "probe|0" in heard, "the bystander to hear its own channel")
        assert probe == 1 and heard == ["probe|0"]  # the release's wake-up was not its
    finally:
        await second.release()
        for lane in lanes:
            await lane.aclose()
        await cleanup(redis_server, redis_prefix)


async def test_scripts_run_together_each_with_its_own_keys_and_arguments(
    redis_server: str, redis_prefix: str
) -> None:
    """``run_scripts``: one trip, the scripts in order, each seeing only its own KEYS and
    ARGV (counted with ``#``), their results in order; one call runs as itself."""
    from bot.storage.redis_client import run_scripts

    client = aioredis.Redis.from_url(redis_server, decode_responses=True)
    write = "redis.call('SET', KEYS[1], ARGV[1]) return #KEYS * 10 + #ARGV"
    read = (
        "local n = 0 for _, k in ipairs(KEYS) do n = n + #redis.call('GET', k) end"
        " return {n, ARGV[1]}"
    )
    first, second = redis_prefix + "a", redis_prefix + "b"
    try:
        await client.set(second, "xy")
        calls = [(write, [first], ["hello"]), (read, [first, second], ["z"])]
        assert await run_scripts(client, calls) == [11, [7, "z"]]
        assert await run_scripts(client, calls[1:]) == [[7, "z"]]
        assert await client.get(first) == "hello"
        # ``when``: a script after the first runs only if it holds of the one before
        await client.delete(first)
        assert await run_scripts(client, calls, when="prev == 12") == [11, None]
        assert await client.get(first) == "hello"  # the first ran; the second did not
        assert await run_scripts(client, calls, when="prev == 11") == [11, [7, "z"]]
    finally:
        await client.delete(first, second)
        await client.aclose()


async def test_release_never_waits_on_a_renewal_that_lost_its_cancel(
    redis_server: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py sends under asyncio.wait_for, which on Python 3.11 can swallow a cancel:
    a turn's release must not hang on its lease renewer then."""
    import bot.queuing.redis_backend as backend

    real = backend.run_script
    renewing = asyncio.Event()

    async def deaf_renewal(client: Any, source: str, keys: Any, args: Any) -> Any:
        if source is not backend.RENEW:
            return await real(client, source, keys, args)
        renewing.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost, as inside wait_for
            await asyncio.sleep(0.2)
        return 1  # renewed

    monkeypatch.setattr(backend, "run_script", deaf_renewal)
    lanes = RedisLanes(redis_server, prefix=redis_prefix, lease=0.06)
    ticket = lanes.session("chat").ticket()
    try:
        async for _ in ticket.acquire():
            raise AssertionError("a free lane made the contender wait")
        await renewing.wait()
        releasing = asyncio.ensure_future(ticket.release())
        done, _ = await asyncio.wait({releasing}, timeout=2)  # (not a cancel: it is lost)
        assert releasing in done, "release() hung on the renewer"
        assert ticket.token is None
    finally:
        await lanes.aclose()
        await cleanup(redis_server, redis_prefix)


async def test_a_turn_joins_and_leaves_both_lanes_in_one_trip_each(
    redis_server: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat's lane and the global lane are joined together, and left together; a chat
    whose lane is busy takes no place in the global line while it waits, and the pair's
    release wakes the waiters of both lanes (no polling: the retry is pushed away)."""
    monkeypatch.setattr("bot.queuing.redis_backend.RETRY_EVERY", 3600.0)
    lanes = [RedisLanes(redis_server, prefix=redis_prefix, lease=30, global_cap=1) for _ in "ab"]
    managers = [QueueManager(redis=lane) for lane in lanes]
    trips: list[int] = []  # which process ran a script
    for index, lane in enumerate(lanes):
        original = lane.client.evalsha

        async def counted(sha: str, *args: Any, _original: Any = original, _i: int = index) -> Any:
            trips.append(_i)
            return await _original(sha, *args)

        monkeypatch.setattr(lane.client, "evalsha", counted)
    client = aioredis.Redis.from_url(redis_server, decode_responses=True)
    global_line = f"{redis_prefix}lane:global:queue"
    try:
        async with managers[0].hold("chat") as held:
            assert len(trips) == 1  # both lanes, one script
            assert len(held._tickets) == 2
            assert await client.zcard(global_line) == 1
            trips.clear()
            same_chat = asyncio.ensure_future(managers[1].hold("chat").__aenter__())
            other_chat = asyncio.ensure_future(managers[1].hold("other").__aenter__())
            chat_line = f"{redis_prefix}lane:session:chat:queue"
            lines = {global_line: 0, chat_line: 0}

            async def both_waiting() -> bool:
                lines.update({k: await client.zcard(k) for k in lines})
                return lines == {global_line: 2, chat_line: 2}

            # "chat" waits for its own lane, not in the global line; "other" waits there.
            async with asyncio.timeout(5):
                while not await both_waiting():
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # were "chat" to join the global line, it would now
            assert await both_waiting(), lines
            trips.clear()
        assert trips.count(0) == 1  # left both lanes in one script
        async with asyncio.timeout(5):
            await asyncio.wait([same_chat, other_chat], return_when=asyncio.FIRST_COMPLETED)
        first = same_chat if same_chat.done() else other_chat
        slot = first.result()
        await slot.__aexit__(None, None, None)
        async with asyncio.timeout(5):
            second = await (other_chat if first is same_chat else same_chat)
        await second.__aexit__(None, None, None)
        assert await client.zcard(global_line) == 0
        assert await client.zcard(f"{redis_prefix}lane:session:chat:queue") == 0
    finally:
        for lane in lanes:
            await lane.aclose()
        await client.aclose()
        await cleanup(redis_server, redis_prefix)
