"""Deploy files: requirements.txt in sync with pyproject.toml, and the PaaS files agree with
the Procfile, the health route and one another. ``python -m tests.test_deploy`` rewrites
requirements.txt from pyproject.toml."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "# Generated from pyproject.toml by `python -m tests.test_deploy`; the tests check it is in\n"
    "# sync. The PaaS buildpacks (Heroku, Render) install from this file; '.' is chatlane itself.\n"
)


def expected_requirements() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return HEADER + "".join(f"{dep}\n" for dep in project["dependencies"]) + ".\n"


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_requirements_are_in_sync_with_pyproject() -> None:
    assert (ROOT / "requirements.txt").read_text() == expected_requirements(), (
        "requirements.txt is out of date: run `python -m tests.test_deploy`"
    )


def test_python_version_is_one_the_project_supports() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.1[1-9]", version)
    for name in ("Dockerfile",):
        assert f"python:{version}-slim" in (ROOT / name).read_text()


def test_procfile_serves_and_works() -> None:
    assert procfile() == {"web": "chatlane serve", "worker": "chatlane worker"}


def test_app_json_is_a_heroku_button() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    addons = {
        a["plan"].split(":")[0] if isinstance(a, dict) else a.split(":")[0] for a in app["addons"]
    }
    assert addons == {"heroku-postgresql", "heroku-redis"}
    assert set(app["formation"]) == set(procfile())
    assert app["env"]["REDIS_SSL_CERT_REQS"]["value"] == "none"
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "TELEGRAM_BOT_TOKEN", "PUBLIC_URL"):
        assert app["env"][name]["required"] is False and app["env"][name]["description"]
    assert app["env"]["CHATLANE_METRICS_TOKEN"]["generator"] == "secret"


def test_render_yaml_runs_the_procfile_with_postgres_and_redis() -> None:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    services = {s["name"]: s for s in blueprint["services"]}
    web, worker = services["chatlane"], services["chatlane-worker"]
    assert web["type"] == "web" and web["startCommand"] == procfile()["web"]
    assert web["healthCheckPath"] == "/healthz"
    assert worker["type"] == "worker" and worker["startCommand"] == procfile()["worker"]
    assert services["chatlane-redis"]["type"] == "keyvalue"
    for service in (web, worker):
        assert service["buildCommand"] == "pip install -r requirements.txt"
        names = {v["key"]: v for v in service["envVars"]}
        assert names["DATABASE_URL"]["fromDatabase"]["property"] == "connectionString"
        assert names["REDIS_URL"]["fromService"]["name"] == "chatlane-redis"
    assert blueprint["databases"][0]["name"] == "chatlane-db"


def test_dockerfile_is_slim_non_root_cached_and_checked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    steps = [line.split()[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert "USER" in steps and "HEALTHCHECK" in steps
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    # Dependencies are installed from requirements before the code is copied: a code
    # change does not reinstall them.
    assert text.index("COPY requirements.txt") < text.index("pip install") < text.index("COPY bot")
    assert "/healthz" in text and 'CMD ["chatlane", "serve"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for name in (".venv", ".git", "data", "tests", "__pycache__"):
        assert name in ignored


def docker_runs() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not docker_runs(), reason="no docker daemon: the files are checked above")
def test_the_image_builds() -> None:  # pragma: no cover (needs docker)
    subprocess.run(["docker", "build", "-t", "chatlane-ci", str(ROOT)], check=True, timeout=900)


if __name__ == "__main__":
    (ROOT / "requirements.txt").write_text(expected_requirements())
    print("requirements.txt written from pyproject.toml")
