"""Benchmarks: ``python -m bench`` (see ``bench/__main__.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def json_from_child(args: list[str]) -> Any:
    """Run ``python ARGS`` in a fresh interpreter from the project root; the JSON on its
    last line of output (a library may print before it). RuntimeError with its last
    error line if it fails."""
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise RuntimeError(tail[0])
    return json.loads(done.stdout.strip().splitlines()[-1])
