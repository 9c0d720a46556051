"""The offline demo model: no credentials, no network, and it says what it is.

It streams a short answer in small pieces (so the web chat visibly streams),
calls ``current_time`` or ``list_files`` when asked about the time or files
and those tools are offered, and emits a little reasoning when thinking is on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from bot.messages import Role, ToolCall
from bot.providers.base import (
    Delta,
    ModelRequest,
    ProviderInfo,
    StopDelta,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    UsageDelta,
)
from bot.providers.kind import ProviderKind

INTRO = (
    "I'm chatlane's offline demo model, not an AI: no API key is configured, so I "
    "can only echo you and show the features. Set ANTHROPIC_API_KEY or OPENAI_API_KEY "
    "(or configure a provider) to talk to a real model."
)


class DemoProvider:
    def __init__(self, info: ProviderInfo, *, timeout: float = 120.0) -> None:
        self.info = info

    async def stream(
        self, request: ModelRequest, api_key: str | None
    ) -> AsyncGenerator[Delta, None]:
        messages = request.messages
        last = messages[-1] if messages else None
        last_user = next((m for m in reversed(messages) if m.role is Role.USER), None)
        question = last_user.content.strip() if last_user else ""
        yield UsageDelta(input_tokens=sum(len(m.content) // 4 + 1 for m in messages))
        if request.thinking_budget:
            for piece in ("The user wrote ", f"{len(question)} characters; ", "I will echo them."):
                yield ThinkingDelta(piece)
        tools = {t.name for t in request.tools}
        if last is not None and last.role is Role.TOOL:
            answer = f"The `{last.name}` tool answered:\n\n```\n{last.content[:1500]}\n```"
        else:
            call = _tool_for(question, tools)
            if call is not None:
                yield ToolCallDelta(call)
                yield StopDelta("tool_use")
                return
            answer = f"{INTRO}\n\nYou said: {question}" if question else INTRO
        for piece in re.findall(r"\S+\s*|\s+", answer):
            await asyncio.sleep(0)
            yield TextDelta(piece)
        yield UsageDelta(output_tokens=len(answer) // 4 + 1)
        yield StopDelta("end")

    async def aclose(self) -> None:
        return None


def _tool_for(question: str, tools: set[str]) -> ToolCall | None:
    lowered = question.lower()
    if "current_time" in tools and re.search(r"\b(time|date|clock)\b", lowered):
        return ToolCall("demo_call_time", "current_time", {})
    if "list_files" in tools and re.search(r"\b(files?|folder|workspace)\b", lowered):
        return ToolCall("demo_call_files", "list_files", {"path": "."})
    return None


KIND = ProviderKind("demo", DemoProvider, needs_key=False)
