"""Lanes and mailboxes: order, both caps, modes, overflow, cancellation, eviction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.queuing import Lane, LaneFull, Mailbox, QueueManager, QueueMode
from tests.helpers import wait_for

MakeMailbox = Callable[..., Mailbox]


@pytest.fixture
async def mailbox() -> AsyncIterator[MakeMailbox]:
    """Makes mailboxes, closed after the test, passed or failed: a turn left waiting on
    a gate is cancelled, not destroyed pending."""
    made: list[Mailbox] = []

    def make(handler: Any, **options: Any) -> Mailbox:
        made.append(Mailbox(handler, **options))
        return made[-1]

    yield make
    for box in made:
        await box.close(0)


async def test_lane_runs_in_order_one_at_a_time() -> None:
    lane = Lane("session-1", max_concurrent=1)
    log: list[str] = []
    gates = [asyncio.Event() for _ in range(3)]

    async def task(n: int) -> int:
        log.append(f"start {n}")
        await gates[n].wait()
        log.append(f"end {n}")
        return n

    runs = [asyncio.create_task(lane.enqueue(lambda n=n: task(n))) for n in range(3)]
    await asyncio.sleep(0)
    assert log == ["start 0"] and lane.active == 1 and len(lane.queue) == 2
    for gate in reversed(gates):
        gate.set()
    assert await asyncio.gather(*runs) == [0, 1, 2]
    assert log == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]
    assert lane.idle


async def test_global_cap_holds_exactly_under_load() -> None:
    manager = QueueManager(max_concurrent_per_session=1, max_concurrent_global=3)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def turn(session: str) -> None:
        nonlocal running, peak
        async with manager.hold(session):
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(turn(f"chat-{i % 5}")) for i in range(20)]
    await wait_for(lambda: running >= 3, "three turns to hold the global slots")
    await asyncio.sleep(0.01)  # a window for a fourth to get in, were the cap not held
    assert running == 3
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3
    assert manager.session_count == 0
    assert manager.get_global_lane().idle


async def test_per_session_cap_keeps_chats_apart() -> None:
    manager = QueueManager(max_concurrent_per_session=1, max_concurrent_global=10)
    inside: dict[str, int] = {}
    overlap = False
    release = asyncio.Event()

    async def turn(session: str) -> None:
        nonlocal overlap
        async with manager.hold(session):
            inside[session] = inside.get(session, 0) + 1
            overlap = overlap or inside[session] > 1
            await release.wait()
            inside[session] -= 1

    tasks = [asyncio.create_task(turn(s)) for s in ["a", "a", "b", "b"]]
    await wait_for(lambda: sum(inside.values()) >= 2, "a turn of chat a and one of chat b")
    assert inside == {"a": 1, "b": 1}
    release.set()
    await asyncio.gather(*tasks)
    assert not overlap


async def test_positions_are_reported_while_waiting() -> None:
    manager = QueueManager(max_concurrent_global=10)
    async with manager.slot("s") as first:
        assert [p async for p in first.wait()] == []
        second = manager.slot("s")
        async with second:
            waiting = second.wait()
            assert await waiting.__anext__() == 1
            assert second.lane == "session:s"
            await waiting.aclose()
    assert manager.session_count == 0


async def test_take_now_takes_free_lanes_and_wait_goes_on_from_there() -> None:
    manager = QueueManager(max_concurrent_global=1)
    async with manager.slot("a") as first:
        assert first.take_now()
        assert manager.get_global_lane().active == 1
        second = manager.slot("b")
        async with second:
            assert not second.take_now()  # its session lane taken, the global slot full
            session_lane = manager.get_session_lane("b")
            assert session_lane.active == 1
            waiting = second.wait()
            assert await waiting.__anext__() == 1
            assert second.lane == "global"
            await first.__aexit__(None, None, None)  # the first turn ends
            assert [p async for p in waiting] == []
            assert session_lane.active == 1  # taken once, not twice
            assert manager.get_global_lane().active == 1
    assert manager.get_global_lane().idle and manager.session_count == 0


async def test_cancel_while_waiting_and_while_running_releases() -> None:
    manager = QueueManager(max_concurrent_global=1)
    started = asyncio.Event()

    async def holder() -> None:
        async with manager.hold("a"):
            started.set()
            await asyncio.Event().wait()

    running = asyncio.create_task(holder())
    await started.wait()
    waiter = asyncio.create_task(holder())
    await wait_for(
        lambda: manager.get_session_lane("a").queue, "the second turn to wait in chat a's lane"
    )
    waiter.cancel()
    running.cancel()
    await asyncio.gather(running, waiter, return_exceptions=True)
    assert manager.get_global_lane().idle and manager.session_count == 0
    async with asyncio.timeout(1):
        async with manager.hold("a"):
            pass


async def test_exception_in_turn_releases() -> None:
    manager = QueueManager(max_concurrent_global=1)
    with pytest.raises(RuntimeError):
        async with manager.hold("x"):
            raise RuntimeError("boom")
    assert manager.get_global_lane().idle


async def test_lane_bound() -> None:
    lane = Lane("bounded", max_concurrent=1, max_pending=1)
    assert lane.try_acquire()
    first = lane.acquire()
    assert await first.__anext__() == 1
    with pytest.raises(LaneFull):
        async for _ in lane.acquire():
            pass
    await first.aclose()
    lane.release()
    assert lane.idle


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], list[Any]]] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, session: str, items: list[Any], dropped: list[Any]) -> None:
        self.calls.append((list(items), list(dropped)))
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (QueueMode.COLLECT, [([1], []), ([2, 3], [])]),
        (QueueMode.FOLLOWUP, [([1], []), ([2], []), ([3], [])]),
    ],
)
async def test_collect_and_followup(
    mailbox: MakeMailbox, mode: QueueMode, expected: list[Any]
) -> None:
    handler = Recorder()
    box = mailbox(handler, mode=mode)
    assert box.submit("s", 1).position == 0
    await handler.entered.wait()
    assert box.submit("s", 2).position == 1
    assert box.submit("s", 3).position == 2
    handler.gate.set()
    await wait_for(lambda: len(box) == 0, "the mailbox to empty")
    assert handler.calls == expected


async def test_interrupt_cancels_and_tells_the_next_turn(mailbox: MakeMailbox) -> None:
    handler = Recorder()
    box = mailbox(handler, mode=QueueMode.INTERRUPT)
    box.submit("s", "first")
    await handler.entered.wait()
    box.submit("s", "second")
    await wait_for(lambda: len(handler.calls) == 2, "the second message's turn to start")
    assert handler.cancelled == 1
    assert handler.calls[1] == (["second"], ["first"])
    handler.gate.set()
    await wait_for(lambda: len(box) == 0, "the mailbox to empty")


async def test_overflow_is_refused_and_reported_to_the_next_turn(mailbox: MakeMailbox) -> None:
    handler = Recorder()
    box = mailbox(handler, max_pending=2)
    box.submit("s", 1)
    await handler.entered.wait()
    assert box.submit("s", 2).accepted and box.submit("s", 3).accepted
    refused = box.submit("s", 4)
    assert not refused.accepted
    handler.gate.set()
    await wait_for(lambda: len(box) == 0, "the mailbox to empty")
    assert handler.calls[1] == ([2, 3], [4])


async def test_mailboxes_are_evicted(mailbox: MakeMailbox) -> None:
    done = 0

    async def quick(session: str, items: list[Any], dropped: list[Any]) -> None:
        nonlocal done
        done += 1

    box = mailbox(quick)
    for index in range(2000):
        box.submit(f"chat-{index}", index)
    await wait_for(lambda: done == 2000, "the 2000 chats' turns to run")
    await wait_for(lambda: len(box) == 0, "the 2000 mailboxes to be evicted")


async def test_close_waits_for_grace_then_cancels(mailbox: MakeMailbox) -> None:
    handler = Recorder()
    box = mailbox(handler)
    box.submit("s", 1)
    await handler.entered.wait()
    await box.close(0.01)
    assert handler.cancelled == 1


async def test_failing_handler_does_not_block_the_chat(mailbox: MakeMailbox) -> None:
    calls: list[list[Any]] = []

    async def flaky(session: str, items: list[Any], dropped: list[Any]) -> None:
        calls.append(items)
        if items == [1]:
            raise RuntimeError("turn failed")

    box = mailbox(flaky)
    box.submit("s", 1)
    box.submit("s", 2)
    await wait_for(lambda: len(box) == 0, "both turns to run")
    assert calls == [[1], [2]]


async def test_admission_runs_at_most_the_cap_and_waiting_chats_have_no_task(
    mailbox: MakeMailbox,
) -> None:
    running: set[str] = set()
    most = 0
    order: list[str] = []
    gate = asyncio.Event()

    async def turn(session: str, items: list[Any], dropped: list[Any]) -> None:
        nonlocal most
        running.add(session)
        most = max(most, len(running))
        order.append(session)
        await gate.wait()
        running.discard(session)

    box = mailbox(turn, max_running=3)
    for index in range(10):
        box.submit(f"chat-{index}", index)
    box.submit("chat-0", "again")  # its second message goes behind the chats in line
    await wait_for(lambda: len(running) == 3, "three turns to run")
    assert box.running == 3  # tasks: one per running turn, none per waiting chat
    assert box.waiting == 8
    gate.set()
    await wait_for(lambda: len(box) == 0, "all eleven turns to run")
    assert most == 3
    assert order == [f"chat-{n}" for n in range(10)] + ["chat-0"]
    assert box.waiting == 0


async def test_a_chat_in_line_takes_its_messages_by_its_own_queue_mode(
    mailbox: MakeMailbox,
) -> None:
    calls: list[tuple[str, list[Any]]] = []
    gate = asyncio.Event()

    async def turn(session: str, items: list[Any], dropped: list[Any]) -> None:
        calls.append((session, items))
        await gate.wait()

    box = mailbox(turn, max_running=1)
    box.submit("busy", 0)
    for n in (1, 2):
        box.submit("follow", n, mode=QueueMode.FOLLOWUP)
        box.submit("collect", n)
    gate.set()
    await wait_for(lambda: len(box) == 0, "every chat's turns to run")
    assert calls == [
        ("busy", [0]),
        ("follow", [1]),
        ("collect", [1, 2]),
        ("follow", [2]),
    ]


async def test_an_interrupted_task_is_not_left_cancelling_for_the_next_turn(
    mailbox: MakeMailbox,
) -> None:
    seen: list[int] = []
    gate = asyncio.Event()

    async def turn(session: str, items: list[Any], dropped: list[Any]) -> None:
        task = asyncio.current_task()
        assert task is not None
        seen.append(task.cancelling())
        if items == ["first"]:
            await gate.wait()

    box = mailbox(turn, mode=QueueMode.INTERRUPT)
    box.submit("s", "first")
    await wait_for(lambda: seen == [0], "the first turn to start")
    box.submit("s", "second")
    await wait_for(lambda: len(box) == 0, "the interrupting turn to run")
    assert seen == [0, 0]
