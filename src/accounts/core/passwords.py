"""Passwords: a new one is screened (refused when it is common or built on the user's own details), then every one is
hashed with argon2id with OWASP's parameters; both off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cache, partial
from itertools import permutations
from typing import TYPE_CHECKING

import httpx
import nacl.exceptions
import nacl.pwhash
import structlog
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from accounts.core.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from zxcvbn.matching import _Match

    from accounts.config import Settings

# OWASP Password Storage Cheat Sheet: argon2id, 19 MiB of memory, 2 iterations, 1 lane.
TIME_COST = 2
MEMORY_KIB = 19 * 1024
HASHER = PasswordHasher(
    time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)
"""argon2-cffi, for reading a hash's parameters and verifying the hashes libsodium cannot (argon2d, long outputs)."""

# One hashing thread per worker process: with a worker per core every core can hash, and no more than
# one 19 MiB argon2 buffer per worker is ever in use (more threads only queue and hold more memory).
_hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")
log = structlog.get_logger("accounts.core.passwords")


# Hashing and verifying are libsodium's (PyNaCl): the same argon2id, the same PHC string as argon2-cffi's, but its
# memory filling picks AVX2 or AVX-512 at run time where argon2-cffi's wheels use SSE2 (11 against 23 ms a
# verification here); its 19 MiB buffer is mapped and unmapped each time, so an idle worker does not keep it.
def _hash(password: str) -> str:
    return nacl.pwhash.argon2id.str(password.encode(), opslimit=TIME_COST, memlimit=MEMORY_KIB * 1024).decode()


_SODIUM_READS = ("$argon2id$", "$argon2i$")  # libsodium verifies both with its argon2id call; argon2d is argon2-cffi's


def _verify(hashed: str, password: str) -> bool:
    if hashed.startswith(_SODIUM_READS):
        try:
            return nacl.pwhash.argon2id.verify(hashed.encode(), password.encode())
        except nacl.exceptions.InvalidkeyError:
            return False
        except nacl.exceptions.ValueError:
            pass  # an output longer than libsodium reads (an imported hash): argon2-cffi's turn
    try:
        return HASHER.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


# Verified when the account does not exist, so a login for an unknown e-mail costs as much as a wrong password.
_DUMMY_HASH = _hash("no account has this password")


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_hashing, _hash, password)


async def verify_password(hashed: str | None, password: str) -> bool:
    """Whether `password` matches `hashed`; a missing hash still costs one verification."""
    verified = await asyncio.get_running_loop().run_in_executor(_hashing, _verify, hashed or _DUMMY_HASH, password)
    return verified and hashed is not None


def needs_rehash(hashed: str) -> bool:
    """Whether `hashed` was made with other parameters than the current ones."""
    return HASHER.check_needs_rehash(hashed)


# --- screening new passwords (NIST SP 800-63B section 3.1.1.2) -------------------------------------------------

MIN_SCORE = 2
"""A new password is refused when zxcvbn scores it 0 or 1: fewer than 10^6 guesses for an attacker who tries the
common passwords, words, names, keyboard patterns, repeats, sequences, dates and the user's own details first (zxcvbn's
2 resists an unthrottled online attack, 1 at most a throttled one)."""

SCREENED_LENGTH = 32
"""zxcvbn sees a password's first 32 characters at most (`screened_part`): its matching grows with the square of the
length (a 100-character password took 360 ms), and 32 characters that are hard to guess stay so whatever follows."""

MAX_READINGS = 16
"""zxcvbn reads the part it sees once for each way of taking its substitution characters as letters (`@` and `4` for
a, `1` `!` `|` for i, ...): past its first 12 characters (always seen, 25 ms at worst), the part stops before a
character that would make more ways than this (a 100-character password of twenty different ones took 5 s)."""

# One thread, so calls never overlap: zxcvbn keeps a call's user inputs in a module global (dwolfhub/zxcvbn-python
# issues 16 and 84). Its pure-Python matching holds the GIL, but the event loop still runs between its time slices.
_screening = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zxcvbn")
_SEPARATORS = re.compile(r"[\W_]+")
_JOINTS = ("", " ", ".", "-", "_")
_ALWAYS_SCREENED = 12
_MIN_INPUT_LENGTH = 3  # shorter parts of a name are in too many passwords to say anything


# zxcvbn is imported on a worker's first screening, not at start: its frequency lists take ~11 MB of a worker's
# ~150 MB, which a worker that only logs people in never needs; the import takes ~60 ms, in the screening thread.
@cache
def _letters_of() -> dict[str, list[str]]:
    """Each substitution character zxcvbn knows, and the letters it may stand for."""
    from zxcvbn.matching import L33T_TABLE  # noqa: PLC0415 - loads zxcvbn's dictionaries (see above)

    return {
        character: [letter for letter, characters in L33T_TABLE.items() if character in characters]
        for characters in L33T_TABLE.values()
        for character in characters
    }


def password_weakness(password: str, *, email: str, username: str, full_name: str | None = None) -> str | None:
    """Why `password` is too easy to guess for the user with these details, in words that follow "the password"
    ("is one of the most common passwords", "contains your username"); None when it is not (MIN_SCORE)."""
    from zxcvbn import zxcvbn  # noqa: PLC0415 - on first use (see _letters_of)

    own_words = _own_words(email, username, full_name)
    screened = screened_part(password)
    # Never an empty list: zxcvbn would reuse the user inputs of the call before (issue 84).
    result = zxcvbn(screened, user_inputs=list(own_words) or [""], max_length=SCREENED_LENGTH)
    if result["score"] >= MIN_SCORE:
        return None
    sequence = result["sequence"]
    if own := next((match for match in sequence if match.get("dictionary_name") == "user_inputs"), None):
        return f"contains your {own_words[own.get('matched_word', '')]}"
    return _reason(max(sequence, key=lambda match: len(match["token"])), alone=len(sequence) == 1)


def screened_part(password: str) -> str:
    """The start of `password` that zxcvbn sees: SCREENED_LENGTH characters, fewer if those past the first 12 would
    make substitution characters that can be read as letters in more than MAX_READINGS ways."""
    candidates: dict[str, set[str]] = {}  # letter -> the characters seen so far that may stand for it
    letters_of = _letters_of()
    for end, character in enumerate(password[:SCREENED_LENGTH]):
        for letter in letters_of.get(character, ()):
            candidates.setdefault(letter, set()).add(character)
        if end >= _ALWAYS_SCREENED and math.prod(len(characters) for characters in candidates.values()) > MAX_READINGS:
            return password[:end]
    return password[:SCREENED_LENGTH]


def _own_words(email: str, username: str, full_name: str | None) -> dict[str, str]:
    """The user's details as zxcvbn's user inputs, each with what it is: every value lower-cased, run together, cut
    into its parts, and two of its first parts joined as people join them (`gracehopper`, `hopper.grace`); an e-mail
    address also its local part and its domain without the top level. (zxcvbn finds `grace` + ` ` + `hopper` only
    as three parts, which it counts as hard to guess.)"""
    local, _, domain = email.lower().rpartition("@")
    values = [
        ("username", username),
        ("name", full_name or ""),
        ("e-mail address", email),
        ("e-mail address", local),
        ("e-mail address", domain.rpartition(".")[0]),
    ]
    words: dict[str, str] = {}
    for what, value in values:
        parts = [part for part in _SEPARATORS.split(value.lower()) if part]
        pairs = [f"{first}{joint}{second}" for first, second in permutations(parts[:4], 2) for joint in _JOINTS]
        for word in (value.lower(), "".join(parts), *parts, *pairs):
            if len(word) >= _MIN_INPUT_LENGTH:
                words.setdefault(word, what)
    return words


def _reason(match: _Match, *, alone: bool) -> str:
    """What makes a weak password weak, told from its longest part."""
    pattern = match["pattern"]
    if pattern == "dictionary":
        dictionary = match.get("dictionary_name")
        if dictionary == "passwords":
            plain = alone and not match.get("l33t") and not match.get("reversed")
            return "is one of the most common passwords" if plain else "is a variation of a common password"
        if dictionary in {"male_names", "female_names", "surnames"}:
            return "is built on a common name"
        return "is built on a common word"
    return {
        "spatial": "is a keyboard pattern (like qwerty)",
        "repeat": "repeats characters (like aaaa or abcabc)",
        "sequence": "is a sequence (like abcd or 9876)",
        "regex": "is built on a year",
        "date": "is built on a date",
    }.get(pattern, "is too easy to guess")


async def screen_password(password: str, *, email: str, username: str, full_name: str | None = None) -> str | None:
    """`password_weakness`, off the event loop."""
    screening = partial(password_weakness, password, email=email, username=username, full_name=full_name)
    return await asyncio.get_running_loop().run_in_executor(_screening, screening)


class BreachedPasswords:
    """A Have I Been Pwned-compatible range API, asked with k-anonymity: the first 5 hex digits of a password's SHA-1
    go out, the other 35 of every breached password sharing them come back (`SUFFIX:COUNT` lines, padded with
    zero-count ones so the answer's size says nothing), and the match is made here."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"Add-Padding": "true", "User-Agent": "accounts"}
        )

    async def times_seen(self, password: str) -> int | None:
        """In how many breaches the API has seen `password` (0: none); None when it did not answer in time."""
        digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
        try:
            response = (await self.client.get(self.base_url + digest[:5])).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("the breached-password API did not answer; screened locally only", error=repr(exc))
            return None
        for line in response.text.splitlines():
            suffix, _, count = line.partition(":")
            if suffix.strip().upper() == digest[5:]:
                return int(count) if count.strip().isdigit() else 1
        return 0

    async def close(self) -> None:
        await self.client.aclose()


_breaches: BreachedPasswords | None = None


@asynccontextmanager
async def breach_checks(settings: Settings) -> AsyncIterator[None]:
    """While the block runs (an API process's life), new passwords are also looked up in PASSWORD_BREACH_API."""
    global _breaches  # noqa: PLW0603 - one checker for the process, read by every password change
    if settings.password_breach_api is None:
        yield
        return
    _breaches = BreachedPasswords(settings.password_breach_api, settings.password_breach_timeout)
    try:
        yield
    finally:
        breaches, _breaches = _breaches, None
        await breaches.close()


async def refuse_weak_password(
    field: str, password: str, *, email: str, username: str, full_name: str | None = None
) -> None:
    """InvalidInput naming `field` if `password` is too easy to guess for this user, or (PASSWORD_BREACH_API) known
    from a breach; call it before anything is hashed or written."""
    weakness = await screen_password(password, email=email, username=username, full_name=full_name)
    if weakness is None and _breaches is not None and (seen := await _breaches.times_seen(password)):
        weakness = f"is in a list of passwords exposed in data breaches (seen {seen:,} times)"
    if weakness is not None:
        detail = f"The {field.replace('_', ' ')} {weakness}: choose one that is harder to guess."
        raise InvalidInput(detail, errors=[FieldError(field=field, message=weakness)])
