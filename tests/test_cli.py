"""The chatlane command: check, chat, serve (a real process), config errors, log hygiene."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import load_config
from bot.logs import JSONFormatter, RedactSecrets, request_id, secret_values, setup_logging
from tests.procs import free_port


@pytest.fixture(autouse=True)
def own_logging() -> Iterator[None]:
    """main() sets up logging on the root logger (its handler writes to this test's
    captured stderr): put the root logger back as it was for the tests after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()  # the chat's log file
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_check_reports_channels_and_masks_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-verysecret-9876")
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "Config: built-in defaults" in out
    assert "primary: anthropic/claude-sonnet-4-6 (ready)" in out
    assert "****9876" in out and "verysecret" not in out
    assert "web: on" in out and "terminal: on" in out
    assert "Storage: SQLiteStorage: reachable" in out


def test_check_without_keys_says_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "offline demo model" in out
    assert "none (set ANTHROPIC_API_KEY or OPENAI_API_KEY" in out


def test_bad_config_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  thinking_mode: loud\n")
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "agent.thinking_mode" in err and "Traceback" not in err


def test_terminal_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from channels.terminal import TerminalChannel

    stdin = io.StringIO("/think stream\nhello there\n/quit\n")
    stdout = io.StringIO()
    code = asyncio.run(TerminalChannel.run_terminal(load_config(), stdin=stdin, stdout=stdout))
    out = stdout.getvalue()
    assert code == 0
    assert "Thinking mode set to stream." in out
    assert "[reasoning]" in out and "You said: hello there" in out
    assert "\x1b[" not in out  # no colours when not a terminal


def test_chat_command_runs_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["chat"]) == 0
    assert "You said: hi" in out.getvalue()


def test_serve_binds_port_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        {
            "PORT": str(port),
            "CHATLANE_DATA_DIR": str(tmp_path / "data"),
            "ANTHROPIC_API_KEY": "sk-ant-leak-check-123456",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        health = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.1)
        assert health is not None and health["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("listening on http://127.0.0.1" in line["message"] for line in lines)
    assert "sk-ant-leak-check-123456" not in err


def test_redaction_and_json_format() -> None:
    secrets = secret_values(
        {"SLACK_BOT_TOKEN": "xoxb-secret-value", "HOME": "/root", "CUSTOM": "custom-secret-1"},
        ["CUSTOM"],
    )
    assert secrets == {"xoxb-secret-value", "custom-secret-1"}
    record = logging.LogRecord(
        "x",
        logging.INFO,
        __file__,
        1,
        "token %s and %s",
        ("xoxb-secret-value", "custom-secret-1"),
        None,
    )
    assert RedactSecrets(secrets).filter(record)
    line = json.loads(JSONFormatter().format(record))
    assert line["message"] == "token [redacted] and [redacted]"
    assert line["level"] == "info"


@pytest.mark.parametrize(
    "text", ["plain", 'a "quote" and \\ a backslash', "new\nline\ttab\x00\x1f", "héllo 👋 \u2028"]
)
def test_json_lines_escape_as_json_dumps_does(text: str) -> None:
    record = logging.LogRecord(f"bot.{text}", logging.WARNING, __file__, 1, text, None, None)
    token = request_id.set(f"req-{text}")
    try:
        line = JSONFormatter().format(record)
    finally:
        request_id.reset(token)
    fields = {
        "level": "warning",
        "logger": f"bot.{text}",
        "message": text,
        "request": f"req-{text}",
    }
    assert line == json.dumps({"time": json.loads(line)["time"], **fields}, ensure_ascii=False)
    try:
        raise ValueError(text)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert f"ValueError: {text}" in json.loads(JSONFormatter().format(record))["exception"]


def test_setup_logging_picks_format() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging({"LOG_FORMAT": "json", "LOG_LEVEL": "debug"})
        assert isinstance(root.handlers[0].formatter, JSONFormatter)
        assert root.level == logging.DEBUG
        setup_logging({"LOG_FORMAT": "text"})
        assert not isinstance(root.handlers[0].formatter, JSONFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.slow
def test_no_secret_reaches_the_logs(tmp_path: Path) -> None:
    """Every channel configured, its API unreachable, forged requests sent: no secret is logged."""
    port, dead = free_port(), free_port()
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-secret-aaaa1111",
        "OPENAI_API_KEY": "sk-openai-secret-bbbb2222",
        "TELEGRAM_BOT_TOKEN": "123456:telegram-secret-cccc",
        "TELEGRAM_WEBHOOK_SECRET": "webhook-secret-dddd",
        "SLACK_BOT_TOKEN": "xoxb-slack-secret-eeee",
        "SLACK_SIGNING_SECRET": "slack-signing-secret-ffff",
        "TWILIO_ACCOUNT_SID": "AC-twilio-sid-gggg",
        "TWILIO_AUTH_TOKEN": "twilio-token-secret-hhhh",
        "DISCORD_BOT_TOKEN": "discord-token-secret-iiii",
    }
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(secrets)
    env.update(
        {
            "PORT": str(port),
            "CHATLANE_DATA_DIR": str(tmp_path / "data"),
            "LOG_LEVEL": "DEBUG",
            "TWILIO_FROM_NUMBER": "+15550009999",
            "PUBLIC_URL": "https://bot.example.com",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{dead}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{dead}/v1",
            "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{dead}",
            "SLACK_API_BASE_URL": f"http://127.0.0.1:{dead}/api/",
            "TWILIO_API_BASE_URL": f"http://127.0.0.1:{dead}",
            "DISCORD_API_BASE_URL": f"http://127.0.0.1:{dead}/api/v10",
            "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{dead}/gateway",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for path, body, refused in [
            ("/telegram/webhook", b'{"update_id": 1}', 403),
            ("/slack/events", b"{}", 401),
            ("/twilio/sms", b"From=x&Body=y", 403),
        ]:
            request = urllib.request.Request(base + path, data=body, method="POST")
            with pytest.raises(urllib.error.HTTPError) as forged:
                urllib.request.urlopen(request, timeout=5).close()
            forged.value.close()
            assert forged.value.code == refused, path
        chat = urllib.request.Request(
            base + "/api/chat",
            data=json.dumps({"session_id": "s", "text": "hi"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(chat, timeout=30) as response:
            answer = response.read().decode()
        assert "error" in answer  # the model is unreachable: a plain sentence, no key
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    logged = out + err + answer
    assert "model call failed" in logged and "turn failed" in logged
    for name, value in secrets.items():
        assert value not in logged, name


async def test_webhooks_set_registers_through_the_channel_that_offers_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from tests.fakes.telegram import FakeTelegram

    async with FakeTelegram() as telegram:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", telegram.token)
        monkeypatch.setenv("TELEGRAM_API_BASE_URL", telegram.base_url)
        monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "hook-secret-1234")
        monkeypatch.setenv("PUBLIC_URL", "https://bot.example.com")
        # main() runs its own event loop: in a thread, while this one serves the fake
        assert await asyncio.to_thread(main, ["webhooks", "set"]) == 0
        [registered] = telegram.sent("setWebhook")
    assert registered["url"] == "https://bot.example.com/telegram/webhook"
    assert registered["secret_token"] == "hook-secret-1234"
    assert "webhook set to https://bot.example.com/telegram/webhook" in capsys.readouterr().out
    monkeypatch.delenv("PUBLIC_URL")
    assert await asyncio.to_thread(main, ["webhooks", "set"]) == 1  # the channel says why
