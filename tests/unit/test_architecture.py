"""The import graph of the packages runs one way: core knows no domain, each domain imports only core and the
domains below it, and only the wiring (app, cli, worker) imports everything. Read from the source with `ast`,
lazy imports inside functions included, so a shortcut taken anywhere shows up here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "accounts"
LAYERS = [
    "config",
    "core",
    "jobs",
    "mail",
    "events",
    "users",
    "clients",
    "webhooks",
    "mfa",
    "passkeys",
    "auth",
    "system",
    "app",
    "cli",
    "worker",
    "__main__",
]
"""From the bottom up: a package may import those before it, never those after."""
WIRING = {"app", "cli", "worker", "__main__"}


def package_of(path: Path) -> str:
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def imported_packages(path: Path) -> set[str]:
    """The top-level packages of `accounts` that the module at `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {name.split(".")[1] for name in names if name.startswith("accounts.")}
    return found


MODULES = sorted(path for path in SOURCE.rglob("*.py") if path.name != "__init__.py" or path.parent != SOURCE)


def test_every_package_has_a_layer() -> None:
    assert {package_of(path) for path in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(SOURCE)))
def test_a_module_imports_only_what_is_below_it(path: Path) -> None:
    own = package_of(path)
    above = set(LAYERS[LAYERS.index(own) + 1 :])
    if own in WIRING:
        above -= WIRING  # the wiring's modules may use each other (the CLI serves the app, the app runs a worker)
    assert imported_packages(path) & above == set(), f"{own} must not import {sorted(imported_packages(path) & above)}"


def test_core_imports_no_domain() -> None:
    for path in SOURCE.joinpath("core").rglob("*.py"):
        assert imported_packages(path) <= {"config", "core"}, path
