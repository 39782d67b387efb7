"""The deploy files, loaded once: the Dockerfile's instructions, the compose file and the rendered kustomization.
How they are read and rendered is in tests/deploy/support.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.support import COMPOSE, DOCKERFILE, KUSTOMIZE_BASE, Stage, parse_dockerfile, render_kustomization


@pytest.fixture(scope="session")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="session")
def stages(dockerfile_text: str) -> list[Stage]:
    return parse_dockerfile(dockerfile_text)


@pytest.fixture(scope="session")
def final_stage(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@pytest.fixture(scope="session")
def manifests() -> list[dict[str, Any]]:
    return render_kustomization(KUSTOMIZE_BASE)


@pytest.fixture(scope="session")
def by_kind_name(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in manifests}
