"""LiveStream: updates at the platform's pace, never holding the turn up; what it leaves is kept."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from bot.channel import StreamOptions
from bot.events import AgentEvent
from bot.storage import MemoryStorage
from bot.streaming import LiveMemory, LiveStream, RetryLater, Snapshot
from tests.helpers import wait_for


class Recorder(LiveStream):
    def __init__(self, options: StreamOptions, *, slow: float = 0.0) -> None:
        super().__init__(options)
        self.shown: list[tuple[float, Snapshot]] = []
        self.slow = slow
        self.fail: list[BaseException] = []

    async def show(self, snapshot: Snapshot) -> None:
        if self.fail:
            raise self.fail.pop(0)
        if self.slow:
            await asyncio.sleep(self.slow)
        self.shown.append((asyncio.get_running_loop().time(), snapshot))

    async def handover(self) -> dict[str, Any] | None:
        return {"updates": self.updates}


def text(delta: str) -> AgentEvent:
    return AgentEvent("text", {"delta": delta})


async def test_the_first_text_shows_at_once_then_at_the_pace_newest_first() -> None:
    stream = Recorder(StreamOptions(live=True, every=0.05))
    start = asyncio.get_running_loop().time()
    for n in range(20):
        await stream.feed(text(f"{n} "))
    await wait_for(lambda: stream.shown, "the first update")
    assert stream.shown[0][0] - start < 0.05  # not held back by the pace
    await stream.feed(text("end"))
    await wait_for(lambda: stream.shown[-1][1].text.endswith("end"), "the newest text shown")
    times = [at for at, _ in stream.shown]
    assert all(b - a >= 0.049 for a, b in itertools.pairwise(times))
    assert len(stream.shown) <= 3  # 21 pieces, a few updates: the ones between are skipped
    assert await stream.close() == {"updates": len(stream.shown)}


async def test_a_429_slows_updates_down_and_a_failure_is_retried_by_the_next() -> None:
    stream = Recorder(StreamOptions(live=True, every=0.01))
    stream.fail = [RetryLater(0.1), ConnectionError("reset")]
    start = asyncio.get_running_loop().time()
    await stream.feed(text("hello"))
    await wait_for(lambda: stream.shown, "an update after the 429 and the failure", timeout=2)
    assert stream.shown[0][0] - start >= 0.1
    assert stream.shown[0][1].text == "hello"


async def test_close_lets_the_update_under_way_finish() -> None:
    stream = Recorder(StreamOptions(live=True, every=0.01), slow=0.05)
    await stream.feed(text("partial"))
    await wait_for(lambda: stream._idle.is_set() is False, "an update under way")
    handover = await stream.close()
    assert [s.text for _, s in stream.shown] == ["partial"]  # finished, not cut off
    assert handover == {"updates": 1}


async def test_not_live_shows_nothing_and_reasoning_only_where_shown() -> None:
    quiet = Recorder(StreamOptions(live=False))
    await quiet.feed(text("x"))
    assert await quiet.close() == {"updates": 0} and quiet.shown == []
    hidden = Recorder(StreamOptions(live=True, every=0.01, show_reasoning=False))
    await hidden.feed(AgentEvent("thinking", {"content": "secret", "mode": "stream"}))
    await hidden.feed(AgentEvent("tool_call", {"id": "1", "name": "current_time", "arguments": {}}))
    await wait_for(lambda: hidden.shown, "the tool status")
    assert hidden.shown[-1][1] == Snapshot("", "", "Running current_time…")
    await hidden.close()


async def test_live_memory_keeps_what_a_stream_left_until_forgotten() -> None:
    storage = MemoryStorage()
    await storage.open()
    memory = LiveMemory(storage, "telegram:1")
    assert await memory.recall() is None
    await memory.remember({"message_id": 7})
    assert await LiveMemory(storage, "telegram:1").recall() == {"message_id": 7}
    await memory.forget()
    assert await memory.recall() is None
    await storage.close()


async def test_live_memory_forgets_without_a_trip_when_nothing_was_stored() -> None:
    """A first attempt that remembered nothing (a draft) deletes nothing; one that may
    follow an earlier attempt's record, or that remembered, does."""
    storage = MemoryStorage()
    await storage.open()
    deleted: list[str] = []
    original = storage.kv_delete

    async def counted(namespace: str, key: str) -> None:
        deleted.append(key)
        await original(namespace, key)

    storage.kv_delete = counted  # type: ignore[method-assign]
    await LiveMemory(storage, "telegram:2", earlier=False).forget()
    assert deleted == []
    await storage.kv_set("live", "telegram:3", {"messages": [1]})  # a crashed attempt's
    await LiveMemory(storage, "telegram:3", earlier=True).forget()
    assert deleted == ["telegram:3"]
    assert await LiveMemory(storage, "telegram:3").recall() is None
    fresh = LiveMemory(storage, "telegram:4", earlier=False)
    await fresh.remember({"messages": [5]})
    await fresh.forget()
    await fresh.forget()  # once is enough
    assert deleted == ["telegram:3", "telegram:4"]
    assert await fresh.recall() is None
    await storage.close()


async def test_text_of_a_model_that_failed_over_is_taken_back() -> None:
    stream = Recorder(StreamOptions(live=True, every=0.01))
    await stream.feed(text("Checking. "))
    await stream.feed(AgentEvent("tool_call", {"id": "1", "name": "current_time", "arguments": {}}))
    await stream.feed(AgentEvent("tool_result", {"id": "1", "name": "current_time", "display": ""}))
    await stream.feed(text("It is no"))
    await stream.feed(AgentEvent("failover", {"from": "a/x", "to": "b/y", "reason": "timeout"}))
    await stream.feed(text("It is noon."))
    assert stream.snapshot().text == "Checking. It is noon."
    await stream.close()
