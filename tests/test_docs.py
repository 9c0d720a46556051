"""Every example in the README and docs/ runs: YAML loads as config, Python runs, commands parse.

Python examples run with top-level ``await`` against the fake model servers
(``ANTHROPIC_BASE_URL`` and ``OPENAI_BASE_URL`` point at them, with keys set),
in a fresh folder, so a guide cannot drift from the code. Shell examples are
checked for the ``chatlane`` commands they use.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import build_parser
from bot.config import load_config
from tests.fakes.models import FakeAnthropic, FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^(`{3,})(\w*)[^\n]*\n(.*?)^\1\s*$", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def blocks(language: str) -> list[Any]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for index, match in enumerate(FENCE.finditer(text)):
            if match.group(2) == language:
                found.append(pytest.param(path, match.group(3), id=f"{path.name}-{index}"))
    return found


def test_every_feature_has_a_guide() -> None:
    names = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    for guide in (
        "getting-started.md",
        "configuration.md",
        "thinking.md",
        "auth-profiles.md",
        "fallback.md",
        "lanes.md",
        "compaction.md",
        "tools.md",
        "deployment.md",
        "troubleshooting.md",
        "channels/web.md",
        "channels/terminal.md",
        "channels/telegram.md",
        "channels/writing-a-channel.md",
        "architecture.md",
    ):
        assert guide in names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_links_between_guides_resolve(path: Path) -> None:
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (path.parent / target).resolve().is_file(), f"{path.name} -> {target}"


@pytest.mark.parametrize(("path", "code"), blocks("yaml"))
def test_yaml_examples_are_valid_config(path: Path, code: str) -> None:
    data = yaml.safe_load(code)
    assert isinstance(data, dict)
    load_config(data=data)


@pytest.mark.parametrize(("path", "code"), blocks("sh"))
def test_shell_examples_use_real_commands(path: Path, code: str) -> None:
    parser = build_parser()
    for line in code.splitlines():
        words = shlex.split(line.strip()) if line.strip() else []
        if "chatlane" in words:
            args = words[words.index("chatlane") + 1 :]
            args = args[: args.index("&&")] if "&&" in args else args
            parser.parse_args(args)


@pytest.fixture
async def model_servers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    async with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.base_url)
        monkeypatch.setenv("OPENAI_BASE_URL", openai.api_base)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-docs-0000")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-docs-0000")
        yield


@pytest.mark.parametrize(("path", "code"), blocks("python"))
async def test_python_examples_run(
    path: Path, code: str, model_servers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    compiled = compile(code, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    result = eval(compiled, namespace)
    if result is not None:
        await result
    runtime = namespace.get("runtime")
    if runtime is not None:
        await runtime.close()
    if "print(" in code and "ToolFormatter" in code:
        out = capsys.readouterr().out
        assert "### File Read: config.py" in out and "Content: DEBUG = True" in out
