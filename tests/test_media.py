"""Media in (bot/media.py): attachments fetched from a platform fake, stored once, sniffed,
and turned into model input (an image block, a transcript, a PDF's text) or a one-line reply."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import tests.pg
from bot.channel import Reply
from bot.channel import Sink as BaseSink
from bot.compaction import CompactionStrategy, TokenEstimator
from bot.config import MediaConfig, data_dir, load_config
from bot.context import MAX_IMAGES, Budget, ContextBuilder
from bot.dispatch import Dispatcher
from bot.inbound import InboundMessage, MediaPart
from bot.media import NO_TRANSCRIPTION, Media, MediaFetch, MediaStore, sniff
from bot.messages import IMAGE_TOKENS, Attachment, Message, Role
from bot.runtime import AgentRuntime
from bot.storage import MemoryStorage
from bot.storage.postgres import PostgresStorage, PostgresUnavailable
from tests.fakes.models import Fail, FakeAnthropic, FakeOpenAI
from tests.helpers import wait_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x01" * 40
OGG = b"OggS\x00\x02" + b"\x00" * 200
MB = 1024 * 1024


def pdf(text: str) -> bytes:
    """A one-page PDF whose page says ``text`` (what pypdf reads back)."""
    content = f"BT /F1 12 Tf 10 50 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


class Files:
    """A platform's file server: what a channel's attachment URLs point at."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {
            "photo.png": PNG,
            "voice.ogg": OGG,
            "doc.pdf": pdf("Quarterly"),
        }
        self.files["zip-as-png"] = b"PK\x03\x04" + b"\x00" * 100
        self.files["notes.txt"] = b"Shopping: eggs, milk\n"
        self.files["big"] = b"\xff\xd8\xff" + b"\x00" * (2 * MB)
        self.hits: list[str] = []
        self.headers: list[dict[str, str]] = []
        app = web.Application()
        app.router.add_get("/f/{name}", self.serve)
        app.router.add_get("/chunked-big", self.chunked)
        app.router.add_get("/stall", self.stall)
        self.server = TestServer(app, host="127.0.0.1")

    def url(self, name: str) -> str:
        return str(self.server.make_url(f"/f/{name}"))

    async def serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits.append(name)
        self.headers.append(dict(request.headers))
        if name not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[name], content_type="application/octet-stream")

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(40):  # 2.5 MB, no Content-Length
            await response.write(b"\x89PNG" + b"\x00" * (64 * 1024 - 4))
        return response

    async def stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"\xff\xd8\xff")
        await asyncio.sleep(30)
        return response


class Sink(BaseSink):
    name = "test"

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.notices: list[str] = []
        self.changed = asyncio.Event()

    def render(self, reply: Reply) -> list[Any]:
        return [reply.markdown]

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        self.sent.append(part)
        self.changed.set()

    async def notify(self, message: InboundMessage, text: str) -> None:
        self.notices.append(text)
        self.changed.set()


class AuthSink(Sink):
    """A channel whose platform wants credentials with each file."""

    async def media_fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch:
        return MediaFetch(part.url, {"Authorization": "Bearer platform-token"})


@pytest.fixture
async def files() -> AsyncIterator[Files]:
    fake = Files()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


async def started(
    cleanup: contextlib.AsyncExitStack, sink: Sink | None = None, **agent: Any
) -> tuple[Dispatcher, Sink]:
    data = {
        "agent": {
            "model": "anthropic/claude-sonnet-4",
            "media": {"max_bytes": MB, "fetch_timeout": 0.3},
            **agent,
        }
    }
    runtime = AgentRuntime(config=load_config(data=data), storage=MemoryStorage())
    dispatcher = Dispatcher(runtime)
    sink = sink or Sink()
    dispatcher.register(sink)
    cleanup.push_async_callback(runtime.close)
    cleanup.push_async_callback(dispatcher.drain, 1)
    await dispatcher.start()
    return dispatcher, sink


def message(n: int, *parts: MediaPart, text: str = "") -> InboundMessage:
    return InboundMessage("test", "c1", "u1", text, f"m{n}", attachments=parts)


async def answered(sink: Sink, count: int = 1) -> list[Any]:
    # the first test pays for importing the model SDK (slow under coverage)
    await wait_for(lambda: len(sink.sent) >= count, f"{count} replies", 20, changed=sink.changed)
    return sink.sent


async def test_a_photo_with_a_caption_reaches_the_model_as_an_image(
    files: Files, models: tuple[FakeAnthropic, FakeOpenAI], cleanup: contextlib.AsyncExitStack
) -> None:
    anthropic, _ = models
    dispatcher, sink = await started(cleanup, AuthSink())
    photo = MediaPart("image", "image/jpeg", len(PNG), "photo.png", url=files.url("photo.png"))
    await dispatcher.submit(message(1, photo, text="what is this?"))
    assert (await answered(sink))[0] == "echo: what is this?"
    blocks = anthropic.requests[0].json["messages"][-1]["content"]
    image = next(b for b in blocks if b["type"] == "image")
    assert image["source"]["media_type"] == "image/png"  # from the bytes, not the label
    assert base64.b64decode(image["source"]["data"]) == PNG
    assert files.headers[0]["Authorization"] == "Bearer platform-token"
    # stored once, referenced from the transcript without its bytes
    stored = await dispatcher.runtime.storage.load_messages("test:c1")
    assert stored[0].attachments[0].data is None and stored[0].attachments[0].mime == "image/png"
    assert MediaStore.default().has(stored[0].attachments[0].media_id)


async def test_the_openai_fallback_gets_the_same_image_as_a_data_url(
    files: Files,
    models: tuple[FakeAnthropic, FakeOpenAI],
    cleanup: contextlib.AsyncExitStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anthropic, openai = models
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-2222")
    anthropic.script(Fail(529, "overloaded_error"))
    dispatcher, sink = await started(cleanup, fallback_models=["openai/gpt-4o"])
    photo = MediaPart("image", url=files.url("photo.png"))
    await dispatcher.submit(message(1, photo, text="and this?"))
    await answered(sink)
    content = openai.requests[0].json["messages"][-1]["content"]
    url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()


async def test_a_voice_note_is_transcribed_and_answered(
    files: Files,
    models: tuple[FakeAnthropic, FakeOpenAI],
    cleanup: contextlib.AsyncExitStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anthropic, openai = models
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-2222")
    dispatcher, sink = await started(cleanup)
    await dispatcher.submit(message(1, MediaPart("voice", "audio/ogg", url=files.url("voice.ogg"))))
    await answered(sink)
    assert openai.transcriptions == [
        {
            "model": "gpt-4o-mini-transcribe",
            "filename": "voice.ogg",
            "content_type": "audio/ogg",
            "size": len(OGG),
            "api_key": "sk-openai-2222",
        }
    ]
    said = anthropic.requests[0].last_user_text
    assert said == "[Voice note, transcribed]\nhello from a voice note"


async def test_without_transcription_a_voice_note_gets_how_to_enable_it(
    files: Files, models: tuple[FakeAnthropic, FakeOpenAI], cleanup: contextlib.AsyncExitStack
) -> None:
    anthropic, _ = models
    dispatcher, sink = await started(cleanup)  # no OpenAI key
    await dispatcher.submit(message(1, MediaPart("voice", url=files.url("voice.ogg"))))
    assert await answered(sink) == [NO_TRANSCRIPTION]
    assert anthropic.requests == []


async def test_a_pdf_and_a_text_file_reach_the_model_as_text(
    files: Files, models: tuple[FakeAnthropic, FakeOpenAI], cleanup: contextlib.AsyncExitStack
) -> None:
    anthropic, _ = models
    dispatcher, sink = await started(cleanup)
    parts = (
        MediaPart("document", "application/pdf", name="doc.pdf", url=files.url("doc.pdf")),
        MediaPart("document", "image/jpeg", name="notes.txt", url=files.url("notes.txt")),
    )
    await dispatcher.submit(message(1, *parts, text="summarize"))
    await answered(sink)
    said = anthropic.requests[0].last_user_text
    assert "[PDF doc.pdf]\nQuarterly" in said
    assert "[File notes.txt]\nShopping: eggs, milk" in said


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        (MediaPart("document", size=5 * MB, url="/f/big"), "too big for me: the limit is 1 MB"),
        (MediaPart("image", url="/f/big"), "too big for me"),  # Content-Length
        (MediaPart("image", url="/chunked-big"), "too big for me"),  # counted while streaming
        (MediaPart("image", url="/f/missing"), "couldn't download"),  # the platform says 404
        (MediaPart("image", url="/stall"), "couldn't download"),  # no byte for 0.3 s
        (MediaPart("sticker", url="/f/photo.png"), "can't read stickers"),
        (MediaPart("image", "image/png", url="/f/zip-as-png"), "can't read application/zip"),
    ],
)
async def test_what_cannot_be_used_gets_a_one_line_reply_and_no_model_call(
    files: Files,
    models: tuple[FakeAnthropic, FakeOpenAI],
    cleanup: contextlib.AsyncExitStack,
    part: MediaPart,
    expected: str,
) -> None:
    anthropic, _ = models
    dispatcher, sink = await started(cleanup)
    url = str(files.server.make_url(part.url))
    await dispatcher.submit(message(1, MediaPart(part.kind, part.mime, part.size, url=url)))
    sent = await answered(sink)
    assert len(sent) == 1 and expected in sent[0] and "\n" not in sent[0]
    assert anthropic.requests == []
    tmp = MediaStore.default().root / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []  # nothing half-written left behind


async def test_with_a_caption_an_unreadable_file_is_noted_for_the_model_and_told(
    files: Files, models: tuple[FakeAnthropic, FakeOpenAI], cleanup: contextlib.AsyncExitStack
) -> None:
    anthropic, _ = models
    dispatcher, sink = await started(cleanup)
    part = MediaPart("document", name="a.zip", url=files.url("zip-as-png"))
    await dispatcher.submit(message(1, part, text="look at this"))
    await answered(sink)
    assert sink.notices and "can't read application/zip" in sink.notices[0]
    said = anthropic.requests[0].last_user_text
    assert said.startswith("look at this") and "(a.zip) that could not be read" in said


async def test_a_model_without_vision_gets_a_note_and_the_user_is_told(
    files: Files,
    models: tuple[FakeAnthropic, FakeOpenAI],
    cleanup: contextlib.AsyncExitStack,
) -> None:
    anthropic, _ = models
    data = {
        "agent": {"model": "blind/model-1", "media": {"max_bytes": MB}},
        "providers": {
            "blind": {
                "type": "anthropic",
                "base_url": anthropic.base_url,
                "api_key_env": "ANTHROPIC_API_KEY",
                "vision": False,
            }
        },
    }
    runtime = AgentRuntime(config=load_config(data=data), storage=MemoryStorage())
    dispatcher = Dispatcher(runtime)
    sink = Sink()
    dispatcher.register(sink)
    cleanup.push_async_callback(runtime.close)
    cleanup.push_async_callback(dispatcher.drain, 1)
    await dispatcher.start()
    await dispatcher.submit(message(1, MediaPart("image", url=files.url("photo.png")), text="hi"))
    await answered(sink)
    assert sink.notices == ["The model I use can't see images, so I've only told it you sent one."]
    blocks = anthropic.requests[0].json["messages"][-1]["content"]
    assert all(b["type"] == "text" for b in blocks)
    assert "this model cannot see images" in blocks[0]["text"]


async def test_a_retry_does_not_download_again_and_the_same_bytes_are_stored_once(
    files: Files, models: tuple[FakeAnthropic, FakeOpenAI], cleanup: contextlib.AsyncExitStack
) -> None:
    dispatcher, sink = await started(cleanup)
    first = message(1, MediaPart("image", url=files.url("photo.png")), text="one")
    again = await dispatcher.media.prepare(first, sink)
    await dispatcher.media.prepare(first, sink)  # a retry of the same message
    assert files.hits == ["photo.png"]
    other = message(2, MediaPart("image", url=files.url("photo.png")), text="two")
    second = await dispatcher.media.prepare(other, sink)
    assert second.images[0].media_id == again.images[0].media_id
    stored = [p for p in MediaStore.default().root.rglob("*") if p.is_file()]
    assert len(stored) == 1


async def test_old_images_are_dropped_first_keeping_a_note(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    ids = [(await store.put(PNG + bytes([n]))).media_id for n in range(MAX_IMAGES + 2)]
    storage = MemoryStorage()
    turns = [
        Message(Role.USER, f"photo {n}", attachments=(Attachment(i, "image/png", f"p{n}.png"),))
        for n, i in enumerate(ids)
    ]
    await storage.append_messages("s", turns)

    async def never(messages: tuple[Message, ...], max_tokens: int) -> str:
        raise AssertionError("no summary expected")

    context = ContextBuilder(
        storage,
        budget=Budget(100_000, 0.8, 1000),
        strategy=CompactionStrategy.KEEP_RECENT,
        summarize=never,
        media=store,
    )
    window = await context.window("s", "anthropic/claude-sonnet-4")
    shown = [m for m in window.messages if m.attachments]
    assert len(shown) == MAX_IMAGES and all(m.attachments[0].data for m in shown)
    assert shown[-1].attachments[0].data == PNG + bytes([MAX_IMAGES + 1])
    assert (
        window.messages[0].content
        == "[The user sent an image (p0.png) earlier; it is no longer shown.]\nphoto 0"
    )
    assert TokenEstimator("claude-sonnet-4").count_message(turns[0]) >= IMAGE_TOKENS


def test_attachments_survive_the_inbox_and_the_transcript_as_json() -> None:
    part = MediaPart("voice", "audio/ogg", 123, "v.ogg", url="https://x/1", ref="file-1")
    inbound = InboundMessage("test", "c", "u", "", "m", attachments=(part,))
    assert InboundMessage.from_dict(inbound.to_dict()) == inbound
    image = Attachment("a" * 64, "image/png", "p.png", data=b"bytes")
    stored = Message.from_dict(Message(Role.USER, "hi", attachments=(image,)).to_dict())
    assert stored.attachments == (image,) and stored.attachments[0].data is None


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"GIF89a", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt", "audio/wav"),
        (b"%PDF-1.7", "application/pdf"),
        (OGG, "audio/ogg"),
        (b"ID3\x04", "audio/mpeg"),
        (b"#!AMR\n", "audio/amr"),
        (b"\x00\x00\x00\x20ftypM4A ", "audio/mp4"),
        (b"\x00\x00\x00\x20ftypisom", "video/mp4"),
        ("héllo wörld".encode(), "text/plain"),
        (b"\x00\x01\x02binary", ""),
    ],
)
def test_types_are_read_from_the_bytes(head: bytes, mime: str) -> None:
    assert sniff(head) == mime


# -- with PostgreSQL: the bytes in the database, the data directory a cache -------------


@pytest.fixture
def database_url() -> Iterator[str]:
    with tests.pg.database() as url:
        yield url


async def postgres(cleanup: contextlib.AsyncExitStack, url: str, **options: Any) -> PostgresStorage:
    """One process's connection to the shared database."""
    store = PostgresStorage(url, **options)
    await store.open()
    cleanup.push_async_callback(store.close)
    return store


def wipe_data_dir() -> None:
    """What a PaaS restart does to the disk (or what another machine's disk holds)."""
    shutil.rmtree(data_dir(), ignore_errors=True)


async def test_a_photo_one_process_fetched_is_read_by_another_with_an_empty_disk(
    files: Files, database_url: str, cleanup: contextlib.AsyncExitStack
) -> None:
    config = load_config(data={"agent": {"model": "anthropic/claude-sonnet-4"}})
    photo = message(1, MediaPart("image", url=files.url("photo.png")), text="look")
    web = AgentRuntime(config=config, storage=await postgres(cleanup, database_url))
    first = await Media(web).prepare(photo, Sink())
    wipe_data_dir()
    # The worker on another machine answers the same message (the first one died).
    worker = AgentRuntime(config=config, storage=await postgres(cleanup, database_url))
    again = await Media(worker).prepare(photo, Sink())
    assert files.hits == ["photo.png"]  # not downloaded twice: read from the database
    assert again.images[0].data == first.images[0].data == PNG
    assert MediaStore.default().path(again.images[0].media_id).read_bytes() == PNG  # cached
    wipe_data_dir()  # without PostgreSQL behind it, a wiped disk has lost the photo
    alone = AgentRuntime(config=config, storage=MemoryStorage())
    assert await Media(alone).store.read(again.images[0].media_id) is None


async def test_a_history_image_survives_a_wiped_data_dir(
    database_url: str, cleanup: contextlib.AsyncExitStack
) -> None:
    storage = await postgres(cleanup, database_url)
    stored = await MediaStore.default(storage=storage).put(PNG)
    image = Attachment(stored.media_id, "image/png", "cat.png")
    await storage.append_messages("s", [Message(Role.USER, "my cat", attachments=(image,))])
    wipe_data_dir()

    async def never(messages: tuple[Message, ...], max_tokens: int) -> str:
        raise AssertionError("no summary expected")

    after_restart = ContextBuilder(
        await postgres(cleanup, database_url),
        budget=Budget(100_000, 0.8, 1000),
        strategy=CompactionStrategy.KEEP_RECENT,
        summarize=never,
    )
    window = await after_restart.window("s", "anthropic/claude-sonnet-4")
    assert [m.attachments[0].data for m in window.messages] == [PNG]
    assert window.messages[0].content == "my cat"


async def test_a_file_at_the_size_cap_round_trips_through_postgresql(
    database_url: str, cleanup: contextlib.AsyncExitStack, tmp_path: Path
) -> None:
    data = os.urandom(MediaConfig().max_bytes - 1)  # incompressible, as photos are
    here = MediaStore(tmp_path / "here", await postgres(cleanup, database_url))
    stored = await here.put(data)
    assert stored.new and stored.size == len(data)
    there = MediaStore(tmp_path / "there", await postgres(cleanup, database_url))
    assert not there.has(stored.media_id) and await there.find(stored.media_id)
    assert await there.read(stored.media_id) == data
    assert not (await there.put(data)).new  # the same bytes again: held already
    assert list((tmp_path / "there" / "tmp").iterdir()) == []


async def test_bytes_in_the_database_that_do_not_match_their_name_are_not_used(
    database_url: str, cleanup: contextlib.AsyncExitStack, tmp_path: Path
) -> None:
    storage = await postgres(cleanup, database_url)
    named = "ab" * 32
    assert await storage.blob_put(named, b"something else")
    assert not await storage.blob_put(named, b"something else")  # held already
    store = MediaStore(tmp_path / "media", storage)
    assert await store.read(named) is None and not await store.find(named)
    assert not store.has(named) and await store.read("not-an-id") is None
    assert not await store.find("cd" * 32)  # in neither


async def test_a_media_directory_that_cannot_be_written_still_reads_from_the_database(
    database_url: str, cleanup: contextlib.AsyncExitStack, tmp_path: Path, caplog: Any
) -> None:
    storage = await postgres(cleanup, database_url)
    stored = await MediaStore(tmp_path / "a", storage).put(PNG)
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where the directory should be")
    assert await MediaStore(blocked, storage).read(stored.media_id) == PNG
    assert "could not cache media" in caplog.text


async def test_an_outage_while_storing_leaves_nothing_behind(
    database_url: str, cleanup: contextlib.AsyncExitStack, tmp_path: Path
) -> None:
    proxy = tests.pg.Proxy()
    await proxy.start()
    cleanup.push_async_callback(proxy.stop)
    storage = await postgres(cleanup, proxy.url(database_url), retry_for=0.2)
    store = MediaStore(tmp_path / "media", storage)
    await proxy.stop()
    with pytest.raises(PostgresUnavailable):
        await store.put(PNG)  # the turn is tried again later (bot.storage.base.UNAVAILABLE)
    assert [p for p in store.root.rglob("*") if p.is_file()] == []
