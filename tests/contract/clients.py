"""`make clients`: the Python client and the TypeScript SDK of the Accounts API, generated from an OpenAPI document
(the committed snapshot `tests/contract/openapi.json`, or a URL such as a running service's `/schema/openapi.json`)
into the git-ignored `tests/contract/generated/`.

`python -m tests.contract.clients [--input DOC_OR_URL] [--output DIR]` is what `make clients` runs; the tests call the
same functions on the served document with a temporary output folder, so a test session never races `make clients`
or another session. A generator that warns fails the run, and so does a client that lacks an operation of the
document: the clients are part of the contract, and a warning is a missing piece. The settings below only style the
clients; each generator's defaults already give every operation without a warning (the contract tests check that).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SNAPSHOT = HERE / "openapi.json"
GENERATED = HERE / "generated"
PYTHON_CONFIG = HERE / "openapi-python-client.yml"
PYTHON_STYLE: tuple[str | Path, ...] = ("--meta", "uv", "--config", PYTHON_CONFIG)
"""openapi-python-client options of `make clients`: a uv project, Literal enums, imports sorted (not needed for any
operation to be generated; without them the defaults apply)."""
PYTHON_PACKAGE = "accounts_client"
OPENAPI_GENERATOR = Path(sysconfig.get_path("scripts")) / "openapi-generator-cli"
"""openapi-generator (Java 11 or newer), from the PyPI package that bundles its jar: a third generator to check."""
OPENAPI_31_NOTICE = "OpenAPI 3.1 support is still in beta"
"""The warning openapi-generator gives every OpenAPI 3.1 document, whatever it holds (ours is 3.1, as Litestar's)."""
NPM_LOCK = HERE / "package-lock.json"
NODE_BIN = HERE / "node_modules" / ".bin"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

Source = Path | str
"""An OpenAPI document: a file, or the URL it is served at."""


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


def is_url(source: Source) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def read_document(source: Source) -> dict[str, Any]:
    if is_url(source):
        with urllib.request.urlopen(str(source), timeout=30) as response:  # noqa: S310 (http(s) only, checked above)
            document: dict[str, Any] = json.load(response)
            return document
    return dict(json.loads(Path(source).read_text()))


def operations(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each operationId of the document, with its method (upper case) and path."""
    return {
        operation["operationId"]: (method.upper(), path)
        for path, path_item in document.get("paths", {}).items()
        for method in METHODS
        if isinstance(operation := path_item.get(method), dict)
    }


def python_operations(project: Path) -> set[tuple[str, str]]:
    """The method and path of each endpoint module of a client made by openapi-python-client (in `_get_kwargs`)."""
    request = re.compile(r'"method": "(\w+)",\s*"url": "([^"]+)"')
    return {
        (method.upper(), path)
        for module in project.glob("*/api/**/*.py")
        for method, path in request.findall(module.read_text())
    }


def typescript_operations(sdk: Path) -> set[str]:
    """The functions exported by the `sdk.gen.ts` of @hey-api/openapi-ts: one per operation, named by its id."""
    return set(re.findall(r"^export const (\w+) = ", (sdk / "sdk.gen.ts").read_text(), flags=re.MULTILINE))


def generate_python(output: Path, source: Source = SNAPSHOT, *, options: Sequence[str | Path] = PYTHON_STYLE) -> Path:
    """openapi-python-client with `options` (default: `make clients`' style; none: its defaults) into `output`."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(output, ignore_errors=True)
    # Post-hooks (the defaults' and ours) run ruff: the one of this virtualenv, even when that is not on PATH.
    env = os.environ | {"PATH": f"{sysconfig.get_path('scripts')}{os.pathsep}{os.environ.get('PATH', '')}"}
    document = ["--url", source] if is_url(source) else ["--path", Path(source).resolve()]
    generate = [sys.executable, "-m", "openapi_python_client", "generate", *document, *options]
    stdout, stderr = run([*generate, "--output-path", output], cwd=output.parent, env=env)
    if stderr or stdout.strip() != f"Generating {output}":
        raise GeneratorFailed(f"openapi-python-client printed more than its progress line:\n{stdout}{stderr}")
    return output


def generate_typescript(output: Path, source: Source = SNAPSHOT, *, configured: bool = True) -> Path:
    """@hey-api/openapi-ts into `output`, with `openapi-ts.config.ts` (`make clients`' style: `.js` imports, no log
    files) or, not `configured`, with its defaults (run outside this folder, where it finds no configuration)."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    install_npm_packages()
    document = source if is_url(source) else Path(source).resolve()
    stdout, stderr = run(
        [NODE_BIN / "openapi-ts", "--input", document, "--output", output],
        cwd=HERE if configured else output.parent,
        env=os.environ | {"NO_COLOR": "1"},
    )
    if stderr:  # where openapi-ts writes its warnings (console.warn)
        raise GeneratorFailed(f"openapi-ts warned:\n{stdout}{stderr}")
    return output


def generate_typescript_fetch(output: Path, source: Source = SNAPSHOT) -> Path:
    """openapi-generator's `typescript-fetch` client, with its defaults, into `output` (not part of `make clients`:
    the contract tests check that a third generator takes the document as well)."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    document = source if is_url(source) else Path(source).resolve()
    generate: list[str | Path] = [
        OPENAPI_GENERATOR,
        "generate",
        "--generator-name",
        "typescript-fetch",
        "--input-spec",
        document,
    ]
    stdout, stderr = run([*generate, "--output", output], cwd=output.parent)
    warnings = [
        line
        for line in (stdout + stderr).splitlines()
        if (" WARN " in line or " ERROR " in line) and OPENAPI_31_NOTICE not in line
    ]
    if warnings:
        raise GeneratorFailed("openapi-generator warned:\n" + "\n".join(warnings))
    return output


def typescript_fetch_operations(client: Path) -> set[str]:
    """The operations of a typescript-fetch client: each is a method `<operationId>Raw` of an API class."""
    return {name for api in client.glob("apis/*.ts") for name in re.findall(r"async (\w+)Raw\(", api.read_text())}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.contract.clients", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input", default=str(SNAPSHOT), help="the OpenAPI document: a file or a URL (default: the snapshot)"
    )
    parser.add_argument("--output", type=Path, default=GENERATED, help="where python/ and ts/ go")
    args = parser.parse_args(argv)
    source: Source = args.input if is_url(args.input) else Path(args.input)
    expected = operations(read_document(source))
    try:
        python = generate_python(args.output / "python", source)
        print(install_npm_packages(), end="")
        typescript = generate_typescript(args.output / "ts", source)
    except GeneratorFailed as exc:
        sys.exit(str(exc))
    python_has, typescript_has = python_operations(python), typescript_operations(typescript)
    missing = [name for name, call in expected.items() if call not in python_has or name not in typescript_has]
    if missing:
        sys.exit(f"operations a generated client lacks: {', '.join(sorted(missing))}")
    print(f"Python client:  {python} (package {PYTHON_PACKAGE})")
    print(f"TypeScript SDK: {typescript}")


if __name__ == "__main__":
    main()
