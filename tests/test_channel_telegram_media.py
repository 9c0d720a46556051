"""Telegram media in: photos, voice notes, files, stickers sent to the bot, end to end.

python-telegram-bot against the fake Bot API, which serves the files
(``getFile``, then ``/file/bot<token>/<file_path>``); the fake Anthropic and
OpenAI servers stand in for the model and the transcription endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telegram import Bot, Update

from bot.inbound import MediaPart
from bot.media import SUPPORTED, MediaError
from bot.server import HOST_KEY
from channels.telegram import TelegramChannel, make_bot
from channels.telegram_media import TOO_BIG_FOR_BOTS, best_photo, fetch, media_parts
from tests.fakes.models import FakeAnthropic, FakeOpenAI
from tests.fakes.telegram import FakeTelegram, media_update, update
from tests.test_channel_telegram import app_client, post
from tests.test_media import pdf

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x01" * 40
OGG = b"OggS\x00\x02" + b"\x00" * 200
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200
MB = 1024 * 1024
CLAUDE = {
    "agent": {"model": "anthropic/claude-sonnet-4-6", "media": {"max_bytes": MB}},
    "channels": {"telegram": {"streaming": False}},
}


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def texts(fake: FakeTelegram) -> list[str]:
    return [m["text"] for m in fake.sent()]


def downloads(fake: FakeTelegram, file: dict[str, Any]) -> list[str]:
    return [p for p in fake.file_hits if p == fake.files[file["file_id"]][0]]


async def test_a_photo_with_a_caption_reaches_the_model_as_an_image(
    telegram: FakeTelegram, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    thumb = telegram.add_file(b"\xff\xd8\xff" + b"\x00" * 20, "thumb.jpg")
    medium = telegram.add_file(PNG, "medium.jpg")
    huge = telegram.add_file(b"\xff\xd8\xff", "huge.jpg", size=2 * MB)  # over the limit
    sizes = [
        {**thumb, "width": 90, "height": 60},
        {**medium, "width": 800, "height": 600},
        {**huge, "width": 2560, "height": 1920},
    ]
    client = await app_client(telegram, CLAUDE)
    try:
        assert await post(client, media_update(1, "what is in this picture?", photo=sizes)) == 200
        sent = await telegram.wait_for("sendMessage", seconds=30)  # the SDK's first import
        assert sent[0]["text"] == "echo: what is in this picture?"
        blocks = anthropic.requests[0].json["messages"][-1]["content"]
        image = next(b for b in blocks if b["type"] == "image")
        assert image["source"]["media_type"] == "image/png"  # read from the bytes
        assert base64.b64decode(image["source"]["data"]) == PNG
        # the largest size within the limit, asked of getFile and downloaded once
        assert [c["file_id"] for c in telegram.sent("getFile")] == [medium["file_id"]]
        assert telegram.file_hits == downloads(telegram, medium) and len(telegram.file_hits) == 1
    finally:
        await client.close()


async def test_the_webhook_answers_before_the_file_is_downloaded(
    telegram: FakeTelegram, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    photo = telegram.add_file(PNG, "p.png")
    telegram.gate = asyncio.Event()  # the file server holds each download until set
    client = await app_client(telegram, CLAUDE)
    try:
        async with asyncio.timeout(5):  # answered while the download cannot finish
            assert await post(client, media_update(2, "later", photo=[photo])) == 200
        await telegram.wait_until(lambda: telegram.file_hits, "the download begins")
        assert telegram.sent() == []
        telegram.gate.set()
        sent = await telegram.wait_for("sendMessage", seconds=30)
        assert sent[0]["text"] == "echo: later"
    finally:
        telegram.gate.set()
        await client.close()


async def test_a_voice_note_is_transcribed_and_answered(
    telegram: FakeTelegram,
    models: tuple[FakeAnthropic, FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anthropic, openai = models
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-telegram-1111")
    voice = {**telegram.add_file(OGG, "voice.oga"), "duration": 2, "mime_type": "audio/ogg"}
    client = await app_client(telegram, CLAUDE)
    try:
        await post(client, media_update(3, voice=voice))  # no caption: still answered
        sent = await telegram.wait_for("sendMessage", seconds=30)
        said = "[Voice note, transcribed]\nhello from a voice note"
        assert anthropic.requests[0].last_user_text == said
        assert sent[0]["text"] == "echo: " + said
        [upload] = openai.transcriptions
        assert upload["filename"] == "voice.ogg" and upload["size"] == len(OGG)
        assert upload["model"] == "gpt-4o-mini-transcribe"
    finally:
        await client.close()


async def test_a_video_note_is_heard_as_a_voice_note(
    telegram: FakeTelegram,
    models: tuple[FakeAnthropic, FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anthropic, openai = models
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-telegram-1111")
    note = {**telegram.add_file(MP4, "note.mp4"), "length": 240, "duration": 3}
    client = await app_client(telegram, CLAUDE)
    try:
        await post(client, media_update(4, video_note=note))
        await telegram.wait_for("sendMessage", seconds=30)
        assert anthropic.requests[0].last_user_text.startswith("[Voice note, transcribed]")
        assert openai.transcriptions[0]["filename"] == "voice.mp4"
    finally:
        await client.close()


async def test_a_pdf_and_a_text_file_are_read(
    telegram: FakeTelegram, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    paper = telegram.add_file(pdf("Quarterly results"), "q3.pdf")
    notes = telegram.add_file(b"Shopping: eggs, milk\n", "notes.txt")
    client = await app_client(telegram, CLAUDE)
    try:
        document = {**paper, "file_name": "q3.pdf", "mime_type": "application/pdf"}
        await post(client, media_update(5, "sum it up", document=document))
        await telegram.wait_for("sendMessage", seconds=30)
        said = anthropic.requests[0].last_user_text
        assert said.startswith("sum it up\n\n[PDF q3.pdf]\nQuarterly results")
        # a text file labelled as an image is read as what its bytes are
        labelled = {**notes, "file_name": "notes.txt", "mime_type": "image/jpeg"}
        await post(client, media_update(6, document=labelled))
        await telegram.wait_for("sendMessage", 2, seconds=30)
        assert anthropic.requests[1].last_user_text == "[File notes.txt]\nShopping: eggs, milk\n"
    finally:
        await client.close()


async def test_stickers_animations_and_oversized_files_get_the_one_line_reply(
    telegram: FakeTelegram, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    sticker = {**telegram.add_file(b"RIFF", "s.webp"), "type": "regular", "emoji": "👋"}
    animation = {**telegram.add_file(MP4, "a.mp4"), "file_name": "cat.gif.mp4"}
    big = {**telegram.add_file(PNG, "big.png", size=5 * MB), "file_name": "big.png"}
    client = await app_client(telegram, CLAUDE)
    try:
        await post(client, media_update(7, sticker=sticker))
        await telegram.wait_for("sendMessage")
        # Telegram sends an animation with a document copy of it
        await post(client, media_update(8, animation=animation, document=animation))
        await telegram.wait_for("sendMessage", 2)
        await post(client, media_update(9, document=big))
        await telegram.wait_for("sendMessage", 3)
        assert texts(telegram) == [
            f"I can't read stickers. I can take {SUPPORTED}.",
            f"I can't read animations. I can take {SUPPORTED}.",
            "That file is too big for me: the limit is 1 MB.",
        ]
        assert telegram.sent("getFile") == [] and telegram.file_hits == []
        assert anthropic.requests == []
    finally:
        await client.close()


async def test_a_file_telegram_refuses_gets_a_plain_reply_and_the_token_stays_out_of_logs(
    telegram: FakeTelegram,
    models: tuple[FakeAnthropic, FakeOpenAI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    anthropic, _ = models
    gone = {**telegram.add_file(PNG, "gone.png", refused=True), "file_name": "gone.png"}
    client = await app_client(telegram, CLAUDE)
    try:
        with caplog.at_level(logging.DEBUG):
            await post(client, media_update(10, document=gone))
            sent = await telegram.wait_for("sendMessage")
        assert sent[0]["text"] == "I couldn't download that file from the platform."
        assert len(telegram.file_hits) == 1 and anthropic.requests == []
        ours = [r.getMessage() for r in caplog.records if "GET /file/bot" not in r.getMessage()]
        assert ours and not any(telegram.token in line for line in ours)  # (the fake's own
        # access log, which shows the URL it was asked for, aside)
        # with a caption the turn goes on: the model is told, the person too
        await post(client, media_update(11, "and this?", document=gone))
        await telegram.wait_for("sendMessage", 3, seconds=30)
        assert texts(telegram)[1:] == [
            "I couldn't download that file from the platform.",
            "echo: and this?\n\n[The user also sent a document (gone.png) that could not be read.]",
        ]
    finally:
        await client.close()


async def test_files_over_the_bot_api_download_limit_are_explained(
    telegram: FakeTelegram, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    roomy = {**CLAUDE, "agent": {**CLAUDE["agent"], "media": {"max_bytes": 50 * MB}}}
    video = {**telegram.add_file(MP4, "v.mp4", size=30 * MB), "file_name": "talk.pdf"}
    client = await app_client(telegram, roomy)
    try:
        await post(client, media_update(12, document=video))
        sent = await telegram.wait_for("sendMessage")
        assert sent[0]["text"] == TOO_BIG_FOR_BOTS
        assert telegram.file_hits == []
    finally:
        await client.close()


async def test_a_group_photo_needs_a_mention_in_its_caption(
    telegram: FakeTelegram, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    photo = telegram.add_file(PNG, "p.png")
    group = {"chat_id": -100, "chat_type": "supergroup"}
    mention = [{"type": "mention", "offset": 0, "length": 9}]
    client = await app_client(telegram, CLAUDE)
    try:
        await post(client, media_update(13, "holiday pics", photo=[photo], **group))
        await post(
            client,
            media_update(14, "@lane_bot", photo=[photo], caption_entities=mention, **group),
        )
        sent = await telegram.wait_for("sendMessage", seconds=30)
        assert sent[0]["text"].startswith("echo:") and len(anthropic.requests) == 1
        blocks = anthropic.requests[0].json["messages"][-1]["content"]
        assert [b["type"] for b in blocks] == ["image"]
        assert len(telegram.sent("getFile")) == 1
    finally:
        await client.close()


async def test_a_polled_photo_is_answered(
    telegram: FakeTelegram, models: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic, _ = models
    photo = {**telegram.add_file(PNG, "p.png"), "width": 10, "height": 10}
    client = await app_client(telegram, CLAUDE, PUBLIC_URL="")
    try:
        await telegram.updates.put(media_update(15, "polled picture", photo=[photo]))
        sent = await telegram.wait_for("sendMessage", seconds=30)
        assert sent[0]["text"] == "echo: polled picture"
        blocks = anthropic.requests[0].json["messages"][-1]["content"]
        assert any(b["type"] == "image" for b in blocks)
    finally:
        await client.close()


# -- parts from the payload ----------------------------------------------------------


def test_media_parts_name_each_kind_from_the_payload() -> None:
    def part(**fields: Any) -> MediaPart:
        [found] = media_parts(fields, MB)
        return found

    file = {"file_id": "F", "file_unique_id": "U", "file_size": 10}
    assert part(voice=file) == MediaPart("voice", mime="audio/ogg", size=10, ref="F")
    assert part(video_note=file) == MediaPart(
        "voice", mime="video/mp4", size=10, name="video note", ref="F"
    )
    song = {**file, "mime_type": "audio/mpeg", "title": "Song"}
    assert part(audio=song) == MediaPart("audio", "audio/mpeg", 10, "Song", ref="F")
    doc = {**file, "file_name": "a.pdf", "mime_type": "application/pdf"}
    assert part(document=doc).name == "a.pdf" and part(document=doc).kind == "document"
    assert part(animation=file, document=file).kind == "animation"
    assert part(sticker=file).kind == "sticker"
    assert part(video=file).kind == "video"
    assert media_parts({"text": "hi"}, MB) == ()


def test_the_largest_photo_within_the_limits_is_taken() -> None:
    sizes = [
        {"file_id": "s", "width": 90, "height": 90, "file_size": 1_000},
        {"file_id": "m", "width": 800, "height": 800, "file_size": 200_000},
        {"file_id": "l", "width": 2560, "height": 2560, "file_size": 6 * MB},
    ]
    assert best_photo(sizes, 10 * MB)["file_id"] == "m"  # 6 MB: over what a model API takes
    assert best_photo(sizes, 100_000)["file_id"] == "s"
    assert best_photo(sizes[1:], 100_000)["file_id"] == "m"  # none fits: the smallest
    assert best_photo([{"file_id": "x"}], MB)["file_id"] == "x"  # no sizes declared


@pytest.mark.parametrize(
    "message",
    [
        {"photo": []},
        {"photo": "x"},
        {"photo": [{"file_id": 5}]},
        {"photo": [{"file_id": "a", "file_size": "big"}]},
        {"voice": {"file_size": 3}},
        {"document": ["x"]},
        {"document": {"file_id": "a", "file_size": -1}},
    ],
)
def test_malformed_files_are_refused(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        media_parts(message, MB)


async def test_hostile_media_updates_are_4xx(telegram: FakeTelegram) -> None:
    client = await app_client(telegram)
    try:
        for n, media in enumerate(({"photo": 7}, {"voice": [1]}, {"document": {"file_id": 1}})):
            body = media_update(20 + n, **media)
            assert await post(client, body) == 400
        caption = media_update(30, photo=[{"file_id": "a"}])
        caption["message"]["caption"] = 5
        assert await post(client, caption) == 200  # nothing to answer
        assert await client.app[HOST_KEY].runtime.storage.inbox_pending() == []
        assert await post(client, update(31, "still fine")) == 200
    finally:
        await client.close()


async def test_fetch_refuses_what_telegram_does_not_serve(
    telegram: FakeTelegram, tmp_path: Path
) -> None:
    bot = make_bot(telegram.token, {"TELEGRAM_API_BASE_URL": telegram.base_url})
    async with bot:
        with pytest.raises(MediaError, match="couldn't download"):
            await fetch(bot, MediaPart("image"), MB)  # no file_id
        with pytest.raises(MediaError, match="couldn't download"):
            await fetch(bot, MediaPart("image", ref="unknown"), MB)
        known = telegram.add_file(PNG, "p.png", size=3 * MB)
        with pytest.raises(MediaError, match="too big"):
            await fetch(bot, MediaPart("image", ref=known["file_id"]), MB)
        found = await fetch(bot, MediaPart("image", ref=known["file_id"]), 10 * MB)
        assert found.url == f"{telegram.base_url}/file/bot{telegram.token}/documents/file_1_p.png"
        assert found.headers == {}
        # a local Bot API server (--local) answers a path on its own disk: not fetched
        local = telegram.add_file(PNG, "l.png", path=str(tmp_path / "l.png"))
        (tmp_path / "l.png").write_bytes(PNG)
        with pytest.raises(MediaError, match="couldn't download"):
            await fetch(bot, MediaPart("image", ref=local["file_id"]), MB)
        telegram.fail("getFile", 403, "Forbidden: bot was blocked by the user")
        with pytest.raises(MediaError, match="couldn't download"):
            await fetch(bot, MediaPart("image", ref=known["file_id"]), MB)


def test_hand_parsed_media_agree_with_ptb() -> None:
    """The webhook reads files from the JSON directly: the same ids, sizes and names
    as PTB's own parsing (``Update.de_json``) of the update."""
    channel = TelegramChannel.__new__(TelegramChannel)
    channel.bot = Bot("1:T")
    channel.max_bytes = MB
    file = {"file_id": "F1", "file_unique_id": "U1", "file_size": 2048}
    photo = [
        {**file, "width": 90, "height": 90},
        {**file, "file_id": "F2", "width": 800, "height": 800, "file_size": 90_000},
    ]
    document = {**file, "file_name": "q3.pdf", "mime_type": "application/pdf"}
    for raw in (
        media_update(1, "look", photo=photo),
        media_update(2, voice={**file, "duration": 3, "mime_type": "audio/ogg"}),
        media_update(3, "read this", document=document),
    ):
        ours = channel.inbound(raw)
        ptb = Update.de_json(raw, channel.bot)
        assert ours is not None and ptb.message is not None
        [part] = ours.attachments
        assert ours.text == (ptb.message.caption or "")
        found = ptb.message.effective_attachment
        if isinstance(found, tuple):  # a photo: PTB lists its sizes, smallest first
            found = found[-1]
        assert part.ref == found.file_id and part.size == found.file_size
        assert part.name == (getattr(found, "file_name", None) or "")
