"""The one inbound message type every channel produces.

What a channel offers back (its traits, its reply sink and stream) is in
``bot.channel``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

JSONPart = Any  # a reply part as the channel renders it: str, or a JSON-able dict


@dataclass(frozen=True, slots=True)
class MediaPart:
    """A file that came with a message, as its channel saw it; the bytes are fetched
    later, from the platform itself (``bot.media``), never from a URL in the text.

    - ``kind``: ``image``, ``voice``, ``audio``, ``video``, ``document``, ``sticker`` or
      ``animation`` (what the platform says; the bytes decide what is done with it;
      stickers and animations are refused without a download).
    - ``mime``, ``size``, ``name``: as the platform labels it (checked, not trusted).
    - ``url``: where the platform serves the bytes; ``ref``: a platform id the
      channel turns into a URL when fetching (Telegram ``file_id``).
    - ``media_id``: set when the bytes are stored already (web chat uploads).
    """

    kind: str
    mime: str = ""
    size: int | None = None
    name: str = ""
    url: str = ""
    ref: str = ""
    media_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mime": self.mime,
            "size": self.size,
            "name": self.name,
            "url": self.url,
            "ref": self.ref,
            "media_id": self.media_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaPart:
        size = data.get("size")
        return cls(
            kind=str(data.get("kind") or "document"),
            mime=str(data.get("mime") or ""),
            size=int(size) if size is not None else None,
            name=str(data.get("name") or ""),
            url=str(data.get("url") or ""),
            ref=str(data.get("ref") or ""),
            media_id=str(data.get("media_id") or ""),
        )


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message from a person, normalized.

    - ``channel``: ``telegram``, ``slack``, ``sms``, ``discord``, ``web``, ``terminal``.
    - ``chat_id``: where the reply goes (Telegram chat, Slack channel, phone number...).
    - ``sender_id``: who wrote it (``allow_from`` and rate limits key on it).
    - ``message_id``: the platform's id, for deduplication (update_id, event_id, MessageSid...).
    - ``thread_id``: a thread to reply in (Slack ``thread_ts``), when there is one.
    - ``group``: written in a chat with several people (not a direct message).
    - ``context``: what the channel needs to reply (JSON-able; stored in the inbox).
    - ``attachments``: photos, voice notes and files sent with it; ``text`` is their caption.
    """

    channel: str
    chat_id: str
    sender_id: str
    text: str
    message_id: str
    thread_id: str | None = None
    sender_name: str | None = None
    timestamp: float = field(default_factory=time.time)
    context: dict[str, Any] = field(default_factory=dict)
    group: bool = False
    attachments: tuple[MediaPart, ...] = ()

    @property
    def session_id(self) -> str:
        if self.thread_id:
            return f"{self.channel}:{self.chat_id}:{self.thread_id}"
        return f"{self.channel}:{self.chat_id}"

    @property
    def dedupe_key(self) -> str:
        return f"{self.channel}:{self.message_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "chat_id": self.chat_id,
            "sender_id": self.sender_id,
            "text": self.text,
            "message_id": self.message_id,
            "thread_id": self.thread_id,
            "sender_name": self.sender_name,
            "timestamp": self.timestamp,
            "context": self.context,
            "group": self.group,
            "attachments": [part.to_dict() for part in self.attachments],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InboundMessage:
        return cls(
            channel=data["channel"],
            chat_id=data["chat_id"],
            sender_id=data["sender_id"],
            text=data["text"],
            message_id=data["message_id"],
            thread_id=data.get("thread_id"),
            sender_name=data.get("sender_name"),
            timestamp=float(data.get("timestamp") or time.time()),
            context=dict(data.get("context") or {}),
            group=bool(data.get("group")),
            attachments=tuple(MediaPart.from_dict(p) for p in data.get("attachments") or ()),
        )
