"""Every write endpoint under the two faults that break a write after the handler has done its work: a COMMIT that
fails (a deferred constraint trigger raising at commit), and a connection killed mid-statement (a trigger calling
`pg_terminate_backend(pg_backend_pid())`). Neither may be answered 2xx, a killed connection is a 503 with
Retry-After (never a 409), and neither leaves anything behind. The same request without a fault succeeds and
changes the data, so each case shows it can fail.

The faults are triggers on every table of the service in a database of this module's own, switched by one row of
`fault_mode`, so the world of each case is seeded with them off.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import jwt
import msgspec
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar import Litestar
from litestar.testing import AsyncTestClient

from accounts.app import create_app
from accounts.config import Settings
from accounts.core.passwords import hash_password
from tests.database import EMPTY_TABLES, TABLES, CreateDatabase, migrate
from tests.faults.tables import snapshot
from tests.integration.auth.support import PASSWORD, Account, insert_user, log_in, unverified_parts
from tests.integration.passkeys.authenticator import SoftAuthenticator, b64url
from tests.integration.passkeys.support import register_passkey
from tests.problems import assert_problem

Client = AsyncTestClient[Litestar]

FAULTS = """
CREATE TABLE fault_mode (mode text NOT NULL);
INSERT INTO fault_mode VALUES ('off');
CREATE FUNCTION fault_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT mode FROM fault_mode) = 'commit' THEN
        RAISE EXCEPTION 'fault injected: the commit of % is refused', TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION fault_mid_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT mode FROM fault_mode) = 'kill' THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN coalesce(NEW, OLD);
END $$;
"""
TABLE_FAULTS = """
CREATE CONSTRAINT TRIGGER fault_at_commit AFTER INSERT OR UPDATE OR DELETE ON {table}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_at_commit();
CREATE TRIGGER fault_mid_statement BEFORE INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION fault_mid_statement();
"""
VERIFY_TOKEN = "verify-token-of-the-member-0123456789"
RESET_TOKEN = "reset-token-of-the-member-0123456789"
CLIENT_SECRET = "accs_the-secret-of-the-old-client"


@pytest.fixture(scope="module")
async def faulty_database(create_database: CreateDatabase) -> str:
    url = await create_database()
    await migrate(url)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(FAULTS + "".join(TABLE_FAULTS.format(table=table) for table in TABLES))
    finally:
        await connection.close()
    return url


@pytest.fixture(scope="module")
async def client(
    faulty_database: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Client]:
    app_settings = msgspec.structs.replace(
        settings, database_url=faulty_database, data_dir=str(tmp_path_factory.mktemp("faulty"))
    )
    async with AsyncTestClient(create_app(app_settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
async def password_hash() -> str:
    return await hash_password(PASSWORD)


@dataclass
class World:
    """What a case acts on, made afresh for each: an admin and a member (unverified, with a verification and a
    reset token e-mailed a while ago), both logged in, and an API key."""

    admin: dict[str, str]
    member: Account
    member_headers: dict[str, str]
    refresh_token: str
    api_key_id: str
    client_id: str
    webhook_id: str = ""
    delivery_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def member_token(self) -> str:
        return self.member_headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
async def world(client: Client, faulty_database: str, password_hash: str) -> AsyncIterator[World]:
    connection = await asyncpg.connect(faulty_database)
    try:
        await connection.execute("UPDATE fault_mode SET mode = 'off';" + EMPTY_TABLES)  # noqa: S608
        admin = await insert_user(faulty_database, password_hash, "admin", admin=True)
        member = await insert_user(faulty_database, password_hash, "member")
        for purpose, token in (("verify", VERIFY_TOKEN), ("reset", RESET_TOKEN)):
            await connection.execute(
                "INSERT INTO email_tokens (id, user_id, purpose, token_hash, email, expires_at, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, now() + interval '1 day', now() - interval '1 hour', now())",
                uuid.uuid4(),
                uuid.UUID(member.id),
                purpose,
                hashlib.sha256(token.encode()).digest(),
                member.email,
            )
        api_key_id = uuid.uuid4()
        await connection.execute(
            "INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, created_at, updated_at)"
            " VALUES ($1, 'old', 'abcdefabcdef', $2, ARRAY['users:read'], now(), now())",
            api_key_id,
            b"\0" * 32,
        )
        client_id = uuid.uuid4()
        await connection.execute(
            "INSERT INTO oauth_clients (id, name, scopes, secret_hash, created_at, updated_at)"
            " VALUES ($1, 'old', ARRAY['users:read'], $2, now(), now())",
            client_id,
            hashlib.sha256(CLIENT_SECRET.encode()).digest(),
        )
        webhook_id, delivery_id = await seed_webhook(connection)
        admin_login = await log_in(client, admin)
        member_login = await log_in(client, member)
        # Logged in first: with a passkey, a password alone logs in no more.
        passkeys = await seed_passkeys(connection, uuid.UUID(member.id), client.app.state.settings)
        factors = await seed_second_factors(client, connection, faulty_database, password_hash, admin)
        factors["member_session"] = session_of(member_login.headers)
        yield World(
            admin=admin_login.headers,
            member=member,
            member_headers=member_login.headers,
            refresh_token=member_login.refresh_token,
            api_key_id=str(api_key_id),
            client_id=str(client_id),
            webhook_id=str(webhook_id),
            delivery_id=str(delivery_id),
            extra={**passkeys, **factors},
        )
    finally:
        await connection.execute("UPDATE fault_mode SET mode = 'off'")
        await connection.close()


async def seed_webhook(connection: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """A webhook endpoint and one delivered event of it."""
    webhook_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    await connection.execute(
        "INSERT INTO webhooks (id, url, event_types, description, secret, enabled, consecutive_failures, created_at,"
        " updated_at) VALUES ($1, 'https://93.184.215.14/old', ARRAY['user.*'], 'old', $2, true, 0, now(), now())",
        webhook_id,
        b"\3" * 32,
    )
    await connection.execute(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, subject, payload, status, attempts,"
        " created_at, updated_at) VALUES ($1, $2, $3, 'user.created', 'user:x', '{}', 'succeeded', 1, now(), now())",
        delivery_id,
        webhook_id,
        uuid.uuid4(),
    )
    return webhook_id, delivery_id


async def seed_passkeys(connection: asyncpg.Connection, user_id: uuid.UUID, settings: Settings) -> dict[str, Any]:
    """A passkey of the member's (its keys need not work: it is only renamed and deleted) and a registration
    challenge of theirs, with the options a browser would have been given for it (`passkey_registration`)."""
    passkey_id, challenge_id, challenge = uuid.uuid4(), uuid.uuid4(), b"c" * 32
    await connection.execute(
        "INSERT INTO passkeys (id, user_id, credential_id, public_key, sign_count, transports, aaguid, backup_eligible,"
        " backed_up, name, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, 0, ARRAY['internal'], $5, true, true, 'Laptop', now(), now())",
        passkey_id,
        user_id,
        b"\1" * 32,
        b"\2" * 77,
        uuid.UUID(int=0),
    )
    await connection.execute(
        "INSERT INTO webauthn_challenges (id, purpose, challenge, user_id, expires_at, created_at, updated_at)"
        " VALUES ($1, 'registration', $2, $3, now() + interval '1 hour', now(), now())",
        challenge_id,
        challenge,
        user_id,
    )
    options = {
        "rp": {"id": settings.rp_id},
        "user": {"id": b64url(user_id.bytes)},
        "challenge": b64url(challenge),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
    }
    return {
        "passkey_id": str(passkey_id),
        "challenge_id": str(challenge_id),
        "registration_options": options,
        "origin": settings.origins[0],
    }


RECOVERY_CODE = "AAAA-BBBB-CCCC"
TOTP_SECRET = b"the totp secret 0123"


async def seed_second_factors(
    client: Client, connection: asyncpg.Connection, database_url: str, password_hash: str, admin: Account
) -> dict[str, Any]:
    """A user logged in with TOTP on and a known recovery code (TOTP is turned off, recovery codes renewed), and an
    enrolment of the admin's waiting for its first code (made by pyotp)."""
    guarded = await insert_user(database_url, password_hash, "guarded")
    guarded_login = await log_in(client, guarded)
    sealer = client.app.state.sealer
    for user_id, confirmed in ((uuid.UUID(guarded.id), True), (uuid.UUID(admin.id), False)):
        await connection.execute(
            "INSERT INTO totp_factors (user_id, sealed_secret, confirmed_at)"
            " VALUES ($1, $2, CASE WHEN $3 THEN now() END)",
            user_id,
            sealer.seal(TOTP_SECRET, user_id),
            confirmed,
        )
    await connection.execute(
        "INSERT INTO recovery_codes (id, user_id, code_hash, created_at, updated_at) VALUES ($1, $2, $3, now(), now())",
        uuid.uuid4(),
        uuid.UUID(guarded.id),
        hashlib.sha256(RECOVERY_CODE.replace("-", "").encode()).digest(),
    )
    # The guarded user's passkey, made through the API by a software authenticator, and a login challenge for it.
    authenticator = SoftAuthenticator(origin=client.app.state.settings.origins[0])
    await register_passkey(client, guarded_login.headers, authenticator)
    started = (await client.post("/api/v1/auth/passkey/options", json={})).json()
    return {"guarded_headers": guarded_login.headers, "authenticator": authenticator, "passkey_login": started}


def passkey_login(world: World) -> dict[str, Any]:
    """The guarded user's authenticator answering the seeded login challenge (its counter moves on each call)."""
    started = world.extra["passkey_login"]
    credential = world.extra["authenticator"].get(started["options"])
    return {"json": {"challenge_id": started["challenge_id"], "credential": credential}}


def session_of(headers: dict[str, str]) -> str:
    """The session id (`sid`) of the access token in `headers`."""
    token = headers["Authorization"].removeprefix("Bearer ")
    return str(unverified_parts(token)[1]["sid"])


def factor_proof(world: World) -> dict[str, Any]:
    return {
        "json": {"password": PASSWORD, "recovery_code": RECOVERY_CODE},
        "headers": world.extra["guarded_headers"],
    }


def passkey_registration(world: World) -> dict[str, Any]:
    """A registration of a new passkey answering the member's seeded challenge (a new credential each call)."""
    credential = SoftAuthenticator(origin=world.extra["origin"]).create(world.extra["registration_options"])
    return {
        "json": {"challenge_id": world.extra["challenge_id"], "credential": credential},
        "headers": world.member_headers,
    }


@dataclass(frozen=True)
class Write:
    """One write endpoint: its path (formatted with the world as `w`), how to call it in a world, and the status
    it answers when all goes well."""

    method: str
    path: str
    succeeds_with: int
    call: Callable[[World], dict[str, Any]] = lambda _: {}


NEW_USER = {"email": "new@example.com", "username": "newcomer", "password": "long enough"}
NEW_PASSWORD = "another long one"
CLIENT_PUBLIC_KEY = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
CLIENT_JWKS = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(CLIENT_PUBLIC_KEY)}]}
WRITES = {
    "createUser": Write("POST", "/api/v1/users", 201, lambda w: {"json": NEW_USER, "headers": w.admin}),
    "register": Write("POST", "/api/v1/auth/register", 201, lambda _: {"json": NEW_USER}),
    "updateUser": Write(
        "PATCH", "/api/v1/users/{w.member.id}", 200, lambda w: {"json": {"full_name": "New"}, "headers": w.admin}
    ),
    "updateMe": Write(
        "PATCH", "/api/v1/users/me", 200, lambda w: {"json": {"bio": "new"}, "headers": w.member_headers}
    ),
    "deleteUser": Write("DELETE", "/api/v1/users/{w.member.id}", 204, lambda w: {"headers": w.admin}),
    "changeMyPassword": Write(
        "POST",
        "/api/v1/users/me/password",
        204,
        lambda w: {"json": {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, "headers": w.member_headers},
    ),
    "createToken": Write(
        "POST",
        "/api/v1/auth/token",
        200,
        # The admin's: the member has a passkey, so a password alone gets an mfa_required challenge (also a write).
        lambda _: {"data": {"grant_type": "password", "username": "admin", "password": PASSWORD}},
    ),
    "refreshToken": Write("POST", "/api/v1/auth/refresh", 200, lambda w: {"json": {"refresh_token": w.refresh_token}}),
    "logOut": Write("POST", "/api/v1/auth/logout", 204, lambda w: {"json": {"refresh_token": w.refresh_token}}),
    "logOutEverywhere": Write("POST", "/api/v1/auth/logout-all", 204, lambda w: {"headers": w.member_headers}),
    "verifyEmail": Write("POST", "/api/v1/auth/verify-email", 204, lambda _: {"json": {"token": VERIFY_TOKEN}}),
    "resendVerificationEmail": Write(
        "POST", "/api/v1/auth/verify-email/resend", 202, lambda w: {"headers": w.member_headers}
    ),
    "requestPasswordReset": Write(
        "POST", "/api/v1/auth/password-reset", 202, lambda w: {"json": {"email": w.member.email}}
    ),
    "confirmPasswordReset": Write(
        "POST",
        "/api/v1/auth/password-reset/confirm",
        204,
        lambda _: {"json": {"token": RESET_TOKEN, "new_password": NEW_PASSWORD}},
    ),
    "createApiKey": Write(
        "POST",
        "/api/v1/api-keys",
        201,
        lambda w: {"json": {"name": "new", "scopes": ["users:read"]}, "headers": w.admin},
    ),
    "revokeApiKey": Write("DELETE", "/api/v1/api-keys/{w.api_key_id}", 204, lambda w: {"headers": w.admin}),
    "createOAuthClient": Write(
        "POST",
        "/api/v1/oauth-clients",
        201,
        lambda w: {"json": {"name": "new", "scopes": ["users:read"]}, "headers": w.admin},
    ),
    "rotateOAuthClientSecret": Write(
        "POST", "/api/v1/oauth-clients/{w.client_id}/secret", 200, lambda w: {"json": {}, "headers": w.admin}
    ),
    "replaceOAuthClientJwks": Write(
        "PUT", "/api/v1/oauth-clients/{w.client_id}/jwks", 200, lambda w: {"json": CLIENT_JWKS, "headers": w.admin}
    ),
    "deleteOAuthClient": Write("DELETE", "/api/v1/oauth-clients/{w.client_id}", 204, lambda w: {"headers": w.admin}),
    "createWebhook": Write(
        "POST",
        "/api/v1/webhooks",
        201,
        lambda w: {"json": {"url": "https://93.184.215.14/new", "event_types": ["*"]}, "headers": w.admin},
    ),
    "updateWebhook": Write(
        "PATCH", "/api/v1/webhooks/{w.webhook_id}", 200, lambda w: {"json": {"description": "new"}, "headers": w.admin}
    ),
    "rotateWebhookSecret": Write(
        "POST", "/api/v1/webhooks/{w.webhook_id}/rotate-secret", 200, lambda w: {"json": {}, "headers": w.admin}
    ),
    "deleteWebhook": Write("DELETE", "/api/v1/webhooks/{w.webhook_id}", 204, lambda w: {"headers": w.admin}),
    "redeliverWebhook": Write(
        "POST",
        "/api/v1/webhooks/{w.webhook_id}/deliveries/{w.delivery_id}/redeliver",
        202,
        lambda w: {"headers": w.admin},
    ),
    "revokeToken": Write("POST", "/api/v1/auth/revoke", 200, lambda w: {"data": {"token": w.member_token}}),
    "startPasskeyRegistration": Write(
        "POST", "/api/v1/users/me/passkeys/registration-options", 200, lambda w: {"headers": w.member_headers}
    ),
    "registerPasskey": Write("POST", "/api/v1/users/me/passkeys", 201, passkey_registration),
    "renameMyPasskey": Write(
        "PATCH",
        "/api/v1/users/me/passkeys/{w.extra[passkey_id]}",
        200,
        lambda w: {"json": {"name": "Old laptop"}, "headers": w.member_headers},
    ),
    "deleteMyPasskey": Write(
        "DELETE", "/api/v1/users/me/passkeys/{w.extra[passkey_id]}", 204, lambda w: {"headers": w.member_headers}
    ),
    "deleteUserPasskey": Write(
        "DELETE", "/api/v1/users/{w.member.id}/passkeys/{w.extra[passkey_id]}", 204, lambda w: {"headers": w.admin}
    ),
    "enrolTotp": Write("POST", "/api/v1/users/me/mfa/totp", 200, lambda w: {"headers": w.member_headers}),
    "confirmTotp": Write(
        "POST",
        "/api/v1/users/me/mfa/totp/confirm",
        200,
        lambda w: {"json": {"code": pyotp.TOTP(base64.b32encode(TOTP_SECRET).decode()).now()}, "headers": w.admin},
    ),
    "disableTotp": Write("POST", "/api/v1/users/me/mfa/totp/disable", 204, factor_proof),
    "renewRecoveryCodes": Write("POST", "/api/v1/users/me/mfa/recovery-codes", 200, factor_proof),
    "resetUserSecondFactors": Write("DELETE", "/api/v1/users/{w.member.id}/mfa", 204, lambda w: {"headers": w.admin}),
    "startPasskeyLogin": Write("POST", "/api/v1/auth/passkey/options", 200, lambda _: {"json": {}}),
    "logInWithPasskey": Write("POST", "/api/v1/auth/passkey/login", 200, passkey_login),
    "endMySession": Write(
        "DELETE",
        "/api/v1/users/me/sessions/{w.extra[member_session]}",
        204,
        lambda w: {"headers": w.member_headers},
    ),
    "endUserSession": Write(
        "DELETE",
        "/api/v1/users/{w.member.id}/sessions/{w.extra[member_session]}",
        204,
        lambda w: {"headers": w.admin},
    ),
}
"""Every operation of the OpenAPI document that writes the service's tables (test_every_write_is_in_the_table
keeps it so)."""
QUEUE_WRITES = {"importUsers", "exportUsers", "abortJob"}
"""The operations whose one write is to the job queue (SAQ's job is the job's record), not to these tables."""
READS_BY_POST = {"introspectToken", "batchGetUsers"}
"""POSTs that write nothing: what they read is in their body, not their URL."""


async def set_fault(database_url: str, mode: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("UPDATE fault_mode SET mode = $1", mode)
    finally:
        await connection.close()


async def call(client: Client, write: Write, world: World, **extra: Any) -> httpx.Response:
    arguments = write.call(world)
    arguments["headers"] = {**arguments.get("headers", {}), **extra.pop("headers", {})}
    return await client.request(write.method, write.path.format(w=world), **arguments, **extra)


@pytest.mark.parametrize("operation", WRITES)
async def test_a_write_whose_commit_fails_is_a_500_and_leaves_nothing(
    client: Client, world: World, faulty_database: str, operation: str
) -> None:
    write = WRITES[operation]
    before = await snapshot(faulty_database)
    await set_fault(faulty_database, "commit")

    response = await call(client, write, world)

    assert_problem(response, 500)
    assert await snapshot(faulty_database) == before
    await set_fault(faulty_database, "off")
    response = await call(client, write, world)
    assert response.status_code == write.succeeds_with, response.text
    assert await snapshot(faulty_database) != before  # the same request does write when nothing breaks


@pytest.mark.parametrize("operation", WRITES)
async def test_a_write_whose_connection_is_killed_is_a_503_and_leaves_nothing(
    client: Client, world: World, faulty_database: str, operation: str
) -> None:
    write = WRITES[operation]
    before = await snapshot(faulty_database)
    await set_fault(faulty_database, "kill")

    response = await call(client, write, world)

    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0
    assert await snapshot(faulty_database) == before
    await set_fault(faulty_database, "off")
    assert (await call(client, write, world)).status_code == write.succeeds_with  # the pools recovered


@pytest.mark.parametrize("operation", ["createUser", "register", "createApiKey"])
async def test_an_idempotent_retry_of_a_failed_commit_runs_again_rather_than_replaying(
    client: Client, world: World, faulty_database: str, operation: str
) -> None:
    write = WRITES[operation]
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    before = await snapshot(faulty_database)
    await set_fault(faulty_database, "commit")

    first = await call(client, write, world, headers=key)
    retry = await call(client, write, world, headers=key)

    assert (first.status_code, retry.status_code) == (500, 500)
    assert "idempotent-replayed" not in retry.headers
    assert await snapshot(faulty_database) == before
    await set_fault(faulty_database, "off")
    done = await call(client, write, world, headers=key)
    assert done.status_code == write.succeeds_with, done.text
    assert "idempotent-replayed" not in done.headers  # it ran: nothing of the failed tries was kept
    replayed = await call(client, write, world, headers=key)
    assert (replayed.status_code, replayed.headers.get("idempotent-replayed")) == (write.succeeds_with, "true")


async def test_every_write_is_in_the_table(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    writes = {
        operation["operationId"]
        for path in document["paths"].values()
        for method, operation in path.items()
        if method in {"post", "put", "patch", "delete"}
    }
    assert writes == set(WRITES) | QUEUE_WRITES | READS_BY_POST


CLIENT_KEY = Ed25519PrivateKey.generate()


@pytest.mark.parametrize(("fault", "status"), [("commit", 500), ("kill", 503)])
async def test_a_private_key_jwt_grant_whose_jti_cannot_be_spent_gets_no_token_and_spends_nothing(  # noqa: PLR0917
    client: Client, world: World, faulty_database: str, settings: Settings, fault: str, status: int
) -> None:
    """The grant's one write is the assertion's jti, committed on its own: when that fails, no token is given, the
    jti is not kept, and the same assertion works once the database does."""
    public = b64url(CLIENT_KEY.public_key().public_bytes_raw())
    registered = await client.put(
        f"/api/v1/oauth-clients/{world.client_id}/jwks",
        json={"keys": [{"kty": "OKP", "crv": "Ed25519", "x": public}]},
        headers=world.admin,
    )
    assert registered.status_code == 200, registered.text
    now = int(time.time())
    claims = {"iss": world.client_id, "sub": world.client_id, "aud": settings.issuer, "exp": now + 60}
    assertion = jwt.encode(claims | {"jti": str(uuid.uuid4()), "iat": now}, CLIENT_KEY, algorithm="EdDSA")
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    before = await snapshot(faulty_database)
    await set_fault(faulty_database, fault)

    response = await client.post("/api/v1/auth/token", data=form)

    assert response.status_code == status, response.text
    assert "access_token" not in response.text
    assert await snapshot(faulty_database) == before
    await set_fault(faulty_database, "off")
    granted = await client.post("/api/v1/auth/token", data=form)
    assert granted.status_code == 200, granted.text
