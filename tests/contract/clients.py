"""`make clients`: the Python client and the TypeScript SDK of the Accounts API, generated from the committed
OpenAPI snapshot `tests/contract/openapi.json` into the git-ignored `tests/contract/generated/`.

`python -m tests.contract.clients [--input DOC] [--output DIR]` is what `make clients` runs; the tests call the
same functions with a temporary output folder, so a test session never races `make clients` or another session.
A generator that warns fails the run: the clients are part of the contract, and a warning is a missing piece.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "openapi.json"
GENERATED = HERE / "generated"
PYTHON_CONFIG = HERE / "openapi-python-client.yml"
PYTHON_PACKAGE = "accounts_client"
NPM_LOCK = HERE / "package-lock.json"
NODE_BIN = HERE / "node_modules" / ".bin"


class GeneratorFailed(Exception):
    """A generator (or npm) exited non-zero or printed a warning; the message carries what it printed."""


def run(command: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run `command`; returns its stdout and stderr, raises GeneratorFailed with both when it exits non-zero."""
    args = [str(part) for part in command]
    # The commands are this module's own: fixed programs with paths as arguments, no shell.
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)  # noqa: S603
    if result.returncode != 0:
        raise GeneratorFailed(f"`{' '.join(args)}` exited with {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout, result.stderr


@contextmanager
def npm_lock() -> Iterator[None]:
    """Serialise `npm ci` between processes (two test sessions may start at once on a fresh checkout)."""
    with NPM_LOCK.open("rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install_npm_packages() -> str:
    """`npm ci` from the committed lock file unless node_modules came from it already; returns what npm printed."""
    if shutil.which("npm") is None:
        raise GeneratorFailed("npm is not on PATH: the TypeScript SDK needs Node.js and npm")
    with npm_lock():
        installed = HERE / "node_modules" / ".package-lock.json"
        if installed.is_file() and installed.stat().st_mtime >= NPM_LOCK.stat().st_mtime:
            return ""
        stdout, stderr = run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE)
        return stdout + stderr


def is_msgpack(media_type: str) -> bool:
    """`application/msgpack`, `application/problem+msgpack`, `application/vnd.msgpack` and the like."""
    return media_type.split(";", 1)[0].strip().lower().endswith("msgpack")


def json_view(document: dict[str, Any]) -> dict[str, Any]:
    """The document without its MessagePack alternatives, for openapi-python-client.

    The Python client speaks JSON. openapi-python-client warns on a request body type it cannot encode, and
    `content_type_overrides` cannot help: mapping `application/msgpack` to `application/json` makes it send JSON
    labelled as MessagePack and turns required bodies optional (openapi-python-client issues 1276 and 1451).
    """
    view = copy.deepcopy(document)
    holders: list[dict[str, Any]] = []
    for path_item in view.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                holders.append(operation.get("requestBody", {}))
                holders.extend(operation.get("responses", {}).values())
    components = view.get("components", {})
    holders.extend(components.get("requestBodies", {}).values())
    holders.extend(components.get("responses", {}).values())
    for holder in holders:
        content = holder.get("content", {})
        for media_type in [name for name in content if is_msgpack(name)]:
            del content[media_type]
    return view


def generate_python(output: Path, document: Path = SNAPSHOT) -> Path:
    """openapi-python-client: a uv project in `output` with the package `accounts_client`; returns `output`."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    view = output.parent / "openapi.python.json"
    view.write_text(json.dumps(json_view(json.loads(document.read_text())), indent=2) + "\n")
    shutil.rmtree(output, ignore_errors=True)
    # The config's post-hooks run ruff: the one of this virtualenv, even when that is not on PATH.
    env = os.environ | {"PATH": f"{sysconfig.get_path('scripts')}{os.pathsep}{os.environ.get('PATH', '')}"}
    generate = [sys.executable, "-m", "openapi_python_client", "generate", "--meta", "uv", "--fail-on-warning"]
    stdout, stderr = run(
        [*generate, "--path", view, "--config", PYTHON_CONFIG, "--output-path", output], cwd=output.parent, env=env
    )
    if stderr or stdout.strip() != f"Generating {output}":
        raise GeneratorFailed(f"openapi-python-client printed more than its progress line:\n{stdout}{stderr}")
    return output


def generate_typescript(output: Path, document: Path = SNAPSHOT) -> Path:
    """@hey-api/openapi-ts with `openapi-ts.config.ts`: the fetch-based SDK in `output`; returns `output`."""
    output = output.resolve()
    install_npm_packages()
    stdout, stderr = run(
        [NODE_BIN / "openapi-ts", "--input", document.resolve(), "--output", output],
        cwd=HERE,
        env=os.environ | {"NO_COLOR": "1"},
    )
    if stderr:  # where openapi-ts writes its warnings (console.warn)
        raise GeneratorFailed(f"openapi-ts warned:\n{stdout}{stderr}")
    return output


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.contract.clients", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=SNAPSHOT, help="the OpenAPI document (default: the snapshot)")
    parser.add_argument("--output", type=Path, default=GENERATED, help="where python/ and ts/ go")
    args = parser.parse_args(argv)
    try:
        python = generate_python(args.output / "python", args.input)
        print(install_npm_packages(), end="")
        typescript = generate_typescript(args.output / "ts", args.input)
    except GeneratorFailed as exc:
        sys.exit(str(exc))
    print(f"Python client:  {python} (package {PYTHON_PACKAGE})")
    print(f"TypeScript SDK: {typescript}")


if __name__ == "__main__":
    main()
