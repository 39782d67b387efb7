"""Passkeys: the one service that writes `passkeys` and `webauthn_challenges`.

A ceremony has two steps. The options step stores a random challenge (`webauthn_challenges`, for
WEBAUTHN_CHALLENGE_TTL seconds) and answers the browser's options with its id; the answer step spends the challenge
with one conditional `DELETE ... RETURNING`, so it works once even when two answers race, and verifies the
browser's answer with py_webauthn against WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS. Everything happens in the caller's
session: its commit spends the challenge and keeps the change. The registration endpoints are in this package;
signing in with a passkey (without a password, or as a second factor) is the token endpoint's (accounts.auth),
which calls `authentication_options` and `authenticate`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import asyncpg
import msgspec
import structlog
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url, options_to_json_dict
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorAssertionResponse,
    AuthenticatorAttachment,
    AuthenticatorAttestationResponse,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialType,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from accounts.config import Settings
from accounts.core.errors import Conflict, FieldError, InvalidGrant, InvalidInput, NotFound
from accounts.mail.outbox import Outbox
from accounts.passkeys.models import AUTHENTICATION, REGISTRATION, Passkey, WebAuthnChallenge
from accounts.passkeys.schemas import AuthenticationResponseJSON, PasskeyRead, PasskeyRegistration
from accounts.users.models import User
from accounts.users.services import UserService

log = structlog.get_logger("accounts.passkeys")

MAX_PASSKEYS = 32
"""The most passkeys one account may have."""
NOTICE_TTL = timedelta(days=7)
"""How long a security notice waits to be sent before it is stale."""
_TRANSPORTS = {transport.value for transport in AuthenticatorTransport}
# What py_webauthn's parsing and verification raise on a malformed answer besides its own errors (CBOR, struct
# unpacking, keys of the wrong type or size): all of them mean the answer does not verify.
_MALFORMED = (WebAuthnException, ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error)

Response = TypeVar("Response", bound=msgspec.Struct)


class InvalidChallenge(InvalidInput):
    """400: a registration's `challenge_id` that is unknown, expired, already used or another user's."""

    type = "/problems/invalid-challenge"

    def __init__(self) -> None:
        super().__init__(
            "challenge_id: the challenge is unknown, expired or already used; ask for new options.",
            errors=[FieldError(field="challenge_id", message="unknown, expired or already used")],
        )


class InvalidCredential(InvalidInput):
    """400: a registration's `credential` that does not verify (another origin or relying party, a bad
    attestation, a malformed field)."""

    type = "/problems/invalid-credential"

    def __init__(self, reason: str, field: str = "credential") -> None:
        super().__init__(f"{field}: {reason}", errors=[FieldError(field=field, message=reason)])


class PasskeyRejected(InvalidGrant):
    """401 (an RFC 6749 `invalid_grant` on the OAuth endpoints): a passkey sign-in that fails: its challenge is
    unknown, expired, used or for someone else, its credential is not registered (or not the user's), or its
    assertion does not verify (origin, relying party, challenge, signature, user verification, a counter that did
    not move forward). `user_id` is the account it tried, when known, so the failure can count against it."""

    def __init__(self, detail: str, *, user_id: UUID | None = None) -> None:
        super().__init__(detail)
        self.user_id = user_id


class PasskeyService(SQLAlchemyAsyncRepositoryService[Passkey]):
    """A user's passkeys and their ceremonies, on the caller's session (nothing here commits).

    API for sign-in (accounts.auth):
      - `authentication_options(user_id)` -> (challenge_id, PublicKeyCredentialRequestOptionsJSON)
      - `authenticate(challenge_id, credential, user_id)` -> the Passkey that signed (its `user_id` is who)
    """

    class Repo(SQLAlchemyAsyncRepository[Passkey]):
        model_type = Passkey

    repository_type = Repo

    def __init__(self, session: AsyncSession, settings: Settings, users: UserService) -> None:
        super().__init__(session=session)
        self.session = session
        self.settings = settings
        self.users = users

    # --- registration -----------------------------------------------------------------------------------

    async def registration_options(self, user_id: UUID) -> tuple[UUID, dict[str, Any]]:
        """A stored challenge (bound to the user) and the PublicKeyCredentialCreationOptionsJSON to make a passkey
        with: a discoverable credential (resident key required), user verification preferred, none of the user's
        own credentials again (excludeCredentials), and `user.id` the user's UUID (16 bytes: the user handle that
        names them when they later sign in without a username)."""
        user = await self.users.row(self.session, user_id)
        challenge = secrets.token_bytes(32)
        options = generate_registration_options(
            rp_id=self.settings.rp_id,
            rp_name=self.settings.webauthn_rp_name,
            user_id=user.id.bytes,
            user_name=user.email,
            user_display_name=user.full_name or user.username,
            challenge=challenge,
            timeout=self.settings.webauthn_challenge_ttl * 1000,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[_descriptor(passkey) for passkey in await self.list_for(user_id)],
        )
        return self._store_challenge(REGISTRATION, challenge, user_id), options_to_json_dict(options)

    async def register(self, user_id: UUID, data: PasskeyRegistration) -> tuple[Passkey, UUID]:
        """Spend the registration challenge, verify the browser's answer (its challenge, origin, relying party and
        attestation statement, user presence) and keep the new passkey, with the security e-mail that tells the
        user. Returns the passkey and the e-mail's outbox id (to enqueue after the commit)."""
        challenge = await self._spend_challenge(data.challenge_id, REGISTRATION, WebAuthnChallenge.user_id == user_id)
        if challenge is None:
            raise InvalidChallenge
        credential = _registration_credential(data)
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.settings.rp_id,
                expected_origin=self.settings.origins,
            )
        except _MALFORMED as exc:
            raise InvalidCredential(_reason(exc)) from None
        if verified.credential_id != credential.raw_id:
            raise InvalidCredential("the attested credential id is not the credential's rawId", "credential.rawId")
        count = await self.session.scalar(select(func.count()).where(Passkey.user_id == user_id))
        if (count or 0) >= MAX_PASSKEYS:
            raise Conflict(f"An account may have at most {MAX_PASSKEYS} passkeys; delete one first.")
        user = await self.users.row(self.session, user_id)
        now = datetime.now(UTC)
        passkey = await self.create(
            {
                "user_id": user_id,
                "credential_id": verified.credential_id,
                "public_key": verified.credential_public_key,
                "sign_count": verified.sign_count,
                "transports": [t for t in dict.fromkeys(data.credential.response.transports) if t in _TRANSPORTS],
                "aaguid": UUID(verified.aaguid),
                "backup_eligible": verified.credential_device_type is CredentialDeviceType.MULTI_DEVICE,
                "backed_up": verified.credential_backed_up,
                "name": data.name or f"Passkey of {now:%Y-%m-%d %H:%M} UTC",
            }
        )
        return passkey, await self._notify(user, ADDED, passkey.name, now)

    # --- a user's passkeys ------------------------------------------------------------------------------

    async def list_for(self, user_id: UUID) -> list[Passkey]:
        """The user's passkeys, oldest first."""
        return list(await self.repository.get_many(Passkey.user_id == user_id, order_by=[("created_at", False)]))

    async def list_of_user(self, user_id: UUID) -> list[Passkey]:
        """The passkeys of a user who must exist (404 otherwise), for admins."""
        await self.users.row(self.session, user_id)
        return await self.list_for(user_id)

    async def get_for(self, user_id: UUID, passkey_id: UUID) -> Passkey:
        """One of the user's passkeys; another user's is as missing as one that does not exist (404)."""
        passkey: Passkey | None = await self.repository.get_one_or_none(id=passkey_id, user_id=user_id)
        if passkey is None:
            raise _no_passkey(passkey_id)
        return passkey

    async def rename(self, user_id: UUID, passkey_id: UUID, name: str) -> Passkey:
        renamed: Passkey | None = await self.session.scalar(
            update(Passkey)
            .where(Passkey.id == passkey_id, Passkey.user_id == user_id)
            .values(name=name, updated_at=func.now())
            .returning(Passkey),
            execution_options={"populate_existing": True},
        )
        if renamed is None:
            raise _no_passkey(passkey_id)
        return renamed

    async def remove(self, user_id: UUID, passkey_id: UUID) -> UUID:
        """Delete one of the user's passkeys (404 if it is not theirs) and write the security e-mail that tells
        them; returns its outbox id."""
        name = await self.session.scalar(
            delete(Passkey).where(Passkey.id == passkey_id, Passkey.user_id == user_id).returning(Passkey.name)
        )
        if name is None:
            raise _no_passkey(passkey_id)
        user = await self.users.row(self.session, user_id)
        return await self._notify(user, REMOVED, name, datetime.now(UTC))

    # --- signing in (called by accounts.auth) ------------------------------------------------------------

    async def authentication_options(self, user_id: UUID | None) -> tuple[UUID, dict[str, Any]]:
        """A stored challenge and the PublicKeyCredentialRequestOptionsJSON of a sign-in.

        With `user_id` (a second factor, the user known from their password): the challenge is bound to the user,
        `allowCredentials` lists their passkeys (empty if they have none: check `list_for` first) and user
        verification is preferred. Without (a passwordless, usernameless sign-in): `allowCredentials` is empty, so
        the browser offers the discoverable credentials it holds for WEBAUTHN_RP_ID, and user verification is
        required (the passkey is the only factor)."""
        allowed = [] if user_id is None else [_descriptor(passkey) for passkey in await self.list_for(user_id)]
        challenge = secrets.token_bytes(32)
        options = generate_authentication_options(
            rp_id=self.settings.rp_id,
            challenge=challenge,
            timeout=self.settings.webauthn_challenge_ttl * 1000,
            allow_credentials=allowed,
            user_verification=(
                UserVerificationRequirement.REQUIRED if user_id is None else UserVerificationRequirement.PREFERRED
            ),
        )
        return self._store_challenge(AUTHENTICATION, challenge, user_id), options_to_json_dict(options)

    async def authenticate(
        self, challenge_id: UUID, credential: dict[str, Any] | AuthenticationResponseJSON, user_id: UUID | None
    ) -> Passkey:
        """The passkey that signed in: `credential` (the browser's AuthenticationResponseJSON) answers the
        challenge of `authentication_options(user_id)`, given the same `user_id`.

        In order: the challenge is spent (one conditional DELETE: of two concurrent answers, one gets it; a
        challenge made for a user only serves that user, one made for no user serves either call); the credential
        is found by its id, and must be `user_id`'s when that is given; its `userHandle` must name the passkey's
        user (and is required without `user_id`: it is what says who signs in); py_webauthn verifies the assertion
        (WEBAUTHN_RP_ID, WEBAUTHN_ORIGINS, the challenge, user presence, and user verification when `user_id` is
        None, the signature with the stored public key); the signature counter must move forward unless the
        authenticator keeps none (both 0), else the authenticator may be cloned and nothing is updated; then the
        counter, the backup state and `last_used_at` are stored, and the passkey is returned (`user_id` is who
        signed in; whether that user may sign in, active and so on, is the caller's to check).

        Raises InvalidInput (400, naming the field) for a `credential` that is not an AuthenticationResponseJSON,
        and PasskeyRejected (an Unauthenticated, `invalid_grant`) for every failure of the ceremony, with the
        account's id when known. All of it is in the caller's session: committed, the challenge is spent; rolled
        back, it may be answered again until it expires (never twice successfully)."""
        answer = _as_struct(credential, AuthenticationResponseJSON)
        raw_id = _bytes(answer.raw_id, "credential.rawId")
        user_handle = (
            None
            if answer.response.user_handle is None
            else _bytes(answer.response.user_handle, "credential.response.userHandle")
        )
        assertion = AuthenticationCredential(
            id=answer.id,
            raw_id=raw_id,
            response=AuthenticatorAssertionResponse(
                client_data_json=_bytes(answer.response.client_data_json, "credential.response.clientDataJSON"),
                authenticator_data=_bytes(answer.response.authenticator_data, "credential.response.authenticatorData"),
                signature=_bytes(answer.response.signature, "credential.response.signature"),
                user_handle=user_handle,
            ),
            authenticator_attachment=_attachment(answer.authenticator_attachment),
            type=PublicKeyCredentialType.PUBLIC_KEY,
        )
        bound: ColumnElement[bool] = WebAuthnChallenge.user_id.is_(None)
        if user_id is not None:
            bound = or_(bound, WebAuthnChallenge.user_id == user_id)
        challenge = await self._spend_challenge(challenge_id, AUTHENTICATION, bound)
        if challenge is None:
            raise PasskeyRejected(
                "The passkey challenge is unknown, expired or already used; ask for new options.", user_id=user_id
            )
        passkey = await self.repository.get_one_or_none(credential_id=raw_id)
        if passkey is None or (user_id is not None and passkey.user_id != user_id):
            raise PasskeyRejected("This passkey is not registered to this account.", user_id=user_id)
        if user_handle is None and user_id is None:
            raise PasskeyRejected(
                "The answer has no userHandle: a sign-in without a username needs a discoverable passkey.",
                user_id=passkey.user_id,
            )
        if user_handle is not None and user_handle != passkey.user_id.bytes:
            raise PasskeyRejected("The answer's userHandle is not the passkey's user.", user_id=passkey.user_id)
        try:
            verified = verify_authentication_response(
                credential=assertion,
                expected_challenge=challenge,
                expected_rp_id=self.settings.rp_id,
                expected_origin=self.settings.origins,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=0,  # compared below, once the signature is known to be good
                require_user_verification=user_id is None,
            )
        except _MALFORMED as exc:
            raise PasskeyRejected(
                f"The passkey's answer does not verify: {_reason(exc)}", user_id=passkey.user_id
            ) from None
        stored = passkey.sign_count
        # One conditional UPDATE: of two answers with the same counter (a clone racing the original), one moves it.
        used: Passkey | None = await self.session.scalar(
            update(Passkey)
            .where(
                Passkey.id == passkey.id,
                or_(Passkey.sign_count < verified.new_sign_count, Passkey.sign_count + verified.new_sign_count == 0),
            )
            .values(
                sign_count=verified.new_sign_count,
                backed_up=verified.credential_backed_up,
                last_used_at=func.now(),
                updated_at=func.now(),
            )
            .returning(Passkey),
            execution_options={"populate_existing": True},
        )
        if used is None:
            log.warning(
                "passkey counter did not move forward: the authenticator may be cloned",
                passkey_id=str(passkey.id),
                user_id=str(passkey.user_id),
                stored=stored,
                received=verified.new_sign_count,
            )
            raise PasskeyRejected(
                f"The passkey's signature counter did not move forward ({verified.new_sign_count}, after {stored}):"
                " the authenticator may be cloned.",
                user_id=passkey.user_id,
            )
        return used

    # --- challenges and notices ---------------------------------------------------------------------------

    def _store_challenge(self, purpose: str, challenge: bytes, user_id: UUID | None) -> UUID:
        challenge_id = uuid7()
        expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.webauthn_challenge_ttl)
        self.session.add(
            WebAuthnChallenge(
                id=challenge_id, purpose=purpose, challenge=challenge, user_id=user_id, expires_at=expires_at
            )
        )
        return challenge_id

    async def _spend_challenge(self, challenge_id: UUID, purpose: str, bound: ColumnElement[bool]) -> bytes | None:
        """The challenge's bytes, deleted in the same statement (so it is spent once), if it is live and `bound`
        holds for it; None otherwise."""
        spent: bytes | None = await self.session.scalar(
            delete(WebAuthnChallenge)
            .where(
                WebAuthnChallenge.id == challenge_id,
                WebAuthnChallenge.purpose == purpose,
                WebAuthnChallenge.expires_at > func.now(),
                bound,
            )
            .returning(WebAuthnChallenge.challenge)
        )
        return spent

    async def _notify(self, user: User, notice: Notice, name: str, when: datetime) -> UUID:
        """Write the security e-mail `notice` about the passkey `name` to the user's address; returns its id."""
        body = notice.body.format(
            name=name, when=f"{when:%Y-%m-%d %H:%M} UTC", url=self.settings.public_url.rstrip("/")
        )
        return await Outbox(self.session).write(
            kind=notice.kind, recipient=user.email, subject=notice.subject, body=body, expires_at=when + NOTICE_TTL
        )


class Notice(NamedTuple):
    """A security e-mail: its outbox kind, subject, and body (with the passkey's `name`, `when` and the `url`)."""

    kind: str
    subject: str
    body: str


ADDED = Notice(
    "passkey_added",
    "A passkey was added to your account",
    "A passkey named “{name}” was added to your account on {when}. It can now sign in to your account.\n\n"
    "If this was not you, sign in at {url}, delete the passkey and change your password.\n",
)
REMOVED = Notice(
    "passkey_removed",
    "A passkey was removed from your account",
    "The passkey named “{name}” was removed from your account on {when}. It can no longer sign in.\n\n"
    "If this was not you, sign in at {url} and change your password.\n",
)


async def purge_expired_challenges(pool: asyncpg.Pool) -> int:
    """Delete the challenges that expired unanswered (for the scheduled purge); returns how many went."""
    status = await pool.execute("DELETE FROM webauthn_challenges WHERE expires_at <= now()")
    return int(status.rsplit(" ", 1)[-1])


def to_passkey_read(passkey: Passkey) -> PasskeyRead:
    """The wire form of a passkey (never its public key or counter)."""
    return PasskeyRead(
        id=passkey.id,
        name=passkey.name,
        credential_id=bytes_to_base64url(passkey.credential_id),
        aaguid=passkey.aaguid,
        transports=passkey.transports,
        backup_eligible=passkey.backup_eligible,
        backed_up=passkey.backed_up,
        created_at=passkey.created_at,
        last_used_at=passkey.last_used_at,
    )


def _no_passkey(passkey_id: UUID) -> NotFound:
    return NotFound(f"The user has no passkey with the id {passkey_id}.")


def _descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(
        id=passkey.credential_id, transports=[AuthenticatorTransport(t) for t in passkey.transports]
    )


def _registration_credential(data: PasskeyRegistration) -> RegistrationCredential:
    credential = data.credential
    return RegistrationCredential(
        id=credential.id,
        raw_id=_bytes(credential.raw_id, "credential.rawId"),
        response=AuthenticatorAttestationResponse(
            client_data_json=_bytes(credential.response.client_data_json, "credential.response.clientDataJSON"),
            attestation_object=_bytes(credential.response.attestation_object, "credential.response.attestationObject"),
        ),
        authenticator_attachment=_attachment(credential.authenticator_attachment),
        type=PublicKeyCredentialType.PUBLIC_KEY,
    )


def _attachment(value: str | None) -> AuthenticatorAttachment | None:
    return None if value is None else AuthenticatorAttachment(value)


def _bytes(value: str, field: str) -> bytes:
    """Unpadded base64url (its alphabet already checked by the schema) as bytes; 400 naming `field` otherwise."""
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCredential("is not base64url (no length of base64url leaves one character over)", field) from None


def _as_struct(value: dict[str, Any] | Response, kind: type[Response]) -> Response:
    """`value` as the wire type `kind`: 400 naming the field that breaks it (`credential.response.signature`)."""
    if isinstance(value, kind):
        return value
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message, at, path = str(exc).rpartition(" - at `$")
        raise InvalidCredential(
            message if at else str(exc), "credential" + path.rstrip("`") if at else "credential"
        ) from None


def _reason(exc: Exception) -> str:
    """What py_webauthn says is wrong, in one line (its messages end with a pointer to `__cause__`)."""
    reason = str(exc).split(". See __cause__", 1)[0].strip() or type(exc).__name__
    return reason[0].lower() + reason[1:]
