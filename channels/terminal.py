"""``chatlane chat``: talk to the bot in the terminal, with the same runtime as every channel.

Each line goes through the dispatcher like any channel's message (commands,
the inbox, the chat's lane). Replies stream as they arrive; reasoning
(``/think stream``) is dimmed; tool results print as plain text. Ctrl-D or
``/quit`` leaves.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar, TextIO

from bot.channel import (
    ChannelHost,
    ChannelState,
    ChannelTraits,
    Reply,
    ReplyKind,
    ReplyStream,
    Sink,
    StreamOptions,
)
from bot.config import Config
from bot.dispatch import Dispatcher, Outcome
from bot.events import AgentEvent, EventType
from bot.formatting import FormatMode
from bot.inbound import InboundMessage, JSONPart
from bot.runtime import AgentRuntime
from bot.wiring import wire

DIM, RESET, RED = "\x1b[2m", "\x1b[0m", "\x1b[31m"
CHAT = "local"

TRAITS = ChannelTraits(
    tool_format=FormatMode.PLAIN, shows_reasoning=True, streams=True, queue_mode="followup"
)


class TerminalSink(Sink):
    """Prints a reply as it streams; tells the prompt loop when a message is settled."""

    name = "terminal"
    traits = TRAITS

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.color = out.isatty()
        self.settled_ids: asyncio.Queue[str] = asyncio.Queue()
        self.streamed: set[str] = set()  # messages whose answer was printed as it came

    def style(self, code: str, value: str) -> str:
        return f"{code}{value}{RESET}" if self.color else value

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def render(self, reply: Reply) -> list[JSONPart]:
        return [{"kind": reply.kind.value, "text": reply.markdown, "reasoning": reply.reasoning}]

    async def send_part(self, message: InboundMessage, part: JSONPart) -> None:
        key = message.dedupe_key
        if key in self.streamed:  # shown as it came; the reply only ends the line
            self.streamed.discard(key)
            self.write("\n")
            return
        if part.get("reasoning"):
            self.write(self.style(DIM, "[reasoning] " + part["reasoning"]) + "\n")
        text = part["text"]
        self.write(
            (self.style(RED, text) if part["kind"] == ReplyKind.ERROR.value else text) + "\n"
        )

    async def notify(self, message: InboundMessage, text: str) -> None:
        self.write(self.style(RED, text) + "\n")

    def open_stream(self, message: InboundMessage, options: StreamOptions) -> ReplyStream:
        if not options.live:  # channels.terminal.streaming: false: the answer comes whole
            return super().open_stream(message, options)
        return _TerminalStream(self, message, options.show_reasoning)

    async def settled(self, message: InboundMessage) -> None:
        self.settled_ids.put_nowait(message.message_id)


class _TerminalStream:
    def __init__(self, sink: TerminalSink, message: InboundMessage, show_reasoning: bool) -> None:
        self.sink = sink
        self.key = message.dedupe_key
        self.show_reasoning = show_reasoning
        self.in_reasoning = False

    async def feed(self, event: AgentEvent) -> None:
        sink, data = self.sink, event.data
        if event.type is EventType.THINKING and self.show_reasoning:
            if not self.in_reasoning:
                sink.write(sink.style(DIM, "[reasoning] "))
                self.in_reasoning = True
            sink.write(sink.style(DIM, data["content"]))
            return
        if self.in_reasoning and event.type is EventType.TEXT:
            sink.write("\n")
            self.in_reasoning = False
        if event.type is EventType.TEXT:
            sink.write(data["delta"])
            sink.streamed.add(self.key)
        elif event.type is EventType.TOOL_RESULT and data.get("display"):
            sink.write("\n" + sink.style(DIM, data["display"]) + "\n")
        elif event.type is EventType.FAILOVER:
            sink.write(sink.style(DIM, f"\n[switched from {data['from']} to {data['to']}]\n"))

    async def close(self) -> dict[str, Any] | None:
        return None


class TerminalChannel:
    """Served by ``chatlane chat`` alone: no routes, nothing to start."""

    name: ClassVar[str] = "terminal"
    traits: ClassVar[ChannelTraits] = TRAITS

    def __init__(self, out: TextIO) -> None:
        self.sink = TerminalSink(out)

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> None:
        return None  # not served by `chatlane serve`; `chatlane chat` runs it

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        return ChannelState("terminal", True, "run `chatlane chat`")

    def add_routes(self, app: object) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @classmethod
    async def run_terminal(
        cls,
        config: Config,
        *,
        runtime: AgentRuntime | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> int:
        """Wire the process with this channel alone and chat until Ctrl-D or /quit."""
        terminal = cls(stdout or sys.stdout)
        wiring = wire(config, runtime=runtime, process=True, only=())
        wiring.add(terminal)
        await wiring.start()
        sink, runtime = terminal.sink, wiring.runtime
        try:
            sink.write(
                f"chatlane chat: model {runtime.model}. /help for commands, Ctrl-D to quit.\n"
            )
            if runtime.models.demo_reason:
                sink.write(f"Note: {runtime.models.demo_reason}.\n")
            await _prompt_loop(wiring.dispatcher, sink, stdin or sys.stdin)
        finally:
            await wiring.stop()
        return 0


async def _prompt_loop(dispatcher: Dispatcher, sink: TerminalSink, stdin: TextIO) -> None:
    while True:
        if stdin.isatty():
            sink.write("> ")
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        message = InboundMessage("terminal", CHAT, CHAT, text, message_id=f"{time.time_ns()}")
        if await dispatcher.submit(message) in (Outcome.ACCEPTED, Outcome.REFUSED):
            # Settled once answered (or refused): the next prompt waits for that.
            while await sink.settled_ids.get() != message.message_id:
                pass
