"""A software WebAuthn authenticator and the browser around it, written from the WebAuthn Level 3 specification
with `cryptography` and `cbor2` (none of the service's code), to drive passkey ceremonies in tests.

soft-webauthn (PyPI) does not fit py_webauthn 3: its credential `id` is padded base64 (py_webauthn refuses an `id`
that is not the unpadded base64url of `rawId`), it never sets the user-verified flag (a passwordless sign-in requires
it), holds one credential, has no backup flags, answers in bytes rather than the JSON forms browsers send, and only
makes `none` attestations. This one:

    authenticator = SoftAuthenticator(origin="http://127.0.0.1:8000")
    credential = authenticator.create(options)           # options: PublicKeyCredentialCreationOptionsJSON
    assertion = authenticator.get(request_options)       # options: PublicKeyCredentialRequestOptionsJSON

- `create` makes an ES256 key pair for `options["rp"]["id"]` and `options["user"]["id"]` (a discoverable credential:
  the user handle is kept and returned by `get`), refuses (CredentialExcluded) when it holds one of
  `excludeCredentials`, and answers a RegistrationResponseJSON with a `packed` self-attestation (or `none`, with
  `attestation="none"`); `reuse=` answers with a credential it already holds.
- `get` picks the credential: one of `allowCredentials` it holds, or (empty list: a usernameless sign-in) the newest
  discoverable one for the relying party, or `credential_id=` to choose; it increments the credential's signature
  counter (`sign_count=` sets the value to report instead: a clone reports an old one) and answers an
  AuthenticationResponseJSON with `userHandle`.
- `origin=` on either call stands for a page of another origin; `user_verified=False` on the authenticator stands for
  one that only tests presence (a security key without a PIN); `backup_eligible`/`backed_up` set the BE/BS flags;
  `counter=False` for one that keeps no counter (always 0, as synced passkeys do).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40  # authenticator data flags (WebAuthn section 6.1)
ES256 = -7


class CredentialExcluded(Exception):
    """The authenticator holds a credential the options exclude (the browser's InvalidStateError)."""


class NoCredential(Exception):
    """The authenticator holds no credential the options allow."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    """A credential the authenticator holds: its private key never leaves it."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        numbers = self.private_key.public_key().public_numbers()
        # RFC 9053 section 7.1.1: kty EC2 (2), alg ES256, crv P-256 (1), x, y.
        return cbor2.dumps(
            {1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass
class SoftAuthenticator:
    """A platform authenticator holding discoverable ES256 credentials, and the browser that calls it."""

    origin: str
    attestation: Literal["packed", "none"] = "packed"
    user_verified: bool = True
    backup_eligible: bool = True
    backed_up: bool = True
    counter: bool = True
    aaguid: bytes = bytes.fromhex("ea9b8d664d011d213ce4b6b48cb575d4")
    transports: tuple[str, ...] = ("internal", "hybrid")
    credentials: dict[bytes, Credential] = field(default_factory=dict)

    def create(
        self, options: dict[str, Any], *, origin: str | None = None, reuse: bytes | None = None
    ) -> dict[str, Any]:
        """`navigator.credentials.create({publicKey: options})`, answered as `credential.toJSON()`; `reuse=` the id
        of a credential it holds to answer with that one again, as a broken authenticator might."""
        rp_id = options["rp"]["id"]
        excluded = {from_b64url(descriptor["id"]) for descriptor in options.get("excludeCredentials", [])}
        if excluded & {c.credential_id for c in self.credentials.values() if c.rp_id == rp_id}:
            raise CredentialExcluded
        if not any(param["alg"] == ES256 for param in options["pubKeyCredParams"]):
            raise ValueError("the options do not accept ES256")
        credential = (
            self.credentials[reuse]
            if reuse is not None
            else Credential(
                credential_id=os.urandom(32),
                private_key=ec.generate_private_key(ec.SECP256R1()),
                rp_id=rp_id,
                user_handle=from_b64url(options["user"]["id"]),
            )
        )
        self.credentials[credential.credential_id] = credential
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attested = self.aaguid + struct.pack(">H", len(credential.credential_id)) + credential.credential_id
        auth_data = self._authenticator_data(rp_id, AT, 0) + attested + credential.cose_public_key()
        statement: dict[str, Any] = {}
        if self.attestation == "packed":  # self attestation: signed by the credential's own key (section 8.2)
            statement = {"alg": ES256, "sig": credential.sign(auth_data + hashlib.sha256(client_data).digest())}
        attestation_object = cbor2.dumps({"fmt": self.attestation, "attStmt": statement, "authData": auth_data})
        public_key = credential.private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        response = {
            "clientDataJSON": b64url(client_data),
            "attestationObject": b64url(attestation_object),
            "authenticatorData": b64url(auth_data),
            "publicKey": b64url(public_key),
            "publicKeyAlgorithm": ES256,
            "transports": list(self.transports),
        }
        return _as_json(credential, response, extensions={"credProps": {"rk": True}})

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        credential_id: bytes | None = None,
        sign_count: int | None = None,
    ) -> dict[str, Any]:
        """`navigator.credentials.get({publicKey: options})`, answered as `credential.toJSON()`."""
        credential = self._choose(options, credential_id)
        if sign_count is not None:
            credential.sign_count = sign_count
        elif self.counter:
            credential.sign_count += 1
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        auth_data = self._authenticator_data(credential.rp_id, 0, credential.sign_count)
        response = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(credential.sign(auth_data + hashlib.sha256(client_data).digest())),
            "userHandle": b64url(credential.user_handle),
        }
        return _as_json(credential, response, extensions={})

    def credential_ids(self) -> list[bytes]:
        """The ids of the credentials it holds, oldest first."""
        return list(self.credentials)

    def clone(self) -> SoftAuthenticator:
        """A copy holding the same keys and counters, which from now on count on their own (a cloned authenticator)."""
        copies = {key: Credential(**vars(credential)) for key, credential in self.credentials.items()}
        return SoftAuthenticator(**{**vars(self), "credentials": copies})

    def _choose(self, options: dict[str, Any], credential_id: bytes | None) -> Credential:
        rp_id = options["rpId"]
        held = [c for c in self.credentials.values() if c.rp_id == rp_id]
        allowed = {from_b64url(descriptor["id"]) for descriptor in options.get("allowCredentials", [])}
        candidates = [c for c in held if not allowed or c.credential_id in allowed]
        if credential_id is not None:
            candidates = [c for c in candidates if c.credential_id == credential_id]
        if not candidates:
            raise NoCredential
        return candidates[-1]

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        # Section 5.8.1: the JSON the browser hashes; compact, in this member order, as browsers write it.
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin, "crossOrigin": False}
        return json.dumps(data, separators=(",", ":")).encode()

    def _authenticator_data(self, rp_id: str, extra_flags: int, sign_count: int) -> bytes:
        flags = UP | extra_flags | (UV if self.user_verified else 0)
        flags |= (BE if self.backup_eligible else 0) | (BS if self.backed_up else 0)
        return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)


def _as_json(credential: Credential, response: dict[str, Any], *, extensions: dict[str, Any]) -> dict[str, Any]:
    """A PublicKeyCredential as `toJSON()` gives it (WebAuthn section 5.1.8)."""
    return {
        "id": b64url(credential.credential_id),
        "rawId": b64url(credential.credential_id),
        "type": "public-key",
        "response": response,
        "authenticatorAttachment": "platform",
        "clientExtensionResults": extensions,
    }
