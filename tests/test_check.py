"""``chatlane check --live`` against the fake platforms and providers; ``--version``; ``init``."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.check import run_check
from bot.cli import main
from bot.config import load_config
from tests.fakes import discord as fake_discord
from tests.fakes import slack as fake_slack
from tests.fakes import twilio as fake_twilio
from tests.fakes.discord import FakeDiscord
from tests.fakes.models import FakeAnthropic, FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.fakes.twilio import FakeTwilio

ANTHROPIC_KEY = "sk-ant-live-check-0001"
OPENAI_KEY = "sk-openai-live-check-0002"


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, Any]]:
    async with (
        FakeTelegram() as telegram,
        FakeSlack() as slack,
        FakeTwilio() as twilio,
        FakeDiscord() as discord,
        FakeAnthropic() as anthropic,
        FakeOpenAI() as openai,
    ):
        yield {
            "telegram": telegram,
            "slack": slack,
            "twilio": twilio,
            "discord": discord,
            "anthropic": anthropic,
            "openai": openai,
        }


def env_for(fakes: dict[str, Any], **changes: str) -> dict[str, str]:
    env = {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": fakes["anthropic"].base_url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": fakes["openai"].api_base,
        "TELEGRAM_BOT_TOKEN": fakes["telegram"].token,
        "TELEGRAM_API_BASE_URL": fakes["telegram"].base_url,
        "SLACK_BOT_TOKEN": fake_slack.TOKEN,
        "SLACK_SIGNING_SECRET": fake_slack.SIGNING_SECRET,
        "SLACK_API_BASE_URL": fakes["slack"].base_url,
        "TWILIO_ACCOUNT_SID": fake_twilio.SID,
        "TWILIO_AUTH_TOKEN": fake_twilio.TOKEN,
        "TWILIO_FROM_NUMBER": fake_twilio.FROM,
        "TWILIO_API_BASE_URL": fakes["twilio"].base_url,
        "DISCORD_BOT_TOKEN": fake_discord.TOKEN,
        "DISCORD_API_BASE_URL": fakes["discord"].api,
    }
    env.update(changes)
    return env


async def live_check(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    for name, value in env.items():  # the SDKs read their base URLs from the environment
        monkeypatch.setenv(name, value)
    code = await run_check(load_config(), dict(os.environ), live=True)
    out = capsys.readouterr().out
    live = out.split("\nLive:\n", 1)[1]
    return code, live


def secrets(env: dict[str, str]) -> list[str]:
    return [v for k, v in env.items() if k.endswith(("KEY", "TOKEN", "SECRET"))]


async def test_every_credential_works(
    fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(fakes)
    code, live = await live_check(env, monkeypatch, capsys)
    assert code == 0, live
    lines = dict(line.strip().split(": ", 1) for line in live.splitlines() if line.strip())
    assert lines["telegram"].startswith("works: @lane_bot; webhook:")
    assert lines["slack"].startswith("works: lane in ")
    assert lines["sms"] == f"works: account Lane (active); sends from {fake_twilio.FROM}"
    assert lines["discord"].startswith("works: ")
    assert lines["anthropic (key anthropic-default, ****0001)"] == "works: 1 model(s) listed"
    assert lines["openai (key openai-default, ****0002)"] == "works: 1 model(s) listed"
    for secret in secrets(env):
        assert secret not in live
    assert [c.method for c in fakes["telegram"].calls][:2] == ["getMe", "getWebhookInfo"]


async def test_refused_credentials_say_what_to_fix_and_exit_1(
    fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes["anthropic"].refused_keys.add(ANTHROPIC_KEY)
    env = env_for(
        fakes,
        TELEGRAM_BOT_TOKEN="999:WRONG-TOKEN",
        SLACK_BOT_TOKEN="xoxb-wrong-token-000000",
        TWILIO_AUTH_TOKEN="wrong-twilio-token-000000",
        DISCORD_BOT_TOKEN="wrong-discord-token.000000",
    )
    code, live = await live_check(env, monkeypatch, capsys)
    assert code == 1
    lines = dict(line.strip().split(": ", 1) for line in live.splitlines() if line.strip())
    assert lines["telegram"].startswith("REFUSED: getMe refused the token (HTTP 401")
    assert "TELEGRAM_BOT_TOKEN" in lines["telegram"]
    assert lines["slack"].startswith("REFUSED: auth.test refused the token (invalid_auth)")
    assert lines["sms"].startswith("REFUSED: the Twilio account refused the credentials (HTTP 401")
    assert lines["discord"].startswith("REFUSED: users/@me refused the token (HTTP 401)")
    assert lines["anthropic (key anthropic-default, ****0001)"].startswith("REFUSED: HTTP 401")
    assert lines["openai (key openai-default, ****0002)"].startswith("works")
    for secret in secrets(env):
        assert secret not in live


async def test_a_number_not_on_the_account_is_refused(
    fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, live = await live_check(
        env_for(fakes, TWILIO_FROM_NUMBER="+15550000000"), monkeypatch, capsys
    )
    assert code == 1
    assert "sms: REFUSED: account Lane (active); +15550000000 is not a number" in live


async def test_an_unreachable_platform_fails_the_check(
    fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = env_for(fakes, TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{port}")
    code, live = await live_check(env, monkeypatch, capsys)
    assert code == 1
    assert "telegram: UNREACHABLE: Telegram API unreachable (ClientConnectorError)" in live


def test_cli_check_live_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--live"]) == 0  # the web chat on the demo model: nothing refused
    out = capsys.readouterr().out
    assert "Live:\n  nothing to ask" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("chatlane 0.")


def test_init_writes_valid_examples_and_keeps_existing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    config = load_config(tmp_path / "config" / "config.yaml")
    assert config.agent.model == "anthropic/claude-sonnet-4-6"
    assert config.channel("sms").rate_limit_per_minute == 10
    example = (tmp_path / ".env.example").read_text()
    assert "DATABASE_URL=" in example and "CHATLANE_METRICS_TOKEN=" in example
    (tmp_path / ".env.example").write_text("mine")
    assert main(["init"]) == 1
    assert "already exists; use --force" in capsys.readouterr().err
    assert (tmp_path / ".env.example").read_text() == "mine"
    assert main(["init", "--force"]) == 0
    assert (tmp_path / ".env.example").read_text() == example
