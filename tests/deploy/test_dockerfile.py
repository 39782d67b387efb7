"""deploy/Dockerfile: hadolint, and what the image must be (checked without a Docker engine)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import tomllib
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import pytest

from accounts.core.db import MIGRATIONS_PATH
from tests.deploy.support import DOCKERFILE, ROOT, Stage, build_args, run

HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_finds_nothing() -> None:
    result = run([str(HADOLINT), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_is_live(tmp_path: Path) -> None:
    """The linter really reads the file: a classic mistake in a copy of it is reported."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text() + "RUN apt-get install curl\n")
    result = run([str(HADOLINT), "--no-color", str(broken)])
    assert result.returncode != 0
    assert "DL3008" in result.stdout


def test_final_stage_is_python_311_slim_with_a_tag(final_stage: Stage, dockerfile_text: str) -> None:
    image = final_stage.image
    for name, value in build_args(dockerfile_text).items():
        image = image.replace(f"${{{name}}}", value)
    assert re.fullmatch(r"python:3\.11-slim-[a-z]+", image), image


def test_builder_syncs_the_locked_runtime_dependencies_with_uv(stages: list[Stage]) -> None:
    runs = " ".join(" ".join(stage.all("RUN")) for stage in stages[:-1])
    assert "uv sync --locked --no-dev" in runs
    # accounts.core.db finds migrations/ next to src/: the project must stay an editable install of /app/src.
    assert "--no-editable" not in runs
    assert "pip install" not in runs


def test_uv_comes_from_its_official_image_at_a_pinned_version(stages: list[Stage], dockerfile_text: str) -> None:
    uv_version = build_args(dockerfile_text)["UV_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", uv_version)
    assert any(stage.image == "ghcr.io/astral-sh/uv:${UV_VERSION}" for stage in stages)


def test_final_stage_has_only_the_venv_the_source_and_the_migrations(final_stage: Stage) -> None:
    copies = [copy.split() for copy in final_stage.all("COPY")]
    sources = sorted(part for copy in copies for part in copy[1:-1] if not part.startswith("--"))
    assert sources == ["/app/.venv", "/app/src", "migrations"]
    runs = " ".join(final_stage.all("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "uv ", "pip "):
        assert tool not in runs


def test_image_layout_keeps_the_migrations_where_accounts_db_looks(final_stage: Stage) -> None:
    destinations = {copy.split()[-2]: copy.split()[-1] for copy in final_stage.all("COPY")}
    db_in_repo = Path(sys.modules["accounts.core.db"].__file__ or "").resolve().relative_to(MIGRATIONS_PATH.parent)
    db_in_image = PurePosixPath(destinations["/app/src"]) / db_in_repo.relative_to("src")
    expected = db_in_image.parents[len(db_in_repo.parts) - 1] / MIGRATIONS_PATH.name
    assert PurePosixPath(destinations["migrations"]) == expected


def test_runs_as_a_fixed_non_root_user(final_stage: Stage) -> None:
    (user,) = final_stage.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "numeric, so Kubernetes' runAsNonRoot can check it"
    assert gid.isdigit()
    assert int(uid) >= 10000
    assert int(gid) >= 10000
    assert f"--uid {uid}" in " ".join(final_stage.all("RUN"))


def test_environment_for_a_container(final_stage: Stage) -> None:
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(final_stage.all("ENV"))))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOST"] == "0.0.0.0"  # noqa: S104 - in a container, as it must
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert "DATABASE_URL" not in env, "set at run time; unset would start the embedded PostgreSQL"


def test_serves_with_granian_on_port_8000_and_checks_liveness(final_stage: Stage) -> None:
    assert json.loads(final_stage.all("CMD")[-1]) == ["accounts", "serve"]
    assert final_stage.all("ENTRYPOINT") == [], "so `accounts worker` and migrations run with the same image"
    assert final_stage.all("EXPOSE") == ["8000"]
    (healthcheck,) = final_stage.all("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "ProxyHandler({})" in command[2], "straight to the container, whatever HTTP_PROXY says"
    assert "/health/live" in command[2]


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/live" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_health_check_command_passes_and_fails(final_stage: Stage) -> None:
    """The HEALTHCHECK's Python exits 0 when /health/live answers and non-zero when nothing does."""
    (healthcheck,) = final_stage.all("HEALTHCHECK")
    command = [sys.executable, *json.loads(healthcheck.split(" CMD ", 1)[1])[1:]]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        up = run(command, env={"PORT": str(server.server_address[1]), "HTTP_PROXY": "http://127.0.0.1:9"}, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert up.returncode == 0, up.stderr
    down = run(command, env={"PORT": str(server.server_address[1])}, timeout=30)
    assert down.returncode == 1
    assert "URLError" in down.stderr or "ConnectionRefused" in down.stderr


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough: the last matching pattern wins, a match on a parent folder counts."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch(candidate, bare) for candidate in candidates):
            ignored = not negated
    return ignored


def test_build_context_keeps_what_the_build_copies(stages: list[Stage]) -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    needed = {readme, "pyproject.toml", "uv.lock", "src/accounts/app.py", "migrations/env.py"}
    for stage in stages:
        for copy in stage.all("COPY"):
            if "--from=" not in copy:
                needed.update(part.rstrip("/") for part in copy.split()[:-1] if not part.startswith("--"))
    needed.discard(".")
    for path in sorted(needed):
        assert (ROOT / path).exists(), path
        assert not _dockerignored(path, patterns), f"{path} is needed by the build but .dockerignore drops it"
    for path in (".venv/bin/python", ".data/jwt-signing-key.pem", ".git/HEAD", "src/accounts/__pycache__/app.pyc"):
        assert _dockerignored(path, patterns), path


def _uv() -> list[str]:
    if found := shutil.which("uv"):
        return [found]
    python = shutil.which("python3")
    if python is None:
        pytest.fail("neither uv nor python3 -m uv is on PATH (make install needs one)")
    return [python, "-m", "uv"]


def test_the_image_layout_runs_accounts(tmp_path: Path) -> None:
    """The builder's steps without Docker: a locked, no-dev, editable venv of app/src, then only .venv, src and
    migrations kept; `accounts --help` works and the Alembic folder is found."""
    app = tmp_path / "app"
    app.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, app / name)
    shutil.copytree(ROOT / "src", app / "src", ignore=shutil.ignore_patterns("__pycache__"))
    # The caller's environment (proxies, certificates, uv's cache), without the virtualenv pytest runs in.
    inherited = {name: value for name, value in os.environ.items() if name not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env = inherited | {
        "UV_PROJECT_ENVIRONMENT": str(app / ".venv"),
        "UV_PYTHON": f"{sys.version_info.major}.{sys.version_info.minor}",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON_PREFERENCE": "only-system",
        "UV_LINK_MODE": "copy",
    }
    sync = run([*_uv(), "sync", "--locked", "--no-dev", "--quiet"], cwd=app, env=env, timeout=600)
    assert sync.returncode == 0, sync.stderr
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        (app / name).unlink()
    shutil.copytree(ROOT / "migrations", app / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    assert not (app / ".venv" / "bin" / "pytest").exists(), "no dev dependencies in the image"

    bin_dir = app / ".venv" / "bin"
    run_env = inherited | {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    run_env |= {"DATABASE_URL": "postgresql://accounts@127.0.0.1:9/accounts", "DATA_DIR": str(tmp_path / "data")}
    probe = "import accounts, accounts.core.db as db; print(accounts.__file__); print(db.MIGRATIONS_PATH)"
    found = run([str(bin_dir / "python"), "-c", probe], cwd=app, env=run_env)
    assert found.returncode == 0, found.stderr
    module, migrations = found.stdout.split()
    assert Path(module).is_relative_to(app / "src")
    assert Path(migrations) == app / "migrations"
    assert (Path(migrations) / "env.py").is_file()
    cli = run([str(bin_dir / "accounts"), "--help"], cwd=app, env=run_env)
    assert cli.returncode == 0, cli.stderr
    for command in ("serve", "worker", "database"):
        assert re.search(rf"\b{command}\b", cli.stdout), command
