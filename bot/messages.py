"""The provider-neutral transcript message.

A session's transcript is a list of ``Message``. Providers translate it to
their wire format; compaction chooses which of them are sent; storage keeps
all of them.

Roles:
- ``system``: instructions (one, first, when present).
- ``user``: what a person wrote, with the images they sent (``attachments``).
- ``assistant``: the model's answer; may carry ``tool_calls`` and native
  ``thinking`` (with its provider ``thinking_signature``, which Anthropic
  needs back on the next request of a tool loop).
- ``tool``: one tool result, answering ``tool_call_id``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Role(str, Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attachment:
    """An image in a transcript message, stored once by its content (``media_id``, the
    sha256 of the bytes; see ``bot.media``). ``data`` holds the bytes only while a
    request is built; it is never stored with the transcript."""

    media_id: str
    mime: str
    name: str = ""
    data: bytes | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"media_id": self.media_id, "mime": self.mime, "name": self.name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attachment:
        return cls(str(data["media_id"]), str(data["mime"]), str(data.get("name") or ""))


def image_note(attachment: Attachment, *, vision: bool = True) -> str:
    """What a model is told in place of an image it is not sent."""
    name = f" ({attachment.name})" if attachment.name else ""
    if not vision:
        return f"[The user sent an image{name}; this model cannot see images.]"
    return f"[The user sent an image{name} earlier; it is no longer shown.]"


IMAGE_TOKENS = 1600  # what an image counts in a request's budget (about 1.15 megapixels)


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False
    thinking: str = ""
    thinking_signature: str | None = None
    pinned: bool = False
    created_at: float = field(default_factory=time.time)
    id: int | None = None
    attachments: tuple[Attachment, ...] = ()  # images (user messages)

    def with_id(self, message_id: int) -> Message:
        # Every field by position: dataclasses.replace costs several times more, per message
        # of every turn.
        return Message(
            self.role,
            self.content,
            self.tool_calls,
            self.tool_call_id,
            self.name,
            self.is_error,
            self.thinking,
            self.thinking_signature,
            self.pinned,
            self.created_at,
            message_id,
            self.attachments,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        if self.is_error:
            data["is_error"] = True
        if self.thinking:
            data["thinking"] = self.thinking
        if self.thinking_signature:
            data["thinking_signature"] = self.thinking_signature
        if self.pinned:
            data["pinned"] = True
        if self.attachments:
            data["attachments"] = [a.to_dict() for a in self.attachments]
        data["created_at"] = self.created_at
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], message_id: int | None = None) -> Message:
        return cls(
            role=Role(data["role"]),
            content=data.get("content", ""),
            tool_calls=tuple(
                ToolCall(c["id"], c["name"], c.get("arguments") or {})
                for c in data.get("tool_calls", ())
            ),
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
            is_error=bool(data.get("is_error", False)),
            thinking=data.get("thinking", ""),
            thinking_signature=data.get("thinking_signature"),
            pinned=bool(data.get("pinned", False)),
            created_at=float(data.get("created_at", time.time())),
            id=message_id,
            attachments=tuple(Attachment.from_dict(a) for a in data.get("attachments", ())),
        )


def system(text: str) -> Message:
    return Message(Role.SYSTEM, text)


def user(text: str) -> Message:
    return Message(Role.USER, text)


def assistant(text: str, tool_calls: tuple[ToolCall, ...] = ()) -> Message:
    return Message(Role.ASSISTANT, text, tool_calls=tool_calls)


def tool_result(call_id: str, name: str, content: str, *, is_error: bool = False) -> Message:
    return Message(Role.TOOL, content, tool_call_id=call_id, name=name, is_error=is_error)
