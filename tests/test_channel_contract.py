"""A third-party channel: one module plus its entry point, configured and served like ours."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot import config as config_module
from bot import registry
from bot.channel import ChannelHost, ChannelState, ChannelTraits, Reply, Sink, traits_for
from bot.config import ChannelConfig, Config, ConfigError, load_config
from bot.formatting import FormatMode, render_plain, split_message
from bot.inbound import InboundMessage
from bot.runtime import AgentRuntime
from bot.server import WIRING_KEY, create_app
from bot.storage import MemoryStorage

TRAITS = ChannelTraits(limit=40, tool_format=FormatMode.PLAIN, shows_reasoning=False)


class PagerConfig(ChannelConfig):
    signature: str = ""


class PagerSink(Sink):
    name = "pager"
    traits = TRAITS

    def __init__(self, signature: str) -> None:
        self.signature = signature
        self.sent: list[str] = []
        self.settled_ids: list[str] = []
        self.changed = asyncio.Event()

    def render(self, reply: Reply) -> list[Any]:
        return split_message(render_plain(reply.markdown) + self.signature, 40)

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        self.sent.append(part)

    async def notify(self, message: InboundMessage, text: str) -> None:
        self.sent.append(text)

    async def settled(self, message: InboundMessage) -> None:
        self.settled_ids.append(message.message_id)
        self.changed.set()


class PagerChannel:
    name: ClassVar[str] = "pager"
    traits: ClassVar[ChannelTraits] = TRAITS
    config_model: ClassVar[type[ChannelConfig]] = PagerConfig

    def __init__(self, host: ChannelHost, signature: str) -> None:
        self.host = host
        self.sink = PagerSink(signature)

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> PagerChannel | None:
        if not env.get("PAGER_TOKEN"):
            return None
        settings = host.config.channel("pager")
        assert isinstance(settings, PagerConfig)
        return cls(host, settings.signature)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        return ChannelState("pager", bool(env.get("PAGER_TOKEN")), "test pager")

    def add_routes(self, app: web.Application) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.fixture
def pager_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def installed(*, group: str) -> list[EntryPoint]:
        found = list(entry_points(group=group))
        if group == "chatlane.channels":
            found.append(EntryPoint("pager", f"{__name__}:PagerChannel", group))
        return found

    monkeypatch.setattr(registry, "entry_points", installed)
    registry.load_entry_points.cache_clear()
    config_module._channel_defaults.cache_clear()
    yield
    registry.load_entry_points.cache_clear()
    config_module._channel_defaults.cache_clear()


def test_a_third_party_section_is_validated_by_its_own_schema(pager_installed: None) -> None:
    config = load_config(data={"channels": {"pager": {"signature": " --p", "allow_from": [1]}}})
    pager = config.channel("pager")
    assert isinstance(pager, PagerConfig)
    assert pager.signature == " --p" and pager.allow_from == ("1",)
    with pytest.raises(ConfigError) as bad:
        load_config(data={"channels": {"pager": {"signture": "x"}}})
    assert "channels.pager.signture: unknown key" in str(bad.value)
    assert traits_for("pager") is TRAITS


def test_an_uninstalled_channel_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as bad:
        load_config(data={"channels": {"pager": {}}})
    assert "channels.pager: unknown channel" in str(bad.value)
    assert "telegram" in str(bad.value)  # the installed ones are listed


async def test_a_third_party_channel_is_served_and_answered(pager_installed: None) -> None:
    config = load_config(data={"channels": {"pager": {"signature": " --p"}}})
    runtime = AgentRuntime(config=config, demo_when_unconfigured=True, storage=MemoryStorage())
    app = create_app(runtime, env={"PAGER_TOKEN": "t"})
    pagers = [a for a in app[WIRING_KEY].channels if a.name == "pager"]
    assert len(pagers) == 1
    pager = pagers[0]
    async with TestServer(app):
        message = InboundMessage("pager", "p1", "p1", "hello **pager**", message_id="m1")
        await pager.host.dispatcher.submit(message)
        async with asyncio.timeout(10):
            while "m1" not in pager.sink.settled_ids:
                pager.sink.changed.clear()
                await pager.sink.changed.wait()
    reply = "".join(pager.sink.sent)
    assert "You said: hello pager" in reply and "**" not in reply  # plain, by its renderer
    assert all(len(part) <= 40 for part in pager.sink.sent) and len(pager.sink.sent) > 1
    assert reply.endswith(" --p")
