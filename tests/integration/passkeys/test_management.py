"""A user's passkeys over HTTP: list, rename, delete, who may touch whose, the security e-mails, and hostile input."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from accounts.core.errors import InvalidInput
from accounts.passkeys.services import PasskeyRejected
from tests.integration.auth.support import LoggedIn, sql
from tests.integration.passkeys.authenticator import SoftAuthenticator, b64url
from tests.integration.passkeys.support import (
    MY_PASSKEYS,
    REGISTRATION_OPTIONS,
    Ceremonies,
    Client,
    register_passkey,
    registration_options,
    send_registration,
    user_passkeys,
)
from tests.problems import assert_problem


async def outbox(database_url: str, recipient: str) -> list[tuple[str, str]]:
    rows = await sql(
        database_url, "SELECT kind, subject FROM outbox_messages WHERE recipient = $1 ORDER BY created_at", recipient
    )
    return [(row["kind"], row["subject"]) for row in rows]


async def test_a_user_lists_renames_and_deletes_their_passkeys_and_is_told_by_email(
    ceremonies: Ceremonies, alice: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    client, database_url = ceremonies.client, ceremonies.database_url
    first = await register_passkey(client, alice.headers, authenticator, name="Laptop")
    second = await register_passkey(client, alice.headers, ceremonies.authenticator())

    renamed = await client.patch(f"{MY_PASSKEYS}/{first['id']}", json={"name": "Old laptop"}, headers=alice.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {**first, "name": "Old laptop"}
    deleted = await client.delete(f"{MY_PASSKEYS}/{first['id']}", headers=alice.headers)

    assert deleted.status_code == 204
    assert [p["id"] for p in (await client.get(MY_PASSKEYS, headers=alice.headers)).json()["items"]] == [second["id"]]
    assert_problem(await client.delete(f"{MY_PASSKEYS}/{first['id']}", headers=alice.headers), 404)
    assert await outbox(database_url, alice.account.email) == [
        ("passkey_added", "A passkey was added to your account"),
        ("passkey_added", "A passkey was added to your account"),
        ("passkey_removed", "A passkey was removed from your account"),
    ]
    bodies = await sql(database_url, "SELECT body FROM outbox_messages WHERE kind = 'passkey_removed'")
    assert "“Old laptop”" in bodies[0]["body"]
    challenge_id, options = await ceremonies.options(None)  # the deleted passkey signs in no more
    with pytest.raises(PasskeyRejected, match="not registered"):
        await ceremonies.authenticate(challenge_id, authenticator.get(options), None)


async def test_another_users_passkey_is_not_found_and_admins_manage_anyones(
    ceremonies: Ceremonies, alice: LoggedIn, bob: LoggedIn, admin: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    client, database_url = ceremonies.client, ceremonies.database_url
    passkey = await register_passkey(client, alice.headers, authenticator)
    mine = f"{MY_PASSKEYS}/{passkey['id']}"
    for method, extra in (("GET", {}), ("PATCH", {"json": {"name": "Mine now"}}), ("DELETE", {})):
        assert_problem(await client.request(method, mine, headers=bob.headers, **extra), 404)
    assert (await client.get(MY_PASSKEYS, headers=bob.headers)).json() == {"items": []}
    alices = user_passkeys(alice.id)
    for method, path in (("GET", alices), ("DELETE", f"{alices}/{passkey['id']}")):
        assert_problem(await client.request(method, path, headers=bob.headers), 403)
    assert_problem(await client.get(user_passkeys(str(uuid.uuid4())), headers=admin.headers), 404)
    assert_problem(await client.delete(f"{user_passkeys(bob.id)}/{passkey['id']}", headers=admin.headers), 404)

    assert (await client.get(alices, headers=admin.headers)).json()["items"] == [passkey]
    assert (await client.delete(f"{alices}/{passkey['id']}", headers=admin.headers)).status_code == 204

    assert (await client.get(alices, headers=admin.headers)).json() == {"items": []}
    assert [kind for kind, _ in await outbox(database_url, alice.account.email)] == ["passkey_added", "passkey_removed"]


async def test_a_credential_registered_to_one_account_is_a_409_for_another(
    ceremonies: Ceremonies, alice: LoggedIn, bob: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    client = ceremonies.client
    alices = await register_passkey(client, alice.headers, authenticator)
    ceremony = await registration_options(client, bob.headers)
    again = authenticator.create(ceremony["options"], reuse=authenticator.credential_ids()[0])

    response = await send_registration(client, bob.headers, ceremony["challenge_id"], again)

    assert_problem(response, 409, field="credential_id")
    assert (await client.get(MY_PASSKEYS, headers=bob.headers)).json() == {"items": []}
    assert (await client.get(MY_PASSKEYS, headers=alice.headers)).json() == {"items": [alices]}


async def test_an_api_key_has_no_passkeys_of_its_own(client: Client, service_key: str) -> None:
    assert_problem(await client.post(REGISTRATION_OPTIONS, headers={"X-API-Key": service_key}), 403)
    assert_problem(await client.get(MY_PASSKEYS), 401)


def hostile_bodies(challenge_id: str, credential: dict[str, Any]) -> list[tuple[str, dict[str, Any] | str, str]]:
    """(what, body, the field the 400 must name) for a registration."""
    response = credential["response"]

    def with_credential(**changes: Any) -> dict[str, Any]:
        return {"challenge_id": challenge_id, "credential": {**credential, **changes}}

    def with_response(**changes: Any) -> dict[str, Any]:
        return with_credential(response={**response, **changes})

    return [
        ("challenge id not a uuid", {"challenge_id": "nope", "credential": credential}, "challenge_id"),
        ("challenge id a number", {"challenge_id": 5, "credential": credential}, "challenge_id"),
        ("no credential", {"challenge_id": challenge_id}, "credential"),
        ("credential a string", {"challenge_id": challenge_id, "credential": "{}"}, "credential"),
        ("unknown field", {"challenge_id": challenge_id, "credential": credential, "admin": True}, "admin"),
        ("name with NUL", {"challenge_id": challenge_id, "credential": credential, "name": "a\u0000b"}, "name"),
        ("name too long", {"challenge_id": challenge_id, "credential": credential, "name": "n" * 101}, "name"),
        ("id padded", with_credential(id=credential["id"] + "="), "credential.id"),
        ("id base64, not url", with_credential(rawId=credential["rawId"][:-2] + "+/"), "credential.rawId"),
        ("id huge", with_credential(id="A" * 100_000), "credential.id"),
        ("id too short", with_credential(id="AAAA"), "credential.id"),
        ("type", with_credential(type="private-key"), "credential.type"),
        ("attachment", with_credential(authenticatorAttachment="usb"), "credential.authenticatorAttachment"),
        ("response a list", with_credential(response=[]), "credential.response"),
        ("transports not strings", with_response(transports=[1]), "credential.response.transports[0]"),
        ("client data NUL", with_response(clientDataJSON="ab\u0000c"), "credential.response.clientDataJSON"),
        ("client data one char over", with_response(clientDataJSON="abcde"), "credential.response.clientDataJSON"),
        ("client data not JSON", with_response(clientDataJSON=b64url(b"\xff\xfe not json")), "credential"),
        ("attestation not CBOR", with_response(attestationObject=b64url(b"\xff" * 40)), "credential"),
        ("attestation empty", with_response(attestationObject=""), "credential"),
        ("raw id not the id", with_credential(rawId=b64url(b"\1" * 32)), "credential"),
    ]


async def test_hostile_registrations_are_400s_naming_the_field_and_change_nothing(
    ceremonies: Ceremonies, alice: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    client, database_url = ceremonies.client, ceremonies.database_url
    ceremony = await registration_options(client, alice.headers)
    credential = authenticator.create(ceremony["options"])

    for what, body, field in hostile_bodies(ceremony["challenge_id"], credential):
        response = await client.post(MY_PASSKEYS, json=body, headers=alice.headers)
        assert response.status_code == 400, (what, response.text)
        assert_problem(response, 400, field=field)
    invalid_utf8 = b'{"challenge_id": "' + ceremony["challenge_id"].encode() + b'", "credential": {}, "name": "\xff"}'
    response = await client.post(
        MY_PASSKEYS, content=invalid_utf8, headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 400)

    assert await sql(database_url, "SELECT id FROM passkeys") == []
    # The challenge survived every refusal (each rolled back): the genuine answer still registers.
    assert (await send_registration(client, alice.headers, ceremony["challenge_id"], credential)).status_code == 201


HOSTILE_REQUESTS = [
    ("GET", f"{MY_PASSKEYS}/not-a-uuid", None, "passkey_id"),
    ("PATCH", f"{MY_PASSKEYS}/{uuid.UUID(int=1)}", {"name": ""}, "name"),
    ("PATCH", f"{MY_PASSKEYS}/{uuid.UUID(int=1)}", {"name": "a\nb"}, "name"),
    ("PATCH", f"{MY_PASSKEYS}/{uuid.UUID(int=1)}", {"name": 7}, "name"),
    ("PATCH", f"{MY_PASSKEYS}/{uuid.UUID(int=1)}", {"label": "x"}, "label"),
    ("DELETE", f"{MY_PASSKEYS}/%00", None, "passkey_id"),
    ("GET", user_passkeys("123"), None, "user_id"),
]


async def test_hostile_paths_and_renames_are_400s_naming_the_field(client: Client, admin: LoggedIn) -> None:
    for method, path, body, field in HOSTILE_REQUESTS:
        response = await client.request(method, path, json=body, headers=admin.headers)
        assert response.status_code == 400, (method, path, body, response.text)
        assert_problem(response, 400, field=field)


async def test_hostile_sign_in_answers_are_refused_by_the_service_never_crash_it(
    ceremonies: Ceremonies, alice: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    await register_passkey(ceremonies.client, alice.headers, authenticator)
    challenge_id, options = await ceremonies.options(None)
    good = authenticator.get(options)
    response = good["response"]
    malformed: list[Any] = [
        "a string",
        {**good, "id": 5},
        {**good, "response": {**response, "signature": "A" * 5000}},
        {**good, "response": {**response, "userHandle": "A" * 200}},
        {**good, "response": {**response, "authenticatorData": "AAAA"}},  # shorter than 37 bytes
        {**good, "response": {**response, "clientDataJSON": "abcde"}},
    ]
    unverifiable: list[Any] = [
        {**good, "response": {**response, "clientDataJSON": b64url(b"\0\0\0")}},
        {**good, "response": {**response, "authenticatorData": b64url(b"\xff" * 40)}},
        {**good, "response": {**response, "signature": b64url(b"not DER")}},
        {**good, "rawId": good["rawId"][:-4] + "AAAA", "id": good["id"][:-4] + "AAAA"},
    ]
    for credential, error in [*((c, InvalidInput) for c in malformed), *((c, PasskeyRejected) for c in unverifiable)]:
        with pytest.raises(error):
            await ceremonies.authenticate(challenge_id, credential, None)
    # Every refusal rolled back: the challenge still serves the genuine answer.
    assert (await ceremonies.authenticate(challenge_id, good, None)).user_id == uuid.UUID(alice.id)
