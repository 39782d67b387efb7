"""PASSWORD_BREACH_API against a real local server speaking the Have I Been Pwned range protocol: a new password
that zxcvbn lets through but the breach list holds is refused, naming the field, with nothing written; only the
first 5 hex digits of the password's SHA-1 reach the server; and a server that is down or failing lets the local
screening decide alone (a sign-up never waits on a third party)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from tests.integration.auth.support import MY_PASSWORD, PASSWORD, REGISTER, Client, log_in
from tests.integration.users.test_password_screening import account, stored_hash, written
from tests.problems import assert_problem

BREACHED = {"Tr0ub4dor&3 horse battery": 3_861, "correct horse battery staple 2": 7}
"""Passwords zxcvbn scores as hard to guess, which the local breach list has seen (and how often)."""
PADDING = 40
"""Zero-count lines the server adds to every answer, as Have I Been Pwned does when asked for padding."""


class RangeServer:
    """GET <base>/<5 hex digits> → `SUFFIX:COUNT` lines; `failing` makes it answer 503. It records every path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.padding_asked: list[bool] = []
        self.failing = False
        by_prefix: dict[str, list[str]] = {}
        for password, count in BREACHED.items():
            digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
            by_prefix.setdefault(digest[:5], []).append(f"{digest[5:]}:{count}")
        self.by_prefix = by_prefix
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                server.padding_asked.append(self.headers.get("Add-Padding") == "true")
                prefix = self.path.rsplit("/", 1)[-1]
                if server.failing:
                    self.send_error(503)
                    return
                lines = server.by_prefix.get(prefix, []) + [f"{n:035X}:0" for n in range(PADDING)]
                body = "\r\n".join(lines).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/range/"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def range_server() -> Iterator[RangeServer]:
    server = RangeServer()
    yield server
    server.stop()


@pytest.fixture
async def screened(settings: Settings, range_server: RangeServer) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An app whose new passwords are also looked up in the local range server."""
    range_server.paths.clear()
    range_server.failing = False
    app = create_app(msgspec.structs.replace(settings, password_breach_api=range_server.url))
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        yield client


async def test_a_breached_sign_up_password_is_a_400_naming_it_and_only_a_hash_prefix_leaves(
    screened: AsyncTestClient[Litestar], range_server: RangeServer, database_url: str
) -> None:
    body = {"email": "ada@example.com", "username": "ada", "password": "Tr0ub4dor&3 horse battery"}

    problem = assert_problem(await screened.post(REGISTER, json=body), 400, field="password")

    message = "is in a list of passwords exposed in data breaches (seen 3,861 times)"
    assert problem["errors"] == [{"field": "password", "message": message}]
    assert await written(database_url) == {"users": 0, "email_tokens": 0, "outbox_messages": 0, "login_failures": 0}
    digest = hashlib.sha1(body["password"].encode(), usedforsecurity=False).hexdigest().upper()
    assert range_server.paths == [f"/range/{digest[:5]}"]  # never the password, nor the rest of its hash
    assert range_server.padding_asked == [True] * len(range_server.paths)
    accepted = await screened.post(REGISTER, json=body | {"password": PASSWORD})
    assert accepted.status_code == 201, accepted.text
    assert len(range_server.paths) == 2


async def test_a_password_change_to_a_breached_one_is_refused_and_the_old_one_still_works(
    screened: AsyncTestClient[Litestar], database_url: str
) -> None:
    ada = await account(database_url, "ada")
    logged_in = await log_in(screened, ada)
    hash_before = await stored_hash(database_url, ada.id)
    change = {"current_password": PASSWORD, "new_password": "correct horse battery staple 2"}

    problem = assert_problem(await screened.post(MY_PASSWORD, json=change, headers=logged_in.headers), 400)

    assert problem["errors"][0]["field"] == "new_password"
    assert "(seen 7 times)" in problem["errors"][0]["message"]
    assert await stored_hash(database_url, ada.id) == hash_before


async def test_a_weak_password_is_refused_by_the_local_screening_before_any_lookup(
    screened: AsyncTestClient[Litestar], range_server: RangeServer
) -> None:
    body = {"email": "ada@example.com", "username": "ada", "password": "password1"}

    problem = assert_problem(await screened.post(REGISTER, json=body), 400, field="password")

    assert problem["errors"][0]["message"] == "is one of the most common passwords"
    assert range_server.paths == []


@pytest.mark.parametrize("fault", ["failing", "down"])
async def test_a_failing_or_absent_range_api_leaves_the_decision_to_the_local_screening(
    settings: Settings, range_server: RangeServer, database_url: str, fault: str
) -> None:
    range_server.failing = fault == "failing"
    url = range_server.url if fault == "failing" else "http://127.0.0.1:9/range/"  # the discard port: refused
    app = create_app(msgspec.structs.replace(settings, password_breach_api=url, password_breach_timeout=2.0))
    body = {"email": "ada@example.com", "username": "ada", "password": "Tr0ub4dor&3 horse battery"}

    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        accepted = await client.post(REGISTER, json=body)
        refused = await client.post(
            REGISTER, json=body | {"email": "bob@example.com", "username": "bob"} | {"password": "password1"}
        )

    assert accepted.status_code == 201, accepted.text
    assert_problem(refused, 400, field="password")
    assert await written(database_url) == {"users": 1, "email_tokens": 1, "outbox_messages": 1, "login_failures": 0}


async def test_without_the_setting_no_lookup_is_made(client: Client, range_server: RangeServer) -> None:
    range_server.paths.clear()
    body = {"email": "ada@example.com", "username": "ada", "password": "Tr0ub4dor&3 horse battery"}

    assert (await client.post(REGISTER, json=body)).status_code == 201
    assert range_server.paths == []
