"""Files sent from the web chat (DESIGN 7.3).

The page sends a file with its message: ``POST /api/chat`` as
``multipart/form-data`` with the fields ``session_id``, ``text`` (the caption,
may be empty) and one ``file``. The file is streamed into the media store
(``bot.media.MediaStore``, the one the dispatcher reads; with PostgreSQL, in the
database too, where a process on another machine reads it) while it is read:
past ``agent.media.max_bytes`` the request is cut with 413 and nothing is kept.
Only then is the message stored and its turn started, so the attachment is on
disk before the stream begins; the message names it by its sha256
(``MediaPart.media_id``), never by a URL. A message that is not taken
(``allow_from``, the rate limit, a store that is down) takes back the file it
added, so refused uploads cannot fill the disk.

A body that stalls for ``STALL`` seconds is cut (408), as is one that is not
in after ``DEADLINE``; at most ``MOST_AT_ONCE`` uploads are read at once.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bot.inbound import InboundMessage, MediaPart
from bot.media import MediaError, MediaFetch, MediaStore, too_big

log = logging.getLogger(__name__)

STALL = 10.0  # seconds without a byte before an upload is cut
DEADLINE = 300.0  # seconds for a whole upload (10 MB at 270 kbit/s)
MOST_AT_ONCE = 16
MAX_FIELD = 80_000  # bytes of a text field (20,000 characters of UTF-8)
FORM_SLACK = 2 * MAX_FIELD + 16 * 1024  # the fields and the parts' headers, beside the file
CHUNK = 64 * 1024
GONE = "That upload is no longer here (the server was reset); please send it again."

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[web.StreamResponse]])


def reads_own_body(handler: Handler) -> Handler:
    """Mark a route handler that reads (and times) its request body itself: the
    server's body-reading middleware leaves its requests alone."""
    handler.reads_own_body = True  # type: ignore[attr-defined]
    return handler


class UploadRefused(Exception):
    """An upload the server will not take; ``response`` answers it and closes the
    connection without reading the rest of the body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text

    def response(self, request: web.Request) -> web.Response:
        request.content.feed_eof()  # else aiohttp lingers reading what is left
        answer = web.Response(status=self.status, text=self.text)
        answer.force_close()
        return answer


@dataclass(frozen=True, slots=True)
class Upload:
    """A message as the page sent it; ``fresh``: media ids this upload added to the store
    (removed again when the message is not taken)."""

    session: str
    text: str
    parts: tuple[MediaPart, ...] = ()
    fresh: tuple[str, ...] = ()


class Uploads:
    """Reads the web chat's multipart messages into the media store."""

    def __init__(self, store: MediaStore, *, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.reading = 0

    async def read(self, request: web.Request) -> Upload:
        """A multipart message, its file stored."""
        declared = request.content_length
        if declared is not None and declared > self.max_bytes + FORM_SLACK:
            raise UploadRefused(413, str(too_big(self.max_bytes)))
        if self.reading >= MOST_AT_ONCE:
            raise UploadRefused(503, "too many uploads at once; try again shortly")
        self.reading += 1
        try:
            async with asyncio.timeout(DEADLINE):
                return await self._read(request)
        except TimeoutError:
            log.warning("a web upload stalled or took too long; answered 408")
            raise UploadRefused(408, "the upload did not arrive in time") from None
        finally:
            self.reading -= 1

    async def _read(self, request: web.Request) -> Upload:
        fresh: list[str] = []
        try:
            return await self._form(request, fresh)
        except BaseException:  # refused after its file was stored: no message names it
            await self.discard(Upload("", "", (), tuple(fresh)))
            raise

    async def _form(self, request: web.Request, fresh: list[str]) -> Upload:
        fields: dict[str, str] = {}
        parts: list[MediaPart] = []
        try:
            reader = await request.multipart()
            while (part := await asyncio.wait_for(reader.next(), STALL)) is not None:
                if not isinstance(part, BodyPartReader):
                    raise UploadRefused(400, "nested multipart bodies are not taken")
                if part.name == "file" and not parts:
                    parts.append(await self._file(part, fresh))
                elif part.name in ("session_id", "text") and part.name not in fields:
                    fields[part.name] = await _field(part)
                else:
                    raise UploadRefused(400, f"unexpected form field {str(part.name)[:40]!r}")
        except (ValueError, HttpProcessingError):  # a broken boundary or part header
            raise UploadRefused(400, "a malformed multipart body") from None
        session, text = fields.get("session_id", ""), fields.get("text", "")
        if not session or len(session) > 200:
            raise UploadRefused(400, "session_id must be a non-empty string")
        if not parts and not text.strip():
            raise UploadRefused(400, "send a file, a text, or both")
        return Upload(session, text, tuple(parts), tuple(fresh))

    async def discard(self, upload: Upload) -> None:
        """Remove what an upload added, when its message was not taken (refused by
        allow_from or the rate limit, or the store was down): no message names it."""
        for media_id in upload.fresh:
            try:
                await self.store.remove(media_id)
            except Exception as error:  # the store down: left behind, nothing worse
                log.warning("could not remove a refused upload: %s", type(error).__name__)

    async def _file(self, part: BodyPartReader, fresh: list[str]) -> MediaPart:
        label = part.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()[:100]
        with self.store.writer() as writer:
            while chunk := await asyncio.wait_for(part.read_chunk(CHUNK), STALL):
                writer.write(chunk)
                if writer.size > self.max_bytes:
                    raise UploadRefused(413, str(too_big(self.max_bytes)))
            if writer.size == 0:
                raise UploadRefused(400, "the file is empty")
            stored = await writer.commit()
        if stored.new:
            fresh.append(stored.media_id)
        return MediaPart(
            _kind(label),
            mime=label,
            size=stored.size,
            name=_file_name(part.filename or ""),
            media_id=stored.media_id,
        )


async def _field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await asyncio.wait_for(part.read_chunk(CHUNK), STALL):
        data += chunk
        if len(data) > MAX_FIELD:
            raise UploadRefused(400, f"the {part.name} field is too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UploadRefused(400, f"the {part.name} field is not UTF-8") from None


def _kind(label: str) -> str:
    """What the browser says it is; the media core decides from the bytes."""
    family = label.partition("/")[0]
    return {"image": "image", "audio": "audio", "video": "video"}.get(family, "document")


def _file_name(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    shown = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return shown[:120]


async def media_fetch(message: InboundMessage, part: MediaPart) -> MediaFetch:
    """The web "platform" serves nothing: an upload is read from the media store, where it
    was written before its message was stored. Asked here only when it is not there any
    more (a data directory wiped by a restart, without PostgreSQL keeping a copy): the
    person is asked to send it again."""
    raise MediaError(GONE)
