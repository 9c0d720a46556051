"""The command line's manners (issue 21, "Also"): the terminal chat keeps log lines out
of the conversation, ``check | head`` ends quietly, ``worker`` without Redis says so."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def own_logging() -> Iterator[None]:
    """main() sets up logging on the root logger: put it back for the tests after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env.update(CHATLANE_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


@pytest.mark.slow
def test_the_terminal_chat_shows_the_conversation_and_logs_to_a_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        input="hi\n",
        env=environment(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "You said: hi" in done.stdout
    screen = done.stdout + done.stderr
    assert "turn done" not in screen and '"level"' not in screen, screen
    log = (tmp_path / "data" / "chat.log").read_text()
    assert "turn done" in log
    assert f"the log goes to {tmp_path / 'data' / 'chat.log'}" in done.stderr


@pytest.mark.slow
def test_check_into_a_pipe_whose_reader_left_ends_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "check"],
        env=environment(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: every write finds the reader gone
    try:
        errors = proc.stderr.read()
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stderr.close()
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors
    assert code == 141


def test_worker_without_redis_refuses_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    said = capsys.readouterr().err
    assert "REDIS_URL is not set" in said and "chatlane serve" in said


def test_a_broken_pipe_in_process_returns_141_and_sends_the_rest_nowhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import io

    from bot.cli import main

    class ReaderLeft(io.StringIO):
        def __init__(self, fd: int) -> None:
            super().__init__()
            self.fd = fd

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            return self.fd

    with (tmp_path / "out").open("w") as target:
        monkeypatch.setattr(sys, "stdout", ReaderLeft(target.fileno()))
        monkeypatch.setenv("CHATLANE_DATA_DIR", str(tmp_path / "data"))
        assert main(["check"]) == 141
