"""Secrets never leak: no log line, and no response other than the one that hands it out, contains a
password, a password hash, a refresh token, an access token or an API key secret.

A child process builds the app (JSON logs at DEBUG, access log on, written to its stdout) and walks
through sign-up, logins, refreshes, reuse, logouts, a password change and the life of an API key, with
secrets also sent where they do not belong; this process then searches everything it wrote and answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.integration.auth.support import (
    API_KEYS,
    LOGOUT,
    LOGOUT_ALL,
    ME,
    MY_PASSWORD,
    REFRESH,
    REGISTER,
    TOKEN,
    USERS,
    insert_user,
    sql,
)

ROOT = Path(__file__).resolve().parents[3]
FIRST = "first-secret-passphrase-0451"
SECOND = "second-secret-passphrase-1138"
THIRD = "third-secret-passphrase-2187"
WRONG = "wrong-secret-passphrase-9000"
TOO_SHORT = "sh0rt-7"
TOO_LONG = "too-long-secret-" + "L" * 120
FAKE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$ZmFrZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA"
SENT_PASSWORDS = [FIRST, SECOND, THIRD, WRONG, TOO_SHORT, TOO_LONG, FAKE_HASH]


class Plan(msgspec.Struct, kw_only=True):
    settings: Settings
    admin: str
    admin_password: str


class Exchange(msgspec.Struct, kw_only=True):
    name: str
    status: int
    headers: list[tuple[str, str]]
    text: str


class Secret(msgspec.Struct, kw_only=True):
    kind: str
    value: str
    shown_in: list[str] = msgspec.field(default_factory=list)
    """The exchanges whose response may carry it: the one that handed it out."""


class Outcome(msgspec.Struct, kw_only=True):
    exchanges: list[Exchange]
    secrets: list[Secret]


class Scenario:
    """In the child process: one user's and one admin's life with the service, every answer recorded."""

    def __init__(self, client: TestClient[Litestar], plan: Plan) -> None:
        self.client = client
        self.plan = plan
        self.exchanges: list[Exchange] = []
        self.secrets = [Secret(kind="password", value=value) for value in [*SENT_PASSWORDS, plan.admin_password]]

    def send(self, name: str, method: str, path: str, status: int, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        self.exchanges.append(
            Exchange(name=name, status=response.status_code, headers=list(response.headers.items()), text=response.text)
        )
        assert response.status_code == status, (name, response.status_code, response.text)
        return response.json() if response.content and "json" in response.headers["content-type"] else None

    def log_in(self, name: str, username: str, password: str) -> dict[str, str]:
        form = {"grant_type": "password", "username": username, "password": password}
        pair: dict[str, str] = self.send(name, "POST", TOKEN, 200, data=form)
        self.issued(name, pair)
        return pair

    def issued(self, name: str, pair: dict[str, str]) -> None:
        self.secrets.append(Secret(kind="refresh token", value=pair["refresh_token"], shown_in=[name]))
        self.secrets.append(Secret(kind="access token", value=pair["access_token"], shown_in=[name]))

    def run(self) -> None:  # noqa: PLR0915 - one story, told in order
        alice = {"email": "alice@example.com", "username": "alice", "full_name": "Alice Liddell"}
        user = self.send("register", "POST", REGISTER, 201, json=alice | {"password": FIRST})
        self.send("register-short", "POST", REGISTER, 400, json=alice | {"username": "a2", "password": TOO_SHORT})
        self.send("register-long", "POST", REGISTER, 400, json=alice | {"username": "a3", "password": TOO_LONG})
        self.send(
            "register-hash", "POST", REGISTER, 400, json=alice | {"password": FIRST, "hashed_password": FAKE_HASH}
        )
        self.send("register-taken", "POST", REGISTER, 409, json=alice | {"password": SECOND})

        wrong = {"grant_type": "password", "username": "alice", "password": WRONG}
        self.send("login-wrong", "POST", TOKEN, 400, data=wrong)
        self.send("login-unknown", "POST", TOKEN, 400, data=wrong | {"username": "nobody", "password": FIRST})
        self.send("login-json", "POST", TOKEN, 415, json=wrong | {"password": FIRST})
        first = self.log_in("login", "alice", FIRST)

        second: dict[str, str] = self.send(
            "refresh", "POST", REFRESH, 200, json={"refresh_token": first["refresh_token"]}
        )
        self.issued("refresh", second)
        self.send("refresh-reuse", "POST", REFRESH, 401, json={"refresh_token": first["refresh_token"]})
        self.send("refresh-revoked", "POST", REFRESH, 401, json={"refresh_token": second["refresh_token"]})
        bad_body = {"refresh_token": second["refresh_token"], "unexpected": second["access_token"]}
        self.send("refresh-bad-body", "POST", REFRESH, 400, json=bad_body)
        self.send("refresh-as-form", "POST", REFRESH, 415, data={"refresh_token": second["refresh_token"]})

        third = self.log_in("login-again", "alice", FIRST)
        alice_auth = {"Authorization": f"Bearer {third['access_token']}"}
        self.send("me", "GET", ME, 200, headers=alice_auth)
        self.send("bearer-refresh-token", "GET", ME, 401, headers={"Authorization": f"Bearer {third['refresh_token']}"})
        self.send("password-as-api-key", "GET", ME, 401, headers={"X-API-Key": FIRST})
        self.send("password-as-bearer", "GET", ME, 401, headers={"Authorization": f"Bearer {FIRST}"})
        self.send("me-password-field", "PATCH", ME, 400, json={"password": SECOND}, headers=alice_auth)
        change = {"current_password": WRONG, "new_password": SECOND}
        self.send("password-wrong-current", "POST", MY_PASSWORD, 401, json=change, headers=alice_auth)
        change = {"current_password": FIRST, "new_password": TOO_SHORT}
        self.send("password-too-short", "POST", MY_PASSWORD, 400, json=change, headers=alice_auth)

        admin = self.log_in("admin-login", self.plan.admin, self.plan.admin_password)
        admin_auth = {"Authorization": f"Bearer {admin['access_token']}"}
        created = self.send(
            "key-create", "POST", API_KEYS, 201, json={"name": "billing", "scopes": ["users:read"]}, headers=admin_auth
        )
        key = created["key"]
        self.secrets.append(Secret(kind="API key", value=key, shown_in=["key-create"]))
        self.secrets.append(Secret(kind="API key secret", value=key.split("_", 2)[2], shown_in=["key-create"]))
        self.send("key-use", "GET", USERS, 200, headers={"X-API-Key": key})
        self.send("key-use-bearer", "GET", f"{USERS}/{user['id']}", 200, headers={"Authorization": f"Bearer {key}"})
        self.send("key-tampered", "GET", USERS, 401, headers={"X-API-Key": key[:-2] + "zz"})
        self.send("key-list", "GET", API_KEYS, 200, headers=admin_auth)
        self.send("key-revoke", "DELETE", f"{API_KEYS}/{created['id']}", 204, headers=admin_auth)
        self.send("key-revoked", "GET", USERS, 401, headers={"X-API-Key": key})

        bob = {"email": "bob@example.com", "username": "bob", "password": THIRD}
        made = self.send("user-create", "POST", USERS, 201, json=bob, headers=admin_auth)
        self.send("user-patch", "PATCH", f"{USERS}/{made['id']}", 200, json={"bio": "hi"}, headers=admin_auth)
        self.send(
            "user-patch-password", "PATCH", f"{USERS}/{made['id']}", 400, json={"password": WRONG}, headers=admin_auth
        )
        self.send("users-list", "GET", USERS, 200, headers=admin_auth)

        change = {"current_password": FIRST, "new_password": SECOND}
        self.send("password-change", "POST", MY_PASSWORD, 204, json=change, headers=alice_auth)
        self.send("old-password", "POST", TOKEN, 400, data=wrong | {"password": FIRST})
        fourth = self.log_in("login-new-password", "alice", SECOND)
        self.send("logout", "POST", LOGOUT, 204, json={"refresh_token": fourth["refresh_token"]})
        self.send("refresh-after-logout", "POST", REFRESH, 401, json={"refresh_token": fourth["refresh_token"]})
        fifth = self.log_in("login-last", "alice", SECOND)
        self.send("logout-all", "POST", LOGOUT_ALL, 204, headers={"Authorization": f"Bearer {fifth['access_token']}"})
        self.send("after-logout-all", "GET", ME, 401, headers={"Authorization": f"Bearer {fifth['access_token']}"})


def run_scenario(plan_path: str, outcome_path: str) -> None:
    """The child process's entry point."""
    logging.getLogger("httpx").disabled = True  # the test client's own request log is not the service's
    plan = msgspec.json.decode(Path(plan_path).read_bytes(), type=Plan)
    with TestClient(create_app(plan.settings), raise_server_exceptions=False) as client:
        scenario = Scenario(client, plan)
        try:
            scenario.run()
        finally:
            outcome = Outcome(exchanges=scenario.exchanges, secrets=scenario.secrets)
            Path(outcome_path).write_bytes(msgspec.json.encode(outcome))


class Run(msgspec.Struct, kw_only=True):
    outcome: Outcome
    output: str
    """Everything the child wrote: stdout and stderr."""
    hashes: list[str]
    """Every password hash in the database afterwards."""


@pytest.fixture(scope="module")
async def run(
    settings: Settings, database_url: str, password_hash: str, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    """One child run for the module; what the checks need is read before the tables are emptied."""
    admin = await insert_user(database_url, password_hash, "root", admin=True)
    work = tmp_path_factory.mktemp("secrets")
    plan_path, outcome_path = work / "plan.json", work / "outcome.json"
    debug = msgspec.structs.replace(settings, log_level="DEBUG", log_format="json", access_log=True)
    plan_path.write_bytes(
        msgspec.json.encode(Plan(settings=debug, admin=admin.username, admin_password=admin.password))
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-c",
            "import sys; from tests.integration.auth.test_secrets import run_scenario; run_scenario(*sys.argv[1:])",
            str(plan_path),
            str(outcome_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    rows = await sql(database_url, "SELECT hashed_password FROM users WHERE hashed_password IS NOT NULL")
    return Run(
        outcome=msgspec.json.decode(outcome_path.read_bytes(), type=Outcome),
        output=result.stdout + result.stderr,
        hashes=[row["hashed_password"] for row in rows],
    )


# One child run serves every check; the checks are separate so each failure names its own leak.


async def test_secrets_never_leak(run: Run) -> None:
    lines = [json.loads(line) for line in run.output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    # The run logged what it should (else the checks below would pass on silence).
    assert len(requests) == len(run.outcome.exchanges), run.output[-3000:]
    assert len(run.hashes) == 3
    assert len([s for s in run.outcome.secrets if s.kind == "refresh token"]) == 6

    leaks = []
    for secret in run.outcome.secrets:
        if secret.value in run.output:
            leaks.append(f"the {secret.kind} {secret.value[:12]}... is in the logs")
        leaks += [
            f"the {secret.kind} {secret.value[:12]}... is in the response to {exchange.name}"
            for exchange in run.outcome.exchanges
            if exchange.name not in secret.shown_in and secret.value in exchange_text(exchange)
        ]
    for hashed in run.hashes:
        salt_and_hash = hashed.rsplit("$", 2)[-2:]
        for piece in [hashed, *salt_and_hash]:
            if piece in run.output:
                leaks.append(f"a password hash ({piece[:12]}...) is in the logs")
            leaks += [
                f"a password hash is in the response to {e.name}"
                for e in run.outcome.exchanges
                if piece in exchange_text(e)
            ]
    assert leaks == []


async def test_each_secret_is_handed_out_exactly_where_expected(run: Run) -> None:
    """The control for the search above: the secrets are really in the answers that hand them out."""
    for secret in run.outcome.secrets:
        for name in secret.shown_in:
            (exchange,) = [e for e in run.outcome.exchanges if e.name == name]
            assert secret.value in exchange.text, (secret.kind, name)
    assert all(exchange.status < 500 for exchange in run.outcome.exchanges)


def exchange_text(exchange: Exchange) -> str:
    return exchange.text + "\n" + "\n".join(f"{name}: {value}" for name, value in exchange.headers)
