"""Screening new passwords (accounts.core.passwords.password_weakness): the table is the rule's spec. The user is
Ada (ada@example.com, username ada.lovelace, Ada Lovelace) unless a row names another."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.core.passwords import SCREENED_LENGTH, password_weakness, screen_password, screened_part

ADA = {"email": "ada@example.com", "username": "ada.lovelace", "full_name": "Ada Lovelace"}
GRACE = {"email": "grace.hopper@navy.example", "username": "amazing", "full_name": "Grace Brewster Hopper"}
NO_NAME = {"email": "c@example.org", "username": "countess", "full_name": None}

COMMON = "is one of the most common passwords"
VARIATION = "is a variation of a common password"

TABLE: list[tuple[str, dict[str, Any], str | None]] = [
    # the most common passwords, and their usual variations
    ("password1", ADA, COMMON),
    ("iloveyou", ADA, COMMON),
    ("12345678", ADA, COMMON),
    ("P@ssw0rd", ADA, VARIATION),
    ("Password123!", ADA, VARIATION),
    ("drowssap", ADA, VARIATION),
    # keyboard walks, repeats, sequences, dates
    ("qwertyuiop", ADA, COMMON),
    ("zxcvbnm,", ADA, "is a keyboard pattern (like qwerty)"),
    ("aaaaaaaa", ADA, "repeats characters (like aaaa or abcabc)"),
    ("abcabcabc", ADA, "repeats characters (like aaaa or abcabc)"),
    ("abcdefgh", ADA, "is a sequence (like abcd or 9876)"),
    ("01/02/1990x", ADA, "is built on a date"),
    # built on the user's own details, as they are, with a digit, turned round, l33t or in another case
    ("ada.lovelace1", ADA, "contains your username"),
    ("AdaLovelace!", ADA, "contains your username"),
    ("lovelace1815", ADA, "contains your username"),
    ("ecalevol.ada", ADA, "contains your username"),
    ("example123", ADA, "contains your e-mail address"),
    ("GraceHopper1906", GRACE, "contains your name"),
    ("Hopper.Grace!", GRACE, "contains your name"),
    ("grace hopper", GRACE, "contains your name"),
    ("navy1234", GRACE, "contains your e-mail address"),
    ("c0unt3ss!", NO_NAME, "contains your username"),
    # the same passwords are fine for someone else
    ("ada.lovelace1", NO_NAME, None),
    ("GraceHopper1906", ADA, None),
    # fine: passphrases, random strings, and the passwords the rest of the suite uses
    ("correct horse battery staple", ADA, None),
    ("correct horse", ADA, None),
    ("battery staple", ADA, None),
    ("long enough", ADA, None),
    ("another long one", ADA, None),
    ("a new password entirely", ADA, None),
    ("Quince-Parapet-9083", ADA, None),
    ("Tr0ub4dor&3", ADA, None),
    ("xkqjzvbw", ADA, None),
]


IDS = [f"{password}-{user['username']}" for password, user, _ in TABLE]


@pytest.mark.parametrize(("password", "user", "weakness"), TABLE, ids=IDS)
def test_a_password_is_refused_when_it_is_common_or_built_on_the_users_details(
    password: str, user: dict[str, Any], weakness: str | None
) -> None:
    assert password_weakness(password, **user) == weakness


def test_only_the_first_characters_are_screened() -> None:
    weak_start = "a" * SCREENED_LENGTH
    assert password_weakness(weak_start + "Quince-Parapet-9083", **ADA) == "repeats characters (like aaaa or abcabc)"
    assert password_weakness("Quince-Parapet-9083 " + "a" * 100, **ADA) is None
    assert screened_part("x" * 128) == "x" * SCREENED_LENGTH


def test_many_kinds_of_substitution_characters_shorten_the_part_screened() -> None:
    """Each extra way to read `@ 4 ( { [ < 1 | 7 ...` as letters is another pass of zxcvbn over the whole part."""
    symbols = "@4({[<3691!|7$5+%280" * 6
    part = screened_part(symbols)
    assert 12 <= len(part) < SCREENED_LENGTH
    assert symbols.startswith(part)
    assert screened_part("1234567890" * 4) == ("1234567890" * 4)[:SCREENED_LENGTH]  # digits read in few ways


def test_the_user_inputs_of_one_call_are_not_kept_for_the_next() -> None:
    """zxcvbn keeps a call's user inputs in a module global; each call passes its own."""
    assert password_weakness("ada.lovelace1", **ADA) == "contains your username"
    assert password_weakness("ada.lovelace1", email="bob@example.org", username="bob") is None


async def test_screening_off_the_event_loop_gives_the_same_answer() -> None:
    assert await screen_password("password1", **ADA) == COMMON
    assert await screen_password("correct horse battery staple", **ADA) is None
