"""Password hashing: argon2id with OWASP's parameters, off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP Password Storage Cheat Sheet: argon2id, 19 MiB of memory, 2 iterations, 1 lane.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)

# Verified when the account does not exist, so a login for an unknown e-mail costs as much as a wrong password.
_DUMMY_HASH = HASHER.hash("no account has this password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(HASHER.hash, password)


async def verify_password(hashed: str | None, password: str) -> bool:
    """Whether `password` matches `hashed`; a missing hash still costs one verification."""
    try:
        return await asyncio.to_thread(HASHER.verify, hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    """Whether `hashed` was made with other parameters than the current ones."""
    return HASHER.check_needs_rehash(hashed)
