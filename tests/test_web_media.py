"""Files sent from the web chat (channels/web_upload.py): POST /api/chat as multipart, the
file streamed into the media store under agent.media.max_bytes before the message is stored,
then through the media core like any channel's attachment."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

import channels.web_upload as web_upload
import tests.pg
from bot.config import data_dir, load_config
from bot.dispatch import Dispatcher
from bot.inbound import InboundMessage, MediaPart
from bot.media import Media, MediaStore
from bot.runtime import AgentRuntime
from bot.server import HOST_KEY, create_app
from bot.storage import MemoryStorage, SQLiteStorage, Storage
from bot.storage.postgres import PostgresStorage
from channels.web import WebSink
from tests.fakes.models import FakeAnthropic, FakeOpenAI, Hang
from tests.helpers import wait_for
from tests.test_dispatch import Sink, owned

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x01" * 40
OGG = b"OggS\x00\x02" + b"\x00" * 200
LIMIT = 100_000
UPLOAD = {"X-Chatlane-Upload": "1"}


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path,
    env: dict[str, str] | None = None,
    limit: int = LIMIT,
    web: dict[str, Any] | None = None,
    storage: Storage | None = None,
) -> AsyncIterator[TestClient[Any, Any]]:
    data = {
        "agent": {"model": "anthropic/claude-sonnet-4-6", "media": {"max_bytes": limit}},
        "channels": {"web": web or {}},
        "server": {"shutdown_grace": 0},
    }
    env = {"ANTHROPIC_API_KEY": "sk-ant-web-1111", **(env or {})}
    storage = storage or SQLiteStorage(tmp_path / "w.sqlite")
    runtime = AgentRuntime(config=load_config(data=data), storage=storage, env=env)
    async with TestClient(TestServer(create_app(runtime, env=env))) as client:
        yield client


@pytest.fixture
async def model(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        yield fake


def form(
    data: bytes | None, *, text: str = "", name: str = "photo.png", label: str = "image/png"
) -> aiohttp.FormData:
    body = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    body.add_field("session_id", "s1")
    body.add_field("text", text)
    if data is not None:
        body.add_field("file", io.BytesIO(data), filename=name, content_type=label)
    return body


async def upload(client: TestClient[Any, Any], body: Any, **headers: str) -> Any:
    return await client.post("/api/chat", data=body, headers={**UPLOAD, **headers})


async def lines(response: Any) -> list[dict[str, Any]]:
    assert response.status == 200, await response.text()
    return [json.loads(line) for line in (await response.text()).splitlines()]


def stored_files() -> list[Path]:
    root = MediaStore.default().root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def host(client: TestClient[Any, Any]) -> Any:
    return client.server.app[HOST_KEY]


async def test_an_image_with_a_caption_reaches_the_model_and_is_answered(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    async with served(tmp_path) as client:
        answer = await lines(await upload(client, form(PNG, text="what is this?")))
    assert answer[-1]["type"] == "done" and answer[-1]["data"]["text"] == "echo: what is this?"
    blocks = model.requests[0].json["messages"][-1]["content"]
    image = next(b for b in blocks if b["type"] == "image")
    assert image["source"]["media_type"] == "image/png"
    assert base64.b64decode(image["source"]["data"]) == PNG
    assert [b["text"] for b in blocks if b["type"] == "text"] == ["what is this?"]
    (kept,) = stored_files()
    assert kept.read_bytes() == PNG


async def test_a_photo_larger_than_other_request_bodies_is_taken(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    photo = PNG + b"\x01" * (3 * 1024 * 1024)  # JSON bodies stop at 1 MB; uploads stream
    async with served(tmp_path, limit=10 * 1024 * 1024) as client:
        answer = await lines(await upload(client, form(photo, text="big")))
    assert answer[-1]["data"]["text"] == "echo: big"
    (kept,) = stored_files()
    assert kept.stat().st_size == len(photo)


async def test_the_message_and_its_file_are_stored_before_the_stream_starts(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    model.script(Hang(2))  # holds the turn while the inbox is read
    async with served(tmp_path) as client:
        storage = host(client).runtime.storage
        response = await upload(client, form(PNG, name="C:\\photos\\../cat\u202e.png"))
        assert response.status == 200  # the stream has begun: headers are out
        (item_id,) = await storage.inbox_pending_ids()
        item = await storage.inbox_get(item_id)
        response.close()  # the browser leaves: its turn is stopped
        await wait_for(lambda: model.requests, "the turn to reach the model")
    (part,) = item.data["attachments"]
    assert part["kind"] == "image" and part["mime"] == "image/png" and part["url"] == ""
    assert part["name"] == "cat.png" and part["size"] == len(PNG) and item.data["text"] == ""
    assert MediaStore.default().has(part["media_id"])


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT])  # counted while read; Content-Length
async def test_a_file_over_max_bytes_is_refused_with_413_and_not_stored(
    tmp_path: Path, model: FakeAnthropic, size: int
) -> None:
    async with served(tmp_path) as client:
        refused = await upload(client, form(PNG + b"\x00" * (size - len(PNG)), text="look"))
        assert refused.status == 413
        assert await refused.text() == "That file is too big for me: the limit is 97 KB."
        assert await host(client).runtime.storage.inbox_pending_ids() == []
    assert stored_files() == [] and model.requests == []


async def test_a_refused_message_leaves_no_file_behind(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    async with served(tmp_path, web={"rate_limit_per_minute": 1}) as client:
        await lines(await upload(client, form(PNG, text="one")))
        again = await lines(await upload(client, form(PNG + b"other", text="two")))
        same = await lines(await upload(client, form(PNG, text="three")))  # the first's bytes
    assert "too quickly" in json.dumps(again) and "too quickly" in json.dumps(same)
    (kept,) = stored_files()
    assert kept.read_bytes() == PNG and len(model.requests) == 1


async def test_the_page_is_told_the_limit(tmp_path: Path, model: FakeAnthropic) -> None:
    async with served(tmp_path) as client:
        info = await (await client.get("/api/info")).json()
    assert info["max_bytes"] == LIMIT


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"X-Chatlane-Upload": ""}, 403),  # a cross-site form cannot send the header
    ],
)
async def test_a_cross_origin_upload_is_refused(
    tmp_path: Path, model: FakeAnthropic, headers: dict[str, str], status: int
) -> None:
    async with served(tmp_path) as client:
        refused = await upload(client, form(PNG, text="hi"), **headers)
        assert refused.status == status
    assert stored_files() == [] and model.requests == []


async def test_the_access_rules_hold_before_a_byte_is_stored(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    remote = {"X-Forwarded-For": "203.0.113.5"}
    async with served(tmp_path, {"PUBLIC_URL": "https://bot.example"}) as client:
        assert (await upload(client, form(PNG), **remote)).status == 403
    async with served(tmp_path, {"CHATLANE_WEB_TOKEN": "tok-123"}) as client:
        assert (await upload(client, form(PNG))).status == 401
        opened = await upload(client, form(PNG), Authorization="Bearer tok-123")
        assert (await lines(opened))[-1]["type"] == "done"
    assert len(stored_files()) == 1 and len(model.requests) == 1


async def test_an_unsupported_file_gets_the_one_line_reply(
    tmp_path: Path, model: FakeAnthropic
) -> None:
    archive = b"PK\x03\x04" + b"\x00" * 100
    async with served(tmp_path) as client:
        body = form(archive, name="photo.png", label="image/png")  # the bytes decide
        answer = await lines(await upload(client, body))
    assert [line["type"] for line in answer] == ["command"]
    assert answer[0]["data"]["text"].startswith("I can't read application/zip files. I can take")
    assert model.requests == []


async def test_a_text_file_and_a_voice_note_reach_the_model_as_text(
    tmp_path: Path, model: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeOpenAI() as openai:
        monkeypatch.setenv("OPENAI_BASE_URL", openai.api_base)
        env = {"OPENAI_API_KEY": "sk-openai-3333"}
        async with served(tmp_path, env) as client:
            notes = form(b"eggs, milk\n", text="shop", name="list.txt", label="text/plain")
            await lines(await upload(client, notes))
            await lines(await upload(client, form(OGG, name="voice.ogg", label="audio/ogg")))
    assert model.requests[0].last_user_text == "shop\n\n[File list.txt]\neggs, milk\n"
    assert model.requests[1].last_user_text.endswith("hello from a voice note")
    assert openai.transcriptions[0]["size"] == len(OGG)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (form(None), "send a file, a text, or both"),
        (form(b""), "the file is empty"),
        (b"--x\r\nnot a part", "malformed"),
    ],
)
async def test_malformed_uploads_get_400(
    tmp_path: Path, model: FakeAnthropic, body: Any, reason: str
) -> None:
    async with served(tmp_path) as client:
        headers = (
            {"Content-Type": "multipart/form-data; boundary=x"} if isinstance(body, bytes) else {}
        )
        refused = await upload(client, body, **headers)
        assert refused.status == 400 and reason in await refused.text()
    assert model.requests == []


def raw(*parts: tuple[str, bytes]) -> bytes:
    body = b"".join(
        b'--x\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (n.encode(), v)
        for n, v in parts
    )
    return body + b"--x--\r\n"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (raw(("session_id", b"s1"), ("text", b"\xff\xfe")), "the text field is not UTF-8"),
        (raw(("session_id", b"s1"), ("text", b"a" * 90_000)), "the text field is too long"),
        (raw(("session_id", b"s1"), ("url", b"http://x/y.png")), "unexpected form field 'url'"),
        (raw(("session_id", b"s1"), ("file", PNG), ("file", PNG)), "unexpected form field"),
        (raw(("text", b"hi")), "session_id must be a non-empty string"),
        (raw(("file", PNG), ("text", b"hi")), "session_id must be a non-empty string"),
    ],
)
async def test_form_fields_are_checked(
    tmp_path: Path, model: FakeAnthropic, body: bytes, reason: str
) -> None:
    async with served(tmp_path) as client:
        headers = {"Content-Type": "multipart/form-data; boundary=x"}
        refused = await upload(client, body, **headers)
        assert refused.status == 400 and reason in await refused.text()
    assert model.requests == []
    assert stored_files() == []  # a file read before the form was refused is taken back


async def test_uploads_beyond_the_cap_are_turned_away(
    tmp_path: Path, model: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_upload, "MOST_AT_ONCE", 0)
    async with served(tmp_path) as client:
        refused = await upload(client, form(PNG))
        assert refused.status == 503 and "too many uploads" in await refused.text()
    assert stored_files() == []


async def test_an_upload_that_stalls_is_cut(
    tmp_path: Path, model: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_upload, "STALL", 0.3)
    head = (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Chatlane-Upload: 1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 5000\r\n\r\n"
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    )
    async with served(tmp_path) as client:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(head + PNG)
        data = await asyncio.wait_for(reader.read(), 5)  # answered, and closed
        writer.close()
    assert data.startswith(b"HTTP/1.1 408") and stored_files() == []


async def test_an_upload_the_store_lost_asks_to_send_it_again(tmp_path: Path) -> None:
    config = load_config()
    runtime = AgentRuntime(config=config, storage=MemoryStorage(), demo_when_unconfigured=True)
    try:
        gone = MediaPart("image", "image/png", 10, "p.png", media_id="ab" * 32)
        message = InboundMessage("web", "b:s", "127.0.0.1", "", "1", attachments=(gone,))
        prepared = await Media(runtime).prepare(message, WebSink())
    finally:
        await runtime.close()
    assert prepared.answer == web_upload.GONE


# -- with PostgreSQL: a web process and a worker on different machines ------------------


@pytest.fixture
def database_url() -> Iterator[str]:
    with tests.pg.database() as url:
        yield url


class WorkerSink(Sink):
    """The web channel as a worker process answers it (no browser attached there)."""

    name = "web"


async def media_ids(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        return [row[0] for row in await connection.fetch("SELECT id FROM chatlane_media")]
    finally:
        await connection.close()


async def test_an_upload_to_the_web_process_is_answered_by_a_worker_on_another_disk(
    tmp_path: Path, model: FakeAnthropic, database_url: str, cleanup: contextlib.AsyncExitStack
) -> None:
    model.script(Hang(30))  # the web process is restarted in the middle of the turn
    async with served(tmp_path, storage=PostgresStorage(database_url)) as client:
        response = await upload(client, form(PNG, text="what is this?"))
        assert response.status == 200
        await wait_for(lambda: model.requests, "the web process's turn to reach the model")
    shutil.rmtree(data_dir())  # the worker's disk: it never saw the upload
    config = load_config(data={"agent": {"model": "anthropic/claude-sonnet-4-6"}})
    env = {"ANTHROPIC_API_KEY": "sk-ant-web-1111"}
    worker = AgentRuntime(config=config, storage=PostgresStorage(database_url), env=env)
    dispatcher = owned(cleanup, Dispatcher(worker, sweep_every=0.05))
    sink = WorkerSink()
    dispatcher.register(sink)
    await worker.start()
    await dispatcher.start()
    await wait_for(lambda: sink.sent, "the worker's answer", 20, changed=sink.changed)
    assert sink.sent == ["echo: what is this?"] and sink.notices == []
    blocks = model.requests[-1].json["messages"][-1]["content"]
    images = [base64.b64decode(b["source"]["data"]) for b in blocks if b["type"] == "image"]
    assert images and set(images) == {PNG}
    assert {b["text"] for b in blocks if b["type"] == "text"} == {"what is this?"}


async def test_a_refused_upload_is_taken_out_of_the_database_too(
    tmp_path: Path, model: FakeAnthropic, database_url: str
) -> None:
    web = {"rate_limit_per_minute": 1}
    async with served(tmp_path, web=web, storage=PostgresStorage(database_url)) as client:
        await lines(await upload(client, form(PNG, text="one")))
        again = await lines(await upload(client, form(PNG + b"other", text="two")))
        same = await lines(await upload(client, form(PNG, text="three")))  # the first's bytes
    assert "too quickly" in json.dumps(again) and "too quickly" in json.dumps(same)
    assert await media_ids(database_url) == [hashlib.sha256(PNG).hexdigest()]
    (kept,) = stored_files()
    assert kept.read_bytes() == PNG
