"""E-mail: sign-up verification and password resets end to end, through the outbox, a real queue (PostgreSQL
and Redis), an in-process worker and a real SMTP server (aiosmtpd) whose received messages the tests read.

The module's queue has a name of its own (the `queue_name` setting), so a shared Redis is left as it was found:
its keys are deleted after each test.
"""

from __future__ import annotations

import asyncio
import email
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from email.message import Message
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiosmtpd.controller import Controller
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts import worker
from accounts.app import create_app
from accounts.config import Settings
from accounts.mail.jobs import send_email
from tests.database import insert_api_key
from tests.integration.auth.support import (
    AUTH,
    ME,
    REFRESH,
    REGISTER,
    Account,
    MakeUser,
    assert_unauthenticated,
    bearer,
    eventually,
    log_in,
    request_token,
    sql,
)
from tests.integration.jobs.support import delete_queue
from tests.problems import assert_problem

VERIFY = f"{AUTH}/verify-email"
RESEND = f"{AUTH}/verify-email/resend"
RESET = f"{AUTH}/password-reset"
CONFIRM = f"{AUTH}/password-reset/confirm"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PUBLIC_URL = "https://accounts.example.test"
TOKEN_IN_LINK = re.compile(r"\?token=([A-Za-z0-9_-]+)")
SIGN_UP = {"email": "Grace@Example.com", "username": "grace", "password": "compiler first"}
DELIVERY = 15.0  # seconds an e-mail may take through queue, worker and SMTP on a busy machine

Client = AsyncTestClient[Litestar]


# --- the SMTP server ----------------------------------------------------------------------------


class Inbox:
    """What the in-process SMTP server received, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]

    async def wait_for(self, address: str, count: int = 1) -> Message:
        async def arrived() -> bool:
            return len(self.to(address)) >= count

        await eventually(arrived, within=DELIVERY)
        return self.to(address)[count - 1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def inbox(smtp_server: tuple[Inbox, int]) -> Inbox:
    smtp_server[0].messages.clear()
    return smtp_server[0]


# --- the queue, the app and the worker ----------------------------------------------------------


@pytest.fixture(scope="module")
def queue_name() -> str:
    """This module's queue name (`mail_settings.queue_name`)."""
    return f"accounts-email-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["postgres", "redis"])
async def backend(request: pytest.FixtureRequest, queue_name: str, database_url: str) -> AsyncIterator[str]:
    """The queue backend of the test; its queue is emptied afterwards."""
    yield str(request.param)
    redis_url = REDIS_URL if request.param == "redis" else None
    await delete_queue(Settings(database_url=database_url, queue_name=queue_name, redis_url=redis_url))


@pytest.fixture
def mail_settings(
    settings: Settings, backend: str, smtp_server: tuple[Inbox, int], queue_name: str, tmp_path: Path
) -> Settings:
    """The session settings with the queue on `backend`, mail to the in-process SMTP server, a small worker."""
    return msgspec.structs.replace(
        settings,
        redis_url=REDIS_URL if backend == "redis" else None,
        queue_name=queue_name,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server[1],
        smtp_tls="none",
        mail_from="Accounts <no-reply@example.test>",
        public_url=PUBLIC_URL,
        worker_concurrency=4,
        shutdown_timeout=1,
        data_dir=str(tmp_path / "data"),
    )


@pytest.fixture
async def mail_client(mail_settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(mail_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
async def running_worker(mail_settings: Settings) -> AsyncIterator[None]:
    """The worker `WORKER_IN_PROCESS` runs, on the test's event loop, for the whole test."""
    async with worker.worker_in_process(mail_settings):
        yield


async def outbox(database_url: str) -> list[asyncpg.Record]:
    return await sql(database_url, "SELECT * FROM outbox_messages ORDER BY created_at")


async def sent_row(database_url: str) -> asyncpg.Record:
    """The one outbox row, once marked sent: the SMTP server has the message a moment before the worker commits."""

    async def marked_sent() -> bool:
        return [row["sent_at"] is not None for row in await outbox(database_url)] == [True]

    await eventually(marked_sent, within=5)
    (row,) = await outbox(database_url)
    return row


async def token_in_outbox(database_url: str, kind: str) -> str:
    """The token of the newest unsent message of `kind`, read from its body (for tests without a worker)."""
    rows = [row for row in await outbox(database_url) if row["kind"] == kind and row["body"]]
    match = TOKEN_IN_LINK.search(rows[-1]["body"])
    assert match, rows[-1]["body"]
    return match.group(1)


def token_in(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    match = TOKEN_IN_LINK.search(body.decode())
    assert match, body
    return match.group(1)


async def register(client: Client, **changes: str) -> dict[str, Any]:
    response = await client.post(REGISTER, json=SIGN_UP | changes)
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def password_hash(database_url: str, user_id: str) -> str:
    (row,) = await sql(database_url, "SELECT hashed_password FROM users WHERE id = $1", uuid.UUID(user_id))
    return str(row["hashed_password"])


# --- sign-up and verification -------------------------------------------------------------------


@pytest.mark.usefixtures("running_worker")
async def test_sign_up_sends_a_verification_email_whose_token_verifies_the_address_once(
    mail_client: Client, inbox: Inbox, database_url: str
) -> None:
    user = await register(mail_client)
    assert user["email_verified_at"] is None

    message = await inbox.wait_for("grace@example.com")
    assert message["From"] == "Accounts <no-reply@example.test>"
    assert message["X-Envelope-To"] == "grace@example.com"
    assert message["Subject"] == "Confirm your e-mail address"
    row = await sent_row(database_url)
    assert message["Message-ID"] == f"<{row['id']}@accounts.invalid>"
    assert row["body"] is None  # the token is not kept once the message is out
    token = token_in(message)
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert f"{PUBLIC_URL}/verify-email?token={token}" in body.decode()
    (stored,) = await sql(database_url, "SELECT token_hash, purpose FROM email_tokens")
    assert stored["purpose"] == "verify"
    assert token.encode() not in stored["token_hash"]

    verified = await mail_client.post(VERIFY, json={"token": token})
    assert verified.status_code == 204, verified.text
    tokens = await log_in(
        mail_client, Account(id=user["id"], username="grace", email="grace@example.com", password=SIGN_UP["password"])
    )
    me = (await mail_client.get(ME, headers=tokens.headers)).json()
    assert me["email_verified_at"] is not None
    assert me["version"] == user["version"] + 1

    again = assert_problem(await mail_client.post(VERIFY, json={"token": token}), 400, field="token")
    assert again["type"] == "/problems/invalid-token"
    assert len(inbox.messages) == 1


async def signed_up(client: Client) -> dict[str, str]:
    """The headers of a new user's access token."""
    user = await register(client)
    account = Account(id=user["id"], username="grace", email="grace@example.com", password=SIGN_UP["password"])
    return (await log_in(client, account)).headers


async def verification_tokens(database_url: str) -> int:
    (row,) = await sql(database_url, "SELECT count(*) AS n FROM email_tokens WHERE purpose = 'verify'")
    return int(row["n"])


async def age_verification_tokens(database_url: str, seconds: int) -> None:
    """Make every verification e-mail so far `seconds` older, as if the interval had passed."""
    await sql(
        database_url,
        "UPDATE email_tokens SET created_at = created_at - make_interval(secs => $1) WHERE purpose = 'verify'",
        float(seconds),
    )


@pytest.mark.usefixtures("running_worker")
async def test_a_resent_verification_email_carries_a_new_token_that_verifies_the_address(
    mail_client: Client, inbox: Inbox, database_url: str
) -> None:
    headers = await signed_up(mail_client)
    first = token_in(await inbox.wait_for("grace@example.com"))
    await age_verification_tokens(database_url, 61)

    resent = await mail_client.post(RESEND, headers=headers)
    assert resent.status_code == 202, resent.text
    second = token_in(await inbox.wait_for("grace@example.com", count=2))
    assert second != first

    verified = await mail_client.post(VERIFY, json={"token": second})
    assert verified.status_code == 204, verified.text
    verified_at = (await mail_client.get(ME, headers=headers)).json()["email_verified_at"]
    assert verified_at is not None
    # The first link still works until it expires (either may be the one read), and changes nothing more.
    assert (await mail_client.post(VERIFY, json={"token": first})).status_code == 204
    assert (await mail_client.get(ME, headers=headers)).json()["email_verified_at"] == verified_at

    done = assert_problem(await mail_client.post(RESEND, headers=headers), 409)
    assert "verified already" in done["detail"]
    assert await verification_tokens(database_url) == 2
    assert len(inbox.messages) == 2


async def test_a_resend_within_the_interval_is_429_with_retry_after_and_writes_nothing(
    mail_client: Client, database_url: str
) -> None:
    headers = await signed_up(mail_client)  # sign-up's e-mail counts: the interval starts there

    refused = await mail_client.post(RESEND, headers=headers)
    assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert await verification_tokens(database_url) == 1
    assert [row["kind"] for row in await outbox(database_url)] == ["verify_email"]


async def test_concurrent_resends_write_one_email(mail_client: Client, database_url: str) -> None:
    headers = await signed_up(mail_client)
    await age_verification_tokens(database_url, 61)

    answers = await asyncio.gather(*(mail_client.post(RESEND, headers=headers) for _ in range(6)))

    assert sorted(answer.status_code for answer in answers) == [202] + [429] * 5
    assert await verification_tokens(database_url) == 2
    assert [row["kind"] for row in await outbox(database_url)] == ["verify_email", "verify_email"]


async def test_a_resend_needs_a_users_token(mail_client: Client, database_url: str) -> None:
    assert_unauthenticated(await mail_client.post(RESEND), error=None)
    key = await insert_api_key(database_url, ["users:read", "users:write"])
    assert_problem(await mail_client.post(RESEND, headers={"X-API-Key": key}), 403)
    assert await outbox(database_url) == []


# --- password reset -----------------------------------------------------------------------------


@pytest.mark.usefixtures("running_worker")
async def test_password_reset_end_to_end(
    mail_client: Client, inbox: Inbox, make_user: MakeUser, database_url: str
) -> None:
    account = await make_user(username="hopper")
    before = await log_in(mail_client, account)

    unknown = await mail_client.post(RESET, json={"email": "nobody@example.com"})
    assert unknown.status_code == 202, unknown.text
    assert unknown.content == b""
    asked = await mail_client.post(RESET, json={"email": account.email.upper()})
    assert asked.status_code == 202, asked.text

    message = await inbox.wait_for(account.email)
    assert message["Subject"] == "Reset your password"
    token = token_in(message)
    assert f"{PUBLIC_URL}/reset-password?token={token}" in str(message.get_payload(decode=True), "utf-8")
    again = await mail_client.post(RESET, json={"email": account.email})
    assert again.status_code == 202  # within PASSWORD_RESET_INTERVAL: accepted, but no second e-mail
    assert [row["recipient"] for row in await outbox(database_url)] == [account.email]

    confirmed = await mail_client.post(CONFIRM, json={"token": token, "new_password": "a brand new secret"})
    assert confirmed.status_code == 204, confirmed.text

    reused = await mail_client.post(CONFIRM, json={"token": token, "new_password": "yet another secret"})
    assert assert_problem(reused, 400, field="token")["type"] == "/problems/invalid-token"
    assert_unauthenticated(await mail_client.post(REFRESH, json={"refresh_token": before.refresh_token}))
    assert_unauthenticated(await mail_client.get(ME, headers=bearer(before.access_token)))
    assert (await request_token(mail_client, account.username, account.password)).status_code == 400
    after = await request_token(mail_client, account.username, "a brand new secret")
    assert after.status_code == 200, after.text
    (row,) = await sql(database_url, "SELECT email_verified_at FROM users WHERE id = $1", uuid.UUID(account.id))
    assert row["email_verified_at"] is not None  # the reset e-mail proved the address
    notice = await inbox.wait_for(account.email, count=2)
    assert notice["Subject"] == "Your password was changed"  # the security notice: the owner hears of it
    await asyncio.sleep(0.3)
    assert [m["To"] for m in inbox.messages] == [account.email] * 2  # the link and the notice; none for the unknown


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_expired_reset_token_is_rejected_and_changes_nothing(
    mail_client: Client, make_user: MakeUser, database_url: str
) -> None:
    account = await make_user(username="lamarr")
    assert (await mail_client.post(RESET, json={"email": account.email})).status_code == 202
    token = await token_in_outbox(database_url, "password_reset")
    await sql(database_url, "UPDATE email_tokens SET expires_at = now() - interval '1 second'")
    hashed = await password_hash(database_url, account.id)

    expired = await mail_client.post(CONFIRM, json={"token": token, "new_password": "too late for this"})

    assert assert_problem(expired, 400, field="token")["type"] == "/problems/invalid-token"
    assert await password_hash(database_url, account.id) == hashed
    assert (await request_token(mail_client, account.username, account.password)).status_code == 200


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_new_reset_request_after_the_interval_replaces_the_open_token(
    mail_client: Client, make_user: MakeUser, database_url: str
) -> None:
    account = await make_user(username="meitner")
    await mail_client.post(RESET, json={"email": account.email})
    first = await token_in_outbox(database_url, "password_reset")
    await sql(database_url, "UPDATE email_tokens SET created_at = now() - interval '2 minutes'")
    await mail_client.post(RESET, json={"email": account.email})
    second = await token_in_outbox(database_url, "password_reset")
    assert second != first
    assert len(await outbox(database_url)) == 2

    stale = await mail_client.post(CONFIRM, json={"token": first, "new_password": "from the old link"})
    assert_problem(stale, 400, field="token")
    fresh = await mail_client.post(CONFIRM, json={"token": second, "new_password": "from the new link"})
    assert fresh.status_code == 204, fresh.text


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_no_reset_email_for_an_inactive_account(
    mail_client: Client, make_user: MakeUser, database_url: str
) -> None:
    account = await make_user(username="inactive", active=False)
    assert (await mail_client.post(RESET, json={"email": account.email})).status_code == 202
    assert await outbox(database_url) == []
    assert await sql(database_url, "SELECT 1 FROM email_tokens") == []


# --- bad and hostile input ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (VERIFY, {}, "token"),
        (VERIFY, {"token": 12345678901234567890}, "token"),
        (VERIFY, {"token": "short"}, "token"),
        (VERIFY, {"token": "x" * 129}, "token"),
        (VERIFY, {"token": "not/url-safe+at+all=="}, "token"),
        (VERIFY, {"token": "a" * 43 + "\n"}, "token"),
        (VERIFY, {"token": "a" * 43, "admin": True}, "admin"),
        (RESET, {}, "email"),
        (RESET, {"email": "not-an-address"}, "email"),
        (RESET, {"email": ["a@example.com"]}, "email"),
        (RESET, {"email": "a@example.com", "username": "a"}, "username"),
        (CONFIRM, {"token": "a" * 43}, "new_password"),
        (CONFIRM, {"token": "a" * 43, "new_password": "short"}, "new_password"),
        (CONFIRM, {"token": "a" * 43, "new_password": "p" * 129}, "new_password"),
        (CONFIRM, {"new_password": "long enough"}, "token"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    mail_client: Client, path: str, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await mail_client.post(path, json=body), 400, field=field)
    assert problem["type"] == "/problems/validation-failed"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
@pytest.mark.parametrize("path", [VERIFY, RESET, CONFIRM])
async def test_bodies_that_are_not_json_are_rejected(mail_client: Client, path: str) -> None:
    assert_problem(
        await mail_client.post(path, content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert_problem(await mail_client.post(path, content=b"token=x", headers={"content-type": "text/plain"}), 415)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_token_works_only_for_its_purpose_and_nothing_changes_otherwise(
    mail_client: Client, database_url: str
) -> None:
    user = await register(mail_client)
    verify_token = await token_in_outbox(database_url, "verify_email")
    hashed = await password_hash(database_url, user["id"])

    wrong = await mail_client.post(CONFIRM, json={"token": verify_token, "new_password": "hijacked password"})
    assert assert_problem(wrong, 400, field="token")["type"] == "/problems/invalid-token"
    assert await password_hash(database_url, user["id"]) == hashed

    await mail_client.post(RESET, json={"email": SIGN_UP["email"]})
    reset_token = await token_in_outbox(database_url, "password_reset")
    assert_problem(await mail_client.post(VERIFY, json={"token": reset_token}), 400, field="token")
    (row,) = await sql(database_url, "SELECT email_verified_at FROM users")
    assert row["email_verified_at"] is None

    unknown = await mail_client.post(VERIFY, json={"token": "A" * 43})
    assert assert_problem(unknown, 400, field="token")["type"] == "/problems/invalid-token"
    # Both tokens are still good for what they were made for.
    assert (await mail_client.post(VERIFY, json={"token": verify_token})).status_code == 204
    ok = await mail_client.post(CONFIRM, json={"token": reset_token, "new_password": "the real owner"})
    assert ok.status_code == 204


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_verification_token_is_void_once_the_address_changes(mail_client: Client, database_url: str) -> None:
    user = await register(mail_client)
    token = await token_in_outbox(database_url, "verify_email")
    tokens = await log_in(
        mail_client, Account(id=user["id"], username="grace", email="grace@example.com", password=SIGN_UP["password"])
    )
    changed = await mail_client.patch(ME, json={"email": "grace@elsewhere.example"}, headers=tokens.headers)
    assert changed.status_code == 200, changed.text

    assert_problem(await mail_client.post(VERIFY, json={"token": token}), 400, field="token")
    assert (await mail_client.get(ME, headers=tokens.headers)).json()["email_verified_at"] is None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_changing_a_verified_address_makes_it_unverified(mail_client: Client, database_url: str) -> None:
    user = await register(mail_client)
    assert (
        await mail_client.post(VERIFY, json={"token": await token_in_outbox(database_url, "verify_email")})
    ).status_code == 204
    tokens = await log_in(
        mail_client, Account(id=user["id"], username="grace", email="grace@example.com", password=SIGN_UP["password"])
    )
    assert (await mail_client.get(ME, headers=tokens.headers)).json()["email_verified_at"] is not None

    await mail_client.patch(ME, json={"email": "grace@elsewhere.example"}, headers=tokens.headers)

    assert (await mail_client.get(ME, headers=tokens.headers)).json()["email_verified_at"] is None


# --- the outbox ---------------------------------------------------------------------------------


async def test_with_the_queue_unreachable_sign_up_succeeds_and_the_flush_sends_the_email_later(
    mail_settings: Settings, inbox: Inbox, database_url: str
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = msgspec.structs.replace(mail_settings, redis_url=f"redis://127.0.0.1:{closed.getsockname()[1]}/0")
        async with AsyncTestClient(create_app(dead), raise_server_exceptions=False) as client:
            started = time.monotonic()
            await register(client)
            assert time.monotonic() - started < 5
    (row,) = await outbox(database_url)
    assert row["sent_at"] is None
    assert inbox.messages == []

    # A minute later, the flush (every minute on the worker) finds the message and enqueues it again.
    await sql(database_url, "UPDATE outbox_messages SET created_at = now() - interval '2 minutes'")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(worker.worker_in_process(mail_settings))
        queue = worker.make_queue(mail_settings)
        await queue.connect()
        stack.push_async_callback(queue.disconnect)
        flushed = await queue.apply("flush_outbox", timeout=30)
        assert flushed == 1
        message = await inbox.wait_for("grace@example.com")
    assert token_in(message)
    await sent_row(database_url)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_sent_message_is_not_sent_again(
    mail_settings: Settings, mail_client: Client, inbox: Inbox, database_url: str
) -> None:
    await register(mail_client)
    (row,) = await outbox(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        context: Any = {"settings": mail_settings, "pool": pool}
        assert await send_email(context, outbox_id=str(row["id"])) == "sent"
        assert await send_email(context, outbox_id=str(row["id"])) == "already sent"
    finally:
        await pool.close()
    assert len(inbox.messages) == 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_an_expired_message_is_not_sent(
    mail_settings: Settings, mail_client: Client, inbox: Inbox, database_url: str
) -> None:
    await register(mail_client)
    await sql(database_url, "UPDATE outbox_messages SET expires_at = now() - interval '1 second'")
    (row,) = await outbox(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        context: Any = {"settings": mail_settings, "pool": pool}
        assert await send_email(context, outbox_id=str(row["id"])) == "expired"
    finally:
        await pool.close()
    assert inbox.messages == []


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_without_smtp_host_messages_are_written_as_eml_files(mail_settings: Settings, database_url: str) -> None:
    files = msgspec.structs.replace(mail_settings, smtp_host=None)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(AsyncTestClient(create_app(files), raise_server_exceptions=False))
        await stack.enter_async_context(worker.worker_in_process(files))
        await register(client)
        (row,) = await outbox(database_url)
        path = files.data_path / "mail" / f"{row['id']}.eml"

        async def written() -> bool:
            return path.is_file()

        await eventually(written, within=DELIVERY)
        message = email.message_from_bytes(path.read_bytes())
        assert message["To"] == "grace@example.com"
        assert message["Subject"] == "Confirm your e-mail address"
        assert (await client.post(VERIFY, json={"token": token_in(message)})).status_code == 204
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
