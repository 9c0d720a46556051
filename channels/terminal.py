"""``chatlane chat``: talk to the bot in the terminal, with the same runtime as every channel.

Replies stream as they arrive; reasoning (``/think stream``) is dimmed; tool
results print as plain text. Chat commands work here too. Ctrl-D or
``/quit`` leaves.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, TextIO

from bot.channel import ChannelHost, ChannelState
from bot.commands import handle_command
from bot.config import Config
from bot.events import EventType
from bot.runtime import AgentRuntime

DIM, RESET, RED = "\x1b[2m", "\x1b[0m", "\x1b[31m"
SESSION = "terminal:local"


class TerminalChannel:
    name: ClassVar[str] = "terminal"

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> None:
        return None  # not served over HTTP; `chatlane chat` runs it

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        return ChannelState("terminal", True, "run `chatlane chat`")

    @classmethod
    async def run_terminal(
        cls,
        config: Config,
        *,
        runtime: AgentRuntime | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> int:
        stdin = stdin or sys.stdin
        out = stdout or sys.stdout
        color = out.isatty()
        runtime = runtime or AgentRuntime(config=config, demo_when_unconfigured=True)
        async with runtime:
            out.write(
                f"chatlane chat: model {runtime.model}. /help for commands, Ctrl-D to quit.\n"
            )
            if runtime.models.demo_reason:
                out.write(f"Note: {runtime.models.demo_reason}.\n")
            out.flush()
            while True:
                if stdin.isatty():
                    out.write("> ")
                    out.flush()
                line = await asyncio.to_thread(stdin.readline)
                if not line:
                    break
                text = line.strip()
                if not text:
                    continue
                if text in ("/quit", "/exit"):
                    break
                answer = await handle_command(runtime, SESSION, text)
                if answer is not None:
                    out.write(answer + "\n")
                    out.flush()
                    continue
                await _turn(runtime, text, out, color)
        return 0


async def _turn(runtime: AgentRuntime, text: str, out: TextIO, color: bool) -> None:
    def style(code: str, value: str) -> str:
        return f"{code}{value}{RESET}" if color else value

    in_thinking = False
    async for event in runtime.run(SESSION, text, channel="terminal"):
        data: dict[str, Any] = event.data
        if event.type is EventType.THINKING:
            if not in_thinking:
                out.write(style(DIM, "[reasoning] "))
                in_thinking = True
            out.write(style(DIM, data["content"]))
        elif event.type is EventType.TEXT:
            if in_thinking:
                out.write("\n")
                in_thinking = False
            out.write(data["delta"])
        elif event.type is EventType.TOOL_RESULT and data.get("display"):
            out.write("\n" + style(DIM, data["display"]) + "\n")
        elif event.type is EventType.FAILOVER:
            out.write(style(DIM, f"\n[switched from {data['from']} to {data['to']}]\n"))
        elif event.type is EventType.ERROR:
            out.write(style(RED, data["message"]))
        elif event.type is EventType.DONE:
            out.write("\n")
        out.flush()
