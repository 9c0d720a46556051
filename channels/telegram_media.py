"""Telegram media in: what came with a message, as ``MediaPart``s, and where to fetch it.

The parts are read from the update's own JSON (the webhook's fast path, like
the rest of ``TelegramChannel.inbound``): a photo (the largest size within the
limits), a voice note, audio, a document, a video note (its sound, transcribed
like a voice note), a video, an animation or a sticker. Each part keeps
Telegram's ``file_id`` as ``ref``; nothing is downloaded while the update is
taken, so the webhook answers at once.

In the turn, the media core asks ``media_fetch`` for a part's URL: ``getFile``
(through the channel's PTB ``Bot``) gives the ``file_path``, served at
``{TELEGRAM_API_BASE_URL}/file/bot{token}/{file_path}``; the core then streams
it into the store under ``agent.media.max_bytes``, once.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from bot.inbound import MediaPart
from bot.media import IMAGE_MAX_BYTES, MediaError, MediaFetch, too_big
from channels.common import send_with_retries
from channels.telegram_stream import classify

log = logging.getLogger(__name__)

BOT_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API serves bots files up to 20 MB
NOT_SERVED = "I couldn't download that file from Telegram."
TOO_BIG_FOR_BOTS = "Telegram lets bots download files up to 20 MB, and that one is bigger."

# message field -> the part's kind; a message carries one of these (an animation
# also comes as a "document", so it is looked at first).
FIELDS = (
    ("sticker", "sticker"),
    ("animation", "animation"),
    ("voice", "voice"),
    ("video_note", "voice"),  # a round video message: its sound, transcribed
    ("audio", "audio"),
    ("video", "video"),
    ("document", "document"),
)
DEFAULT_MIME = {"voice": "audio/ogg", "video_note": "video/mp4", "sticker": "image/webp"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _size(value: Any) -> int | None:
    """A declared ``file_size``: absent, or a JSON integer (anything else is malformed)."""
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ValueError("file_size must be a non-negative integer")
    return value


def _file_id(file: Any) -> str:
    if not isinstance(file, dict) or not isinstance(file.get("file_id"), str):
        raise ValueError("a file without a file_id")
    return str(file["file_id"])


def best_photo(sizes: Any, max_bytes: int) -> dict[str, Any]:
    """The largest size of a photo within ``max_bytes`` (and what the model APIs take per
    image); when none fits, the smallest, whose size then gets the "too big" reply."""
    if not isinstance(sizes, list) or not sizes:
        raise ValueError("a photo without sizes")
    for size in sizes:
        _file_id(size)
    limit = min(max_bytes, IMAGE_MAX_BYTES)

    def area(size: dict[str, Any]) -> tuple[int, int]:
        width, height = size.get("width"), size.get("height")
        pixels = width * height if type(width) is int and type(height) is int else 0
        return pixels, _size(size.get("file_size")) or 0

    ordered: list[dict[str, Any]] = sorted(sizes, key=area)
    fitting = [s for s in ordered if (_size(s.get("file_size")) or 0) <= limit]
    return fitting[-1] if fitting else ordered[0]


def media_parts(message: dict[str, Any], max_bytes: int) -> tuple[MediaPart, ...]:
    """The file a message carries, as a part (none for a text message).
    Wrong types raise ValueError, as for the rest of the update."""
    if "photo" in message:
        photo = best_photo(message["photo"], max_bytes)
        size = _size(photo.get("file_size"))
        return (MediaPart("image", mime="image/jpeg", size=size, ref=_file_id(photo)),)
    for field, kind in FIELDS:
        file = message.get(field)
        if file is None:
            continue
        ref = _file_id(file)
        mime = _text(file.get("mime_type")) or DEFAULT_MIME.get(field, "")
        name = _text(file.get("file_name")) or _text(file.get("title"))
        if field == "video_note":
            name = "video note"
        size = _size(file.get("file_size"))
        return (MediaPart(kind, mime=mime[:100], size=size, name=name[:200], ref=ref),)
    return ()


async def fetch(bot: Bot, part: MediaPart, max_bytes: int) -> MediaFetch:
    """Where Telegram serves ``part``: ``getFile`` for its path, then the bot's file URL
    (the token is in the URL, as the Bot API wants; it goes nowhere else)."""
    if not part.ref:
        raise MediaError(NOT_SERVED)
    try:
        file = await send_with_retries(
            lambda: bot.get_file(part.ref), classify, what="telegram getFile", attempts=3
        )
    except BadRequest as error:
        log.warning("telegram getFile refused: %s", error.message)
        if "too big" in error.message.lower():
            raise MediaError(TOO_BIG_FOR_BOTS) from None
        raise MediaError(NOT_SERVED) from None
    except TelegramError as error:
        log.warning("telegram getFile failed: %s", type(error).__name__)
        raise MediaError(NOT_SERVED) from None
    if file.file_size is not None and file.file_size > max_bytes:
        raise too_big(max_bytes)
    url = file.file_path or ""
    if not url.startswith(bot.base_file_url + "/") or "/../" in url:
        log.warning("telegram getFile gave no downloadable path")  # a local Bot API server's
        raise MediaError(NOT_SERVED)
    return MediaFetch(url)
