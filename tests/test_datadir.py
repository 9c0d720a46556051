"""A data directory that takes no writes: /healthz says so, and serve refuses to start
with a sentence naming CHATLANE_DATA_DIR instead of a traceback."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import load_config
from bot.datadir import WriteProbe, probe, unwritable
from bot.runtime import AgentRuntime
from bot.server import DISK_KEY, create_app


@contextlib.contextmanager
def writes_fail() -> Iterator[None]:
    """Every write in this process fails (EFBIG), as on a full disk:
    RLIMIT_FSIZE, with SIGXFSZ ignored (Python ignores it at start-up)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def test_healthz_is_503_while_writes_fail_and_200_again_after(tmp_path: Path) -> None:
    runtime = AgentRuntime(config=load_config(), demo_when_unconfigured=True)
    env = {"CHATLANE_DATA_DIR": str(tmp_path / "data")}
    async with TestClient(TestServer(create_app(runtime, env=env))) as client:
        client.app[DISK_KEY].every = 0  # probe on every request
        assert (await client.get("/healthz")).status == 200
        with writes_fail():
            response = await client.get("/healthz")
            body = await response.json()
        assert response.status == 503, body
        assert body["status"] == "unavailable" and body["disk"].startswith("writes fail: File")
        assert (await client.get("/healthz")).status == 200
        left = [p.name for p in (tmp_path / "data").iterdir() if "probe" in p.name]
        assert left == []  # the probe leaves nothing behind


async def test_the_probe_is_cached_between_checks(tmp_path: Path) -> None:
    now = [0.0]
    checks = WriteProbe(tmp_path / "data", every=2.0, clock=lambda: now[0])
    assert await checks.problem() is None
    (tmp_path / "data").rmdir()
    (tmp_path / "data").write_text("a file where the folder was")
    now[0] = 1.0
    assert await checks.problem() is None  # within the 2 s: the last answer
    now[0] = 2.5
    assert await checks.problem() == "File exists"  # mkdir finds the file


def test_unwritable_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    message = unwritable({"CHATLANE_DATA_DIR": str(tmp_path / "file" / "data")})
    assert message is not None
    assert "CHATLANE_DATA_DIR" in message and str(tmp_path / "file" / "data") in message
    assert unwritable({"CHATLANE_DATA_DIR": str(tmp_path / "ok")}) is None
    assert probe(tmp_path / "ok") is None and list((tmp_path / "ok").iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a read-only mount")
def test_serve_on_a_read_only_data_dir_says_so_without_a_traceback(tmp_path: Path) -> None:
    readonly = tmp_path / "ro"
    readonly.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(CHATLANE_DATA_DIR=str(readonly / "data"), PORT="0")
    mount = f"mount --bind {readonly} {readonly} && mount -o remount,ro,bind {readonly}"
    script = f"{mount} && exec {sys.executable} -m bot.cli serve --host 127.0.0.1"
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except PermissionError:  # pragma: no cover
        pytest.skip("user namespaces are not allowed here")
    if "mount" in done.stderr and "Read-only" not in done.stderr:  # pragma: no cover
        pytest.skip(f"no read-only bind mount here: {done.stderr.strip()}")
    assert done.returncode == 2, done.stderr
    assert "CHATLANE_DATA_DIR" in done.stderr and "Read-only file system" in done.stderr
    assert "Traceback" not in done.stderr
