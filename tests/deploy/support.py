"""What the deploy tests share, fixtures aside: where the deploy files are, running the checking tools, a reader of
the Dockerfile's stages and a renderer of the kustomization."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUSTOMIZE_BASE = DEPLOY / "k8s" / "base"


def run(
    args: list[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run one of the checking tools (or the reproduced image's commands), output captured, never raising."""
    return subprocess.run(  # noqa: S603 - absolute paths of the tools this repository installs, our own files
        args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


@dataclass(frozen=True)
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions grouped by stage, continuation lines joined and comments dropped (enough for these checks)."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", value, re.IGNORECASE)
            assert match, f"unparsed FROM {value!r}"
            stages.append(Stage(image=match.group(1), name=match.group(2), instructions=[]))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, value))
    return stages


def build_args(text: str) -> dict[str, str]:
    """Default values of the global ARGs (before the first FROM)."""
    head = text.split("\nFROM ", 1)[0]
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", head, re.MULTILINE))


# What the renderer understands; anything else in kustomization.yaml fails loudly instead of rendering wrong.
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images"}


def render_kustomization(base: Path) -> list[dict[str, Any]]:
    """`kustomize build` for a base that only lists plain resource files and sets images."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZATION_KEYS
    assert not unknown, f"kustomization.yaml uses {sorted(unknown)}: teach render_kustomization() first"
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((base / resource).read_text()) if doc]
    images = {image["name"]: image for image in kustomization.get("images", [])}
    pods = [pod for pod in map(pod_spec, documents) if pod is not None]
    for pod in pods:
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            image = images.get(container["image"].split(":", 1)[0])
            if image:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return documents


def pod_spec(document: dict[str, Any]) -> dict[str, Any] | None:
    if document["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        spec: dict[str, Any] = document["spec"]["template"]["spec"]
        return spec
    return None
