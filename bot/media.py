"""Media in: photos, voice notes, audio and files sent to the bot.

A channel only describes what came with a message (``bot.inbound.MediaPart``:
kind, type, size, name, and where the platform serves it). Before the turn,
the dispatcher asks ``Media.prepare`` to turn those parts into model input:

- the bytes are fetched from the platform itself: the channel's sink, when it
  has ``media_fetch`` (``MediaSource``), names the URL and the credentials to
  send; a size cap holds before (the declared size, Content-Length) and during
  the download, which times out when it stalls;
- the bytes are stored once, named by their sha256 (``MediaStore``, under the
  data directory), and each fetch is recorded in the key-value store, so a
  retry after a crash does not download again; when the storage backend keeps
  media too (``MediaBlobs``: PostgreSQL), the bytes are written to it first and
  the directory is a cache of it, so they outlive a wiped disk and reach a
  process on another machine;
- the type is read from the bytes, never taken from the payload: images go to
  the model as images (``bot.messages.Attachment``), voice and audio as a
  transcript (the openai SDK's ``audio.transcriptions``), PDFs and text files
  as text; anything else gets a one-line reply saying what is supported.

Never silence: a part that cannot be used is either answered in one line (when
nothing else came with it) or noted for the model and told to the person.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import aiohttp

from bot.config import MediaConfig, data_dir
from bot.inbound import InboundMessage, MediaPart
from bot.messages import Attachment
from bot.storage.base import MediaBlobs

if TYPE_CHECKING:
    from bot.channel import ReplySink
    from bot.runtime import AgentRuntime

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
IMAGE_MAX_BYTES = 5 * 1024 * 1024  # what the model APIs take per image
MAX_TEXT_CHARS = 100_000  # of a text file or PDF, per file
MEDIA_ID = re.compile(r"^[0-9a-f]{64}$")
SUPPORTED = "photos (JPEG, PNG, GIF, WebP), voice notes and audio, PDFs and text files"
NO_TRANSCRIPTION = (
    "I can't listen to voice notes and audio here yet: transcription needs an OpenAI "
    "key (OPENAI_API_KEY, or an auth profile for the openai provider)."
)


class MediaError(Exception):
    """A part that cannot be used; ``str(error)`` is the one line the person is told."""


@dataclass(frozen=True, slots=True)
class MediaFetch:
    """Where a platform serves a file, and the headers (credentials) it needs."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@runtime_checkable
class MediaSource(Protocol):
    """A channel sink that knows how to fetch its platform's files (with its credentials).

    A sink without it gets ``part.url`` fetched with no credentials."""

    async def media_fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch: ...


@dataclass(frozen=True, slots=True)
class Stored:
    media_id: str
    size: int
    mime: str  # read from the bytes ("" when unknown)
    new: bool = False  # the store did not hold these bytes before (``MediaStore.remove``)


def sniff(head: bytes) -> str:
    """The type of a file from its first bytes ("" when not recognised)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"#!AMR"):
        return "audio/amr"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "audio/webm"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        if brand in (b"heic", b"heix", b"mif1"):
            return "image/heic"
        return "video/mp4"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    return _text_or_nothing(head)


def _text_or_nothing(head: bytes) -> str:
    if not head or b"\x00" in head:
        return ""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a character cut at the end of the head
            return ""
    return "text/plain"


class _Writer:
    """Bytes streamed to a temporary file, hashed as they come."""

    def __init__(self, store: MediaStore) -> None:
        self.store = store
        self.temp = store.root / "tmp" / uuid.uuid4().hex
        self.temp.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.temp.open("wb")
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)
        if len(self.head) < 512:
            self.head += chunk[: 512 - len(self.head)]

    async def commit(self) -> Stored:
        self.file.close()
        media_id = self.hash.hexdigest()
        try:
            new = await self.store._keep(self.temp, media_id)
        except BaseException:
            self.temp.unlink(missing_ok=True)
            raise
        return Stored(media_id, self.size, sniff(self.head), new)

    def abort(self) -> None:
        self.file.close()
        self.temp.unlink(missing_ok=True)


class MediaStore:
    """Media bytes under the data directory (``media/ab/abcd...``), named by their sha256:
    whatever storage backend holds the transcripts, they hold only the name.

    With ``blobs`` (the storage backend, when it keeps media: PostgreSQL), a commit
    writes the bytes there before the directory, and a read the directory lacks (wiped
    by a restart, or another machine's) gets them from there and keeps a copy."""

    def __init__(self, root: Path, blobs: MediaBlobs | None = None) -> None:
        self.root = root
        self.blobs = blobs

    @classmethod
    def default(cls, env: Mapping[str, str] | None = None, *, storage: object = None) -> MediaStore:
        """Under the data directory, in front of ``storage`` when it keeps media."""
        return cls(data_dir(env) / "media", storage if isinstance(storage, MediaBlobs) else None)

    def path(self, media_id: str) -> Path:
        if not MEDIA_ID.match(media_id):
            raise ValueError(f"not a media id: {media_id!r}")
        return self.root / media_id[:2] / media_id

    def local_ids(self) -> list[str]:
        """The ids of the bytes the local directory holds."""
        if not self.root.is_dir():
            return []
        found = self.root.glob("??/*")
        return sorted(p.name for p in found if p.parent.name == p.name[:2] and self.has(p.name))

    def has(self, media_id: str) -> bool:
        """Whether the local directory holds the bytes (see ``find``)."""
        return bool(MEDIA_ID.match(media_id)) and self.path(media_id).is_file()

    async def find(self, media_id: str) -> bool:
        """Whether the bytes are in the local directory, copied there from the blobs
        when only they hold them."""
        return self.has(media_id) or await self._from_blobs(media_id) is not None

    async def read(self, media_id: str) -> bytes | None:
        if self.has(media_id):
            return await asyncio.to_thread(self.path(media_id).read_bytes)
        return await self._from_blobs(media_id)

    async def _from_blobs(self, media_id: str) -> bytes | None:
        if self.blobs is None or not MEDIA_ID.match(media_id):
            return None
        data = await self.blobs.blob_get(media_id)
        if data is None:
            return None
        if not await asyncio.to_thread(self._cache, media_id, data):
            return None
        return data

    def _cache(self, media_id: str, data: bytes) -> bool:
        """Keep a copy of bytes read from the blobs; False when they are not ``media_id``'s."""
        if hashlib.sha256(data).hexdigest() != media_id:
            log.warning("media %s in the database does not match its name; ignored", media_id)
            return False
        temp = self.root / "tmp" / uuid.uuid4().hex
        try:
            temp.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            final = self.path(media_id)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
        except OSError as error:  # a full disk: the bytes are still good for this read
            log.warning("could not cache media %s locally: %s", media_id, error)
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        return True

    async def _keep(self, temp: Path, media_id: str) -> bool:
        """Move a written file to its place (the blobs first: what another process reads);
        True when the store did not hold these bytes before."""
        new = not self.has(media_id)
        if self.blobs is not None:
            data = await asyncio.to_thread(temp.read_bytes)
            new = await self.blobs.blob_put(media_id, data) and new
        self._place(temp, media_id)
        return new

    def _place(self, temp: Path, media_id: str) -> None:
        final = self.path(media_id)
        if final.exists():  # stored once: the same bytes sent again cost nothing more
            temp.unlink()
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)

    async def remove(self, media_id: str) -> None:
        """Remove bytes no message names (an upload whose message was refused)."""
        self.path(media_id).unlink(missing_ok=True)
        if self.blobs is not None:
            await self.blobs.blob_delete(media_id)

    def head(self, media_id: str) -> bytes:
        with self.path(media_id).open("rb") as file:
            return file.read(512)

    @contextlib.contextmanager
    def writer(self) -> Iterator[_Writer]:
        writer = _Writer(self)
        try:
            yield writer
        finally:
            if not writer.file.closed:
                writer.abort()

    async def put(self, data: bytes) -> Stored:
        with self.writer() as writer:
            writer.write(data)
            return await writer.commit()


def too_big(max_bytes: int) -> MediaError:
    return MediaError(f"That file is too big for me: the limit is {_size(max_bytes)}.")


def _size(count: int) -> str:
    return f"{count / 1024 / 1024:.0f} MB" if count >= 1024 * 1024 else f"{count // 1024} KB"


async def download(fetch: MediaFetch, store: MediaStore, *, max_bytes: int, stall: float) -> Stored:
    """Stream ``fetch.url`` into ``store``: refused past ``max_bytes`` (declared or counted),
    cut when no byte arrives for ``stall`` seconds or the whole takes four times that."""
    stalls = aiohttp.ClientTimeout(total=None, connect=stall, sock_read=stall)
    with store.writer() as writer:
        try:
            async with (
                asyncio.timeout(stall * 4),
                aiohttp.ClientSession(timeout=stalls) as session,
                session.get(fetch.url, headers=dict(fetch.headers), max_redirects=5) as response,
            ):
                if response.status != 200:
                    log.warning("media fetch refused: HTTP %s", response.status)
                    raise MediaError("I couldn't download that file from the platform.")
                if (response.content_length or 0) > max_bytes:
                    raise too_big(max_bytes)
                async for chunk in response.content.iter_chunked(CHUNK):
                    writer.write(chunk)
                    if writer.size > max_bytes:
                        raise too_big(max_bytes)
        except (TimeoutError, aiohttp.ClientError) as error:
            log.warning("media fetch failed: %s", type(error).__name__)
            message = "I couldn't download that file: the platform did not send it."
            raise MediaError(message) from None
        return await writer.commit()  # (the database's time is not the platform's)


@dataclass(slots=True)
class Prepared:
    """A message's parts as model input: ``text`` (caption, transcripts, file texts and
    notes), ``images`` (with their bytes), ``notices`` for the person, and ``answer``
    when nothing is left for the model (then no model call is made)."""

    text: str
    images: list[Attachment] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    answer: str | None = None


class Media:
    """Turns a message's attachments into model input, for the dispatcher."""

    def __init__(self, runtime: AgentRuntime, store: MediaStore | None = None) -> None:
        self.runtime = runtime
        self.config: MediaConfig = runtime.config.agent.media
        if store is not None:
            self.store = store

    @functools.cached_property
    def store(self) -> MediaStore:
        # On first use: the runtime builds its storage only when something needs it.
        return MediaStore.default(storage=self.runtime.storage)

    async def prepare(self, message: InboundMessage, sink: ReplySink) -> Prepared:
        """The model input for ``message``'s attachments; notices are sent through ``sink``."""
        result = Prepared(message.text)
        derived: list[str] = []  # transcripts and file texts
        failed: list[str] = []  # notes for the model on what could not be read
        for index, part in enumerate(message.attachments):
            try:
                stored = await self._stored(message, index, part, sink)
                await self._use(part, stored, result, derived)
            except MediaError as error:
                result.notices.append(str(error))
                label = f" ({part.name})" if part.name else ""
                failed.append(f"[The user also sent a {part.kind}{label} that could not be read.]")
        if not (message.text.strip() or result.images or derived):
            result.answer = " ".join(result.notices) or "I couldn't read that."
            result.notices = []
            return result
        result.text = "\n\n".join(t for t in (message.text, *derived, *failed) if t.strip())
        for notice in result.notices:  # the turn goes on: the person is told what was left out
            try:
                await sink.notify(message, notice)
            except Exception:
                log.exception("could not send a media notice on %s", message.channel)
        return result

    async def _stored(
        self, message: InboundMessage, index: int, part: MediaPart, sink: ReplySink
    ) -> Stored:
        if part.kind in ("sticker", "animation"):  # refused without downloading them
            raise MediaError(f"I can't read {part.kind}s. I can take {SUPPORTED}.")
        if part.media_id and await self.store.find(part.media_id):
            return self._known(part.media_id)
        key = f"{message.dedupe_key}:{index}"
        kv = self.runtime.storage
        record = await kv.kv_get("media", key)
        if isinstance(record, dict) and await self.store.find(str(record.get("media_id"))):
            return self._known(str(record["media_id"]))  # fetched before a crash or retry
        limit = self.config.max_bytes
        if part.size is not None and part.size > limit:
            raise too_big(limit)
        fetch = await self._fetch_for(message, part, sink)
        stored = await download(fetch, self.store, max_bytes=limit, stall=self.config.fetch_timeout)
        await kv.kv_set("media", key, {"media_id": stored.media_id, "size": stored.size})
        return stored

    def _known(self, media_id: str) -> Stored:
        size = self.store.path(media_id).stat().st_size
        return Stored(media_id, size, sniff(self.store.head(media_id)))

    async def _fetch_for(
        self, message: InboundMessage, part: MediaPart, sink: ReplySink
    ) -> MediaFetch:
        if isinstance(sink, MediaSource):
            return await sink.media_fetch(message, part)
        if not part.url:
            raise MediaError("I couldn't download that file from the platform.")
        return MediaFetch(part.url)

    async def _use(
        self, part: MediaPart, stored: Stored, result: Prepared, notes: list[str]
    ) -> None:
        mime = stored.mime
        name = part.name or part.kind
        if mime in IMAGE_TYPES:
            if stored.size > IMAGE_MAX_BYTES:
                raise MediaError(
                    f"That image is over {_size(IMAGE_MAX_BYTES)}; please send a smaller one."
                )
            data = await self.store.read(stored.media_id)
            result.images.append(Attachment(stored.media_id, mime, part.name, data))
            if not self.vision():
                result.notices.append(
                    "The model I use can't see images, so I've only told it you sent one."
                )
        elif mime.startswith("audio/") or (mime == "video/mp4" and part.kind in ("voice", "audio")):
            notes.append(await self._transcript(stored, mime, name, part.kind))
        elif mime == "application/pdf":
            notes.append(f"[PDF {name}]\n{await self._pdf_text(stored)}")
        elif mime == "text/plain":
            text = (await self.store.read(stored.media_id) or b"").decode("utf-8", "replace")
            notes.append(f"[File {name}]\n{_cut(text)}")
        else:
            what = mime or part.mime or "this kind of file"
            raise MediaError(f"I can't read {what} files. I can take {SUPPORTED}.")

    def vision(self) -> bool:
        models = self.runtime.models
        provider = models.providers.get(models.split(models.chain.primary)[0])
        return provider is None or bool(provider.info.extra.get("vision", True))

    async def _transcript(self, stored: Stored, mime: str, name: str, kind: str) -> str:
        client = self._transcriber()
        if client is None:
            raise MediaError(NO_TRANSCRIPTION)
        data = await self.store.read(stored.media_id) or b""
        filename = f"{kind}.{mime.rpartition('/')[2]}"
        try:
            answer = await client.audio.transcriptions.create(
                model=self.config.transcription_model, file=(filename, data, mime)
            )
        except Exception as error:  # the SDK's errors, a network failure
            log.warning("transcription failed: %s", type(error).__name__)
            raise MediaError("I couldn't transcribe that recording just now.") from None
        text = getattr(answer, "text", answer)
        label = "Voice note" if kind == "voice" else f"Audio {name}"
        return f"[{label}, transcribed]\n{str(text).strip() or '(no speech)'}"

    def _transcriber(self) -> Any | None:
        """An openai client (the first provider of the openai kind with a key), or None."""
        models = self.runtime.models
        names = sorted(models.providers, key=lambda n: n != "openai")
        for name in names:
            provider = models.providers[name]
            profiles = models.profiles.profiles_for(name)
            make = getattr(provider, "client", None)
            if provider.info.kind == "openai" and profiles and make is not None:
                return make(profiles[0].api_key)
        return None

    async def _pdf_text(self, stored: Stored) -> str:
        data = await self.store.read(stored.media_id) or b""
        try:
            text = await asyncio.to_thread(_pdf_to_text, data)
        except Exception as error:  # pypdf raises many kinds on a damaged file
            log.warning("PDF unreadable: %s", type(error).__name__)
            raise MediaError("I couldn't read that PDF: it looks damaged.") from None
        if not text.strip():
            raise MediaError("That PDF has no text I can read (a scan, perhaps).")
        return _cut(text)


def _pdf_to_text(data: bytes) -> str:
    from pypdf import PdfReader  # only when a PDF comes

    reader = PdfReader(io.BytesIO(data))
    pages: list[str] = []
    size = 0
    for page in reader.pages:
        pages.append(page.extract_text() or "")
        size += len(pages[-1])
        if size > MAX_TEXT_CHARS:
            break
    return "\n\n".join(pages)


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + "\n[... the rest of the file is cut]"
