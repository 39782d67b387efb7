"""Password hashing: argon2id with OWASP's parameters, off the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP Password Storage Cheat Sheet: argon2id, 19 MiB of memory, 2 iterations, 1 lane.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)

# One hashing thread per worker process: with a worker per core every core can hash, and no more than
# one 19 MiB argon2 buffer per worker is ever in use (more threads only queue and hold more memory).
_hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")

# Verified when the account does not exist, so a login for an unknown e-mail costs as much as a wrong password.
_DUMMY_HASH = HASHER.hash("no account has this password")


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_hashing, HASHER.hash, password)


async def verify_password(hashed: str | None, password: str) -> bool:
    """Whether `password` matches `hashed`; a missing hash still costs one verification."""
    try:
        verified = await asyncio.get_running_loop().run_in_executor(
            _hashing, HASHER.verify, hashed or _DUMMY_HASH, password
        )
        return verified and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    """Whether `hashed` was made with other parameters than the current ones."""
    return HASHER.check_needs_rehash(hashed)
