"""Password hashes (accounts.core.passwords): PHC strings another argon2id implementation reads and writes alike,
verification off the event loop, and zxcvbn's dictionaries loaded only by a worker that screens a password."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from argon2 import PasswordHasher, Type
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from accounts.core.passwords import hash_password, needs_rehash, verify_password

PASSWORD = "correct horse battery staple"


def _openssl_hash(password: str) -> str:
    """A PHC string made by OpenSSL's argon2id (through cryptography) with the OWASP parameters we use."""
    kdf = Argon2id(salt=os.urandom(16), length=32, iterations=2, lanes=1, memory_cost=19 * 1024)
    return kdf.derive_phc_encoded(password.encode())


async def test_our_hashes_and_another_implementations_verify_alike() -> None:
    ours = await hash_password(PASSWORD)
    assert ours.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    Argon2id.verify_phc_encoded(PASSWORD.encode(), ours)  # raises InvalidKey if OpenSSL disagrees
    theirs = _openssl_hash(PASSWORD)
    assert await verify_password(theirs, PASSWORD)
    assert not await verify_password(theirs, PASSWORD + "!")
    assert not needs_rehash(ours)
    assert not needs_rehash(theirs)
    try:
        Argon2id.verify_phc_encoded(b"another password", ours)
    except InvalidKey:
        pass
    else:
        raise AssertionError("OpenSSL accepted a wrong password for our hash")


@pytest.mark.parametrize(
    "made_elsewhere",
    [
        PasswordHasher(parallelism=4),  # argon2-cffi's defaults: 64 MiB, 3 passes, 4 lanes
        PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.I),
        PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.D),  # libsodium has no argon2d
        PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, hash_len=64),  # longer than libsodium reads
    ],
    ids=["argon2id-4-lanes", "argon2i", "argon2d", "64-byte-output"],
)
async def test_an_imported_hash_with_other_parameters_verifies_and_is_rehashed(made_elsewhere: PasswordHasher) -> None:
    hashed = made_elsewhere.hash(PASSWORD)
    assert await verify_password(hashed, PASSWORD)
    assert not await verify_password(hashed, PASSWORD + "!")
    assert needs_rehash(hashed)


async def test_a_missing_or_malformed_hash_never_verifies() -> None:
    assert not await verify_password(None, PASSWORD)
    assert not await verify_password("$argon2id$v=19$m=19456,t=2,p=1$not-base64$", PASSWORD)
    assert not await verify_password("plain text", PASSWORD)


async def test_the_event_loop_runs_while_a_password_is_verified() -> None:
    """Had the hash run on the loop, the task would have finished in its first step, before any tick."""
    hashed = _openssl_hash(PASSWORD)
    verifying = asyncio.create_task(verify_password(hashed, PASSWORD))
    await asyncio.sleep(0)  # the task hands its hash to the hashing thread
    ticks = 0
    while not verifying.done():
        ticks += 1
        await asyncio.sleep(0)
    assert ticks > 1
    assert await verifying


def test_zxcvbn_is_loaded_by_the_first_screening_only() -> None:
    """Its dictionaries are ~11 MB of a worker: one that hashes and verifies passwords but screens none never has
    them."""
    script = (
        "import asyncio, sys\n"
        "from accounts.core import passwords\n"
        "hashed = asyncio.run(passwords.hash_password('x'))\n"
        "assert asyncio.run(passwords.verify_password(hashed, 'x'))\n"
        "print('zxcvbn' in sys.modules)\n"
        "print(passwords.password_weakness('password1', email='ada@example.com', username='ada'))\n"
        "print('zxcvbn' in sys.modules)\n"
    )
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)  # noqa: S603
    assert answer.stdout.splitlines() == ["False", "is one of the most common passwords", "True"]
