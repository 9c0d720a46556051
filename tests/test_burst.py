"""A burst into one chat (issue 21 item 15): one notice for the burst, not one per
message, and no message dropped silently."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from tests.fakes.models import FakeAnthropic, Reply
from tests.helpers import wait_for
from tests.test_dispatch import inbound, slow_dispatcher


async def test_a_burst_into_one_chat_gets_one_notice_and_every_message_reaches_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup: contextlib.AsyncExitStack
) -> None:
    async with FakeAnthropic() as model:
        model.default = lambda request: Reply(text="ok", delay=0.2)
        dispatcher, sink = await slow_dispatcher(
            tmp_path, monkeypatch, cleanup, model, max_pending=5
        )
        await dispatcher.start()
        for n in range(120):
            await dispatcher.submit(inbound(f"message {n}", f"m{n}", sender=f"u{n}"))  # a group
        await wait_for(
            lambda: len(model.requests) >= 2 and not dispatcher.mailbox.waiting,
            "the burst to be taken up by the next turn",
        )
        await wait_for(lambda: len(sink.sent) >= 2, "both turns' replies", changed=sink.changed)
        assert len(sink.notices) == 1, sink.notices
        assert "still working" in sink.notices[0]
        seen = " ".join(json.dumps(r.json["messages"]) for r in model.requests)
        reached = {int(n) for n in re.findall(r"message (\d+)", seen)}
        missing = sorted(set(range(120)) - reached)
        assert missing == [], f"{len(missing)} messages never reached the model: {missing[:5]}"
