"""deploy/compose.yaml: valid against the Compose Specification, and started in the right order."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

from tests.deploy.support import COMPOSE, ROOT, run

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
ACCOUNTS_SERVICES = ("migrate", "api", "worker")


def validate(path: Path) -> CompletedProcess[str]:
    """The compose-spec JSON schema that check-jsonschema bundles (vendored from compose-spec/compose-spec)."""
    return run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)])


def test_matches_the_compose_specification() -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_is_live(tmp_path: Path, compose: dict[str, Any]) -> None:
    """A misspelt key in a copy is rejected: the validator really reads the schema."""
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert validate(path).returncode != 0


def test_backing_services_are_postgres_16_and_redis_7_with_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_migrations_run_once_before_the_api_and_the_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["accounts", "database", "upgrade", "--no-prompt"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        assert services[name]["restart"] in {"unless-stopped", "always"}


def test_api_and_worker_commands_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["api"]["command"] == ["accounts", "serve"]
    assert services["worker"]["command"] == ["accounts", "worker"]
    assert "/health/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["api"]["ports"] == ["${ACCOUNTS_PORT:-8000}:8000"]
    for name in ("migrate", "worker"):  # the image's HTTP check means nothing where nothing listens
        assert services[name]["healthcheck"] == {"disable": True}, name


@pytest.mark.parametrize("name", ACCOUNTS_SERVICES)
def test_every_accounts_container_is_the_one_image_hardened(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (COMPOSE.parent / service["build"]["context"]).resolve() == ROOT
    assert service["image"] == compose["services"]["api"]["image"]
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"]  # noqa: S108 - a private tmpfs of the container
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    # DATABASE_URL always set: unset, `accounts` would start an embedded PostgreSQL inside the container.
    assert service["environment"]["DATABASE_URL"].startswith("postgresql://accounts:")
    assert "@postgres:5432/accounts" in service["environment"]["DATABASE_URL"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_share_settings_key_and_data(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    env = service["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    (secret,) = service["secrets"]
    assert secret in compose["secrets"]
    assert env["JWT_SIGNING_KEY_FILE"] == f"/run/secrets/{secret}"
    assert f"accounts-data:{env['DATA_DIR']}" in service["volumes"]
    shutdown = int(env["SHUTDOWN_TIMEOUT"])
    assert int(service["stop_grace_period"].removesuffix("s")) > shutdown


def test_the_signing_key_stays_out_of_git() -> None:
    git = shutil.which("git")
    assert git is not None
    assert run([git, "check-ignore", "-q", "deploy/secrets/jwt-signing-key.pem"]).returncode == 0
