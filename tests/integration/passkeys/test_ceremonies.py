"""Passkey ceremonies end to end: registration over HTTP, sign-in through the service on a real session (as the token
endpoint calls it), both driven by the software authenticator. What the service must refuse: cloned counters,
replayed or foreign challenges, other origins and relying parties, answers without user verification or with
another user's handle."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from accounts.passkeys.services import PasskeyRejected
from tests.integration.auth.support import LoggedIn, sql
from tests.integration.passkeys.authenticator import CredentialExcluded, SoftAuthenticator, b64url, from_b64url
from tests.integration.passkeys.support import (
    MY_PASSKEYS,
    Ceremonies,
    register_passkey,
    registration_options,
    send_registration,
)
from tests.problems import assert_problem

Change = Callable[[dict[str, Any]], dict[str, Any]]


def with_response(credential: dict[str, Any], **response: Any) -> dict[str, Any]:
    return {**credential, "response": {**credential["response"], **response}}


async def test_a_passkey_registered_over_http_signs_its_user_in_without_a_username(
    ceremonies: Ceremonies, alice: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    client = ceremonies.client
    ceremony = await registration_options(client, alice.headers)
    options = ceremony["options"]
    assert options["rp"] == {"id": ceremonies.settings.rp_id, "name": "Accounts"}
    assert from_b64url(options["user"]["id"]) == uuid.UUID(alice.id).bytes  # the user handle
    assert options["user"]["name"] == alice.account.email
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert options["excludeCredentials"] == []
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert len(from_b64url(options["challenge"])) == 32

    credential = authenticator.create(options)
    response = await send_registration(client, alice.headers, ceremony["challenge_id"], credential, name="Laptop")

    assert response.status_code == 201, response.text
    passkey = response.json()
    assert response.headers["location"] == f"{MY_PASSKEYS}/{passkey['id']}"
    assert passkey["name"] == "Laptop"
    assert passkey["credential_id"] == credential["id"]
    assert passkey["aaguid"] == str(uuid.UUID(bytes=authenticator.aaguid))
    assert passkey["transports"] == ["internal", "hybrid"]
    assert (passkey["backup_eligible"], passkey["backed_up"]) == (True, True)
    assert passkey["last_used_at"] is None
    assert "public_key" not in passkey
    assert "sign_count" not in passkey
    assert (await client.get(response.headers["location"], headers=alice.headers)).json() == passkey

    assert await ceremonies.sign_in(authenticator) == uuid.UUID(alice.id)

    mine = (await client.get(MY_PASSKEYS, headers=alice.headers)).json()["items"]
    assert [p["id"] for p in mine] == [passkey["id"]]
    assert mine[0]["last_used_at"] is not None
    assert await ceremonies.stored_counter(credential["id"]) == 1
    assert await ceremonies.sign_in(authenticator, alice.id) == uuid.UUID(alice.id)  # as a second factor
    assert await ceremonies.stored_counter(credential["id"]) == 2


async def test_several_passkeys_each_excluded_from_the_next_registration(
    ceremonies: Ceremonies, alice: LoggedIn
) -> None:
    client = ceremonies.client
    laptop, phone = ceremonies.authenticator(attestation="packed"), ceremonies.authenticator(attestation="none")
    first = await register_passkey(client, alice.headers, laptop)

    ceremony = await registration_options(client, alice.headers)
    assert [d["id"] for d in ceremony["options"]["excludeCredentials"]] == [first["credential_id"]]
    assert ceremony["options"]["excludeCredentials"][0]["transports"] == ["internal", "hybrid"]
    with pytest.raises(CredentialExcluded):
        laptop.create(ceremony["options"])  # the browser refuses to make a second one on the same authenticator
    credential = phone.create(ceremony["options"])
    second = (await send_registration(client, alice.headers, ceremony["challenge_id"], credential)).json()

    assert second["name"].startswith("Passkey of ")
    items = (await client.get(MY_PASSKEYS, headers=alice.headers)).json()["items"]
    assert [p["id"] for p in items] == [first["id"], second["id"]]
    _, options = await ceremonies.options(uuid.UUID(alice.id))
    assert {d["id"] for d in options["allowCredentials"]} == {first["credential_id"], second["credential_id"]}
    assert options["userVerification"] == "preferred"
    for authenticator in (laptop, phone):
        assert await ceremonies.sign_in(authenticator, alice.id) == uuid.UUID(alice.id)


async def test_usernameless_sign_in_finds_the_user_by_the_user_handle(
    ceremonies: Ceremonies, alice: LoggedIn, bob: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    await register_passkey(ceremonies.client, alice.headers, authenticator)  # one authenticator, a passkey each
    bobs = await register_passkey(ceremonies.client, bob.headers, authenticator)
    _, options = await ceremonies.options(None)
    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    assert options["rpId"] == ceremonies.settings.rp_id

    assert await ceremonies.sign_in(authenticator, credential_id=authenticator.credential_ids()[0]) == (
        uuid.UUID(alice.id)
    )
    assert await ceremonies.sign_in(authenticator, credential_id=from_b64url(bobs["credential_id"])) == (
        uuid.UUID(bob.id)
    )


async def test_sign_ins_the_service_refuses(
    ceremonies: Ceremonies, alice: LoggedIn, bob: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    credential_id = (await register_passkey(ceremonies.client, alice.headers, authenticator))["credential_id"]
    alice_id, bob_id = uuid.UUID(alice.id), uuid.UUID(bob.id)

    async def refused(
        change: Change | None = None,
        *,
        options_for: uuid.UUID | None = None,
        answer_for: uuid.UUID | None = None,
        **get: Any,
    ) -> str:
        challenge_id, options = await ceremonies.options(options_for)
        answer = authenticator.get(options, **get)
        with pytest.raises(PasskeyRejected) as refusal:
            await ceremonies.authenticate(challenge_id, change(answer) if change else answer, answer_for)
        assert refusal.value.status == 401
        assert refusal.value.oauth_error == "invalid_grant"
        assert refusal.value.user_id in {None, alice_id, bob_id}
        return str(refusal.value)

    def zero_rp_id_hash(answer: dict[str, Any]) -> dict[str, Any]:
        data = from_b64url(answer["response"]["authenticatorData"])
        return with_response(answer, authenticatorData=b64url(b"\0" * 32 + data[32:]))

    assert "origin" in await refused(origin="https://evil.example")
    assert "not registered to this account" in await refused(answer_for=bob_id)  # alice's passkey as bob's factor
    assert "unknown, expired or already used" in await refused(options_for=alice_id, answer_for=bob_id)  # alice's
    assert "unknown, expired or already used" in await refused(options_for=alice_id, answer_for=None)
    assert "userHandle is not the passkey's user" in await refused(
        lambda a: with_response(a, userHandle=b64url(bob_id.bytes))
    )
    assert "no userHandle" in await refused(lambda a: with_response(a, userHandle=None))
    bad_signature = b64url(b"\x30\x06\x02\x01\x01\x02\x01\x01")  # DER, but not a signature of this data
    assert "signature" in await refused(lambda a: with_response(a, signature=bad_signature))
    assert "RP ID" in await refused(zero_rp_id_hash)
    authenticator.user_verified = False  # a security key without its PIN: enough for a second factor, not alone
    assert "user verification is required" in await refused()
    assert await ceremonies.sign_in(authenticator, alice.id) == alice_id
    authenticator.user_verified = True
    counter = await ceremonies.stored_counter(credential_id)
    assert "may be cloned" in await refused(sign_count=counter)  # a counter that did not move forward
    assert "may be cloned" in await refused(sign_count=counter - 1)
    assert await ceremonies.stored_counter(credential_id) == counter  # refused answers change nothing
    assert await ceremonies.sign_in(authenticator, sign_count=counter + 1) == alice_id


async def test_a_cloned_authenticator_is_refused_once_the_original_moved_on(
    ceremonies: Ceremonies, alice: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    credential_id = (await register_passkey(ceremonies.client, alice.headers, authenticator))["credential_id"]
    assert await ceremonies.sign_in(authenticator) == uuid.UUID(alice.id)  # counter 1
    clone = authenticator.clone()
    assert await ceremonies.sign_in(authenticator) == uuid.UUID(alice.id)  # counter 2

    with pytest.raises(PasskeyRejected, match="may be cloned"):
        await ceremonies.sign_in(clone)  # its counter says 2 too

    assert await ceremonies.stored_counter(credential_id) == 2


async def test_an_authenticator_without_a_counter_signs_in_every_time(ceremonies: Ceremonies, alice: LoggedIn) -> None:
    synced = ceremonies.authenticator(counter=False)  # always 0, as synced passkeys report
    await register_passkey(ceremonies.client, alice.headers, synced)
    for _ in range(2):
        assert await ceremonies.sign_in(synced) == uuid.UUID(alice.id)


async def test_a_sign_in_challenge_works_once_even_when_two_answers_race(
    ceremonies: Ceremonies, alice: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    await register_passkey(ceremonies.client, alice.headers, authenticator)
    challenge_id, options = await ceremonies.options(None)
    answers = [authenticator.get(options), authenticator.get(options)]  # counters 1 and 2, both valid

    async def answer(credential: dict[str, Any]) -> bool:
        try:
            await ceremonies.authenticate(challenge_id, credential, None)
        except PasskeyRejected:
            return False
        return True

    assert sorted(await asyncio.gather(*(answer(a) for a in answers))) == [False, True]
    assert not await answer(authenticator.get(options))  # and replayed later


async def test_a_registration_is_refused_for_a_replayed_challenge_or_another_origin_or_relying_party(
    ceremonies: Ceremonies, alice: LoggedIn, bob: LoggedIn, authenticator: SoftAuthenticator
) -> None:
    client = ceremonies.client
    ceremony = await registration_options(client, alice.headers)
    challenge_id, options = ceremony["challenge_id"], ceremony["options"]

    cases = [
        (alice, authenticator.create(options, origin="https://evil.example"), "credential", "origin"),
        (alice, authenticator.create({**options, "rp": {"id": "evil.example"}}), "credential", "RP ID"),
        (alice, authenticator.create({**options, "challenge": b64url(b"\1" * 32)}), "credential", "challenge"),
        (bob, authenticator.create(options), "challenge_id", "unknown, expired or already used"),  # alice's
    ]
    for caller, credential, field, reason in cases:
        response = await send_registration(client, caller.headers, challenge_id, credential)
        assert reason in assert_problem(response, 400, field=field)["detail"], (field, reason)

    good = authenticator.create(options)
    assert (await send_registration(client, alice.headers, challenge_id, good)).status_code == 201
    replayed = await send_registration(client, alice.headers, challenge_id, authenticator.create(options))
    assert_problem(replayed, 400, field="challenge_id")

    expired = await registration_options(client, alice.headers)
    await sql(ceremonies.database_url, "UPDATE webauthn_challenges SET expires_at = now() - interval '1 second'")
    late = await send_registration(
        client, alice.headers, expired["challenge_id"], ceremonies.authenticator().create(expired["options"])
    )
    assert_problem(late, 400, field="challenge_id")
    assert len((await client.get(MY_PASSKEYS, headers=alice.headers)).json()["items"]) == 1


def test_the_software_authenticator_signs_what_an_independent_verifier_accepts() -> None:
    """The helper itself, against `cryptography` alone: its assertion verifies with the public key of its attestation
    (so a refusal in the tests above is the service's doing, not a broken authenticator)."""
    authenticator = SoftAuthenticator(origin="https://example.com")
    options = {
        "rp": {"id": "example.com"},
        "user": {"id": b64url(b"u")},
        "challenge": b64url(b"c" * 32),
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
    }
    made = authenticator.create(options)
    got = authenticator.get({"rpId": "example.com", "challenge": b64url(b"d" * 32)})

    key = load_der_public_key(from_b64url(made["response"]["publicKey"]))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    client_data = from_b64url(got["response"]["clientDataJSON"])
    signed = from_b64url(got["response"]["authenticatorData"]) + hashlib.sha256(client_data).digest()
    key.verify(from_b64url(got["response"]["signature"]), signed, ec.ECDSA(hashes.SHA256()))
    assert from_b64url(got["response"]["userHandle"]) == b"u"
