"""The contract between the core and a channel, and how channels are found.

A channel owns how its replies look and move. It declares that once, in
``ChannelTraits`` (its length limit, how tool results are formatted, whether
reasoning is shown, whether it can stream, its default queue mode), and its
sink renders and sends: the core never names a channel.

Channels are discovered through the ``chatlane.channels`` entry point group
(see ``pyproject.toml``), so the core never imports one and a third party can
ship its own; its config section (``channels.<name>``) is validated by the
channel's own ``config_model``.

A channel class offers ``from_env(host, env)``: the adapter when its
credentials are present, else None (the channel is off). ``describe``
explains the state for ``chatlane check`` without secrets.

Data flows one way: channel -> ``InboundMessage`` -> inbox -> lane -> runtime
-> events -> the channel's ``ReplyStream`` while the turn runs -> ``Reply`` ->
``ReplySink.render`` -> parts stored, then sent one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aiohttp import web

from bot.config import ChannelConfig
from bot.events import AgentEvent, EventType
from bot.formatting.tool_result import FormatMode
from bot.inbound import InboundMessage, JSONPart
from bot.registry import load_entry_points

if TYPE_CHECKING:
    from bot.config import Config
    from bot.dispatch import Dispatcher
    from bot.runtime import AgentRuntime
    from bot.streaming import LiveMemory

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatlane.channels"


@dataclass(frozen=True, slots=True)
class ChannelTraits:
    """What a channel declares about its replies; the core reads these, never its name.

    - ``limit``: the longest message the platform takes, in its own units (None: none).
    - ``tool_format``: how tool results are formatted when shown in full.
    - ``shows_reasoning``: whether reasoning is shown when the thinking mode asks
      for it (``channels.<name>.show_reasoning`` overrides).
    - ``streams``: whether the channel can show a reply while it is written
      (``channels.<name>.streaming: false`` turns it off).
    - ``stream_every``: seconds between visible updates while streaming, inside the
      platform's rate limits (``channels.<name>.stream_every`` overrides).
    - ``queue_mode``: the channel's default queue mode (None: ``agent.queuing.mode``;
      ``channels.<name>.queue_mode`` overrides).
    """

    limit: int | None = None
    tool_format: FormatMode = FormatMode.MARKDOWN
    shows_reasoning: bool = True
    streams: bool = False
    stream_every: float = 1.0
    queue_mode: str | None = None


DEFAULT_TRAITS = ChannelTraits()


class ReplyKind(str, Enum):
    ANSWER = "answer"  # the model's answer to a turn
    COMMAND = "command"  # a chat command's answer (/status...)
    ERROR = "error"  # the turn failed; ``text`` says why, in plain words


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished reply, before the channel renders it.

    ``text`` is Markdown; ``tools`` the tool results as displayed
    (``agent.show_tool_results``), in order; ``reasoning`` is set only when it
    is to be shown with the reply (thinking mode ``on`` and a channel that
    shows reasoning).
    """

    text: str = ""
    reasoning: str | None = None
    tools: tuple[str, ...] = ()
    kind: ReplyKind = ReplyKind.ANSWER
    #: What the channel's stream left on the platform (``ReplyStream.close``), e.g. the
    #: id of the message it kept editing: ``render`` turns it into parts that finish
    #: that message instead of sending the reply again. JSON-able: it is stored.
    live: dict[str, Any] | None = None

    @property
    def markdown(self) -> str:
        """Tool results, then the answer: what a channel that did not stream shows."""
        return "\n\n".join([*self.tools, self.text]).strip()

    def __bool__(self) -> bool:
        return bool(self.text.strip() or self.reasoning or self.tools)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How the dispatcher wants a turn's reply streamed on a channel.

    ``live``: show the reply while it is written (the channel streams and
    ``channels.<name>.streaming`` is not false); ``every``: seconds between visible
    updates; ``memory``: where a stream keeps what it left on the platform, so the
    next attempt after a crash (``resumed``) finishes that message instead of
    starting another.
    """

    show_reasoning: bool = True
    live: bool = False
    every: float = 1.0
    memory: LiveMemory | None = None
    resumed: bool = False  # an earlier attempt at this reply may have left something


class ReplyStream(Protocol):
    """A reply while its turn runs: every ``AgentEvent`` of the turn, in order, then ``close``.

    A channel that streams shows the text so far, reasoning and tool results as
    they come; one that does not may still send streamed reasoning ahead of
    the answer. The finished reply is delivered afterwards through ``render``
    and ``send_part`` (stored first, so a restart completes it). ``close``
    returns what the stream left on the platform (``Reply.live``), or None."""

    async def feed(self, event: AgentEvent) -> None: ...

    async def close(self) -> dict[str, Any] | None: ...


class ReplySink(Protocol):
    """What a channel gives the dispatcher to answer its messages."""

    name: str
    traits: ChannelTraits

    def render(self, reply: Reply) -> list[JSONPart]:
        """The reply as the parts to send, in order, each within the platform's limit."""
        ...

    async def send_part(self, message: InboundMessage, part: JSONPart) -> None:
        """Send one part; wait out rate limits; fall back to plain text on a format rejection."""
        ...

    async def notify(self, message: InboundMessage, text: str) -> None:
        """Send a short plain notice (refusals, queue overflow, errors)."""
        ...

    async def typing(self, message: InboundMessage) -> None:
        """Show that the bot is working, where the platform can."""
        ...

    def open_stream(self, message: InboundMessage, options: StreamOptions) -> ReplyStream:
        """A consumer for the events of the turn that answers ``message``."""
        ...

    async def settled(self, message: InboundMessage) -> None:
        """Nothing more will be sent for ``message``: answered, answered together with
        a later message, refused, or given up on."""
        ...


class Sink:
    """A base for sinks: no typing signal, no streaming, reasoning sent ahead of the answer.

    Subclasses set ``name`` and ``traits`` and implement ``render``,
    ``send_part`` and ``notify``; they override ``open_stream`` to stream.
    """

    name: str = ""
    traits: ChannelTraits = DEFAULT_TRAITS

    def render(self, reply: Reply) -> list[JSONPart]:
        raise NotImplementedError

    async def send_part(self, message: InboundMessage, part: JSONPart) -> None:
        raise NotImplementedError

    async def notify(self, message: InboundMessage, text: str) -> None:
        raise NotImplementedError

    async def typing(self, message: InboundMessage) -> None:
        return None

    def open_stream(self, message: InboundMessage, options: StreamOptions) -> ReplyStream:
        return ReasoningFirst(self, message, show_reasoning=options.show_reasoning)

    async def settled(self, message: InboundMessage) -> None:
        return None


class ReasoningFirst:
    """The stream of a channel that cannot edit what it sent: reasoning streamed by the
    model (thinking mode ``stream``) goes out as its own message before the answer."""

    def __init__(self, sink: ReplySink, message: InboundMessage, *, show_reasoning: bool) -> None:
        self.sink = sink
        self.message = message
        self.show_reasoning = show_reasoning
        self._reasoning: list[str] = []

    async def feed(self, event: AgentEvent) -> None:
        if not self.show_reasoning:
            return
        if event.type is EventType.THINKING and event.data.get("mode") == "stream":
            self._reasoning.append(event.data["content"])
        elif event.type is EventType.TEXT and self._reasoning:
            await self._flush()

    async def close(self) -> dict[str, Any] | None:
        if self._reasoning:
            await self._flush()
        return None

    async def _flush(self) -> None:
        text = "".join(self._reasoning).strip()
        self._reasoning.clear()
        if text:
            for part in self.sink.render(Reply(reasoning=text)):
                await self.sink.send_part(self.message, part)


@dataclass
class ChannelHost:
    """What an adapter gets from the process: the runtime, dispatcher and config."""

    runtime: AgentRuntime
    dispatcher: Dispatcher
    config: Config
    public_url: str | None = None
    draining: bool = False


@dataclass(frozen=True, slots=True)
class ChannelState:
    name: str
    enabled: bool
    detail: str


class ChannelAdapter(Protocol):
    name: ClassVar[str]
    traits: ClassVar[ChannelTraits]
    config_model: ClassVar[type[ChannelConfig]]

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> ChannelAdapter | None: ...

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState: ...

    def add_routes(self, app: web.Application) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def adapter_classes() -> list[Any]:
    """Every installed channel class, in a stable order."""
    return list(_loaded().values())


def channel_class(name: str) -> Any | None:
    """The installed channel class called ``name``, or None."""
    return _loaded().get(name)


def traits_for(name: str | None) -> ChannelTraits:
    """What the channel ``name`` declares (the defaults when it is not installed)."""
    found = channel_class(name) if name else None
    return getattr(found, "traits", DEFAULT_TRAITS)


def _loaded() -> Mapping[str, Any]:
    return load_entry_points(ENTRY_POINT_GROUP)


def mask(secret: str | None) -> str:
    """Show that a secret is set without showing it."""
    if not secret:
        return "(not set)"
    if len(secret) <= 8:
        return "****"
    return f"****{secret[-4:]}"
