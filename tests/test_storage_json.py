"""``to_json``: what every backend stores reads back with ``json.loads`` as json wrote it."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from typing import Any

import pytest

from bot.inbound import InboundMessage
from bot.messages import Message, Role
from bot.storage.base import to_json

write = json.JSONEncoder(ensure_ascii=False).encode


class Mode(str, enum.Enum):
    ON = "on"


@dataclasses.dataclass
class Point:
    x: int = 1


@pytest.mark.parametrize(
    "value",
    [
        InboundMessage(
            "telegram", "1", "2", "héllo \x00 🙂", "3", context={"chat_id": 1}
        ).to_dict(),
        Message(Role.USER, "hi").to_dict(),
        [{"text": "part", "entities": [{"type": "bold", "offset": 0, "length": 4}]}],
        {1: "int key", None: "null key", 2.5: "float key"},  # orjson refuses: json writes
        {"big": 2**70, "small": -(2**70)},
        {"surrogate": "\ud800"},
        {Mode.ON: Mode.ON, "floats": [-0.0, 1e-05, 1e300, 0.1]},
        (1, (2, 3)),
    ],
)
def test_reads_back_as_json_wrote_it(value: Any) -> None:
    assert repr(json.loads(to_json(value))) == repr(json.loads(write(value)))


@pytest.mark.parametrize("value", [Point(), datetime.datetime(2026, 1, 1), {"x": object()}])
def test_refuses_what_json_refuses(value: Any) -> None:
    with pytest.raises(TypeError):
        to_json(value)
