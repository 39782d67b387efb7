"""Which Idempotency-Key values are valid (the pattern the OpenAPI document publishes), and whose key a request uses."""

from __future__ import annotations

import re
import uuid
from typing import cast

import pytest
from litestar.types import Scope

from accounts.core.http.idempotency import KEY_PATTERN, caller_of
from accounts.core.security import Principal

KEY = re.compile(KEY_PATTERN)
VISIBLE = [chr(c) for c in range(0x21, 0x7F)]


@pytest.mark.parametrize("character", VISIBLE)
def test_every_visible_ascii_character_is_a_valid_key(character: str) -> None:
    assert KEY.fullmatch(character)
    assert KEY.fullmatch(character * 255)


@pytest.mark.parametrize("code", [*range(0x00, 0x21), *range(0x7F, 0x100), 0x2028, 0x1F600])
def test_a_key_with_any_other_character_is_invalid(code: int) -> None:
    assert not KEY.fullmatch(chr(code))
    assert not KEY.fullmatch(f"abc{chr(code)}def")


def test_a_key_is_1_to_255_characters() -> None:
    assert not KEY.fullmatch("")
    assert KEY.fullmatch("k" * 255)
    assert not KEY.fullmatch("k" * 256)


def scope_of(user: Principal | None) -> Scope:
    return cast("Scope", {} if user is None else {"user": user})


def test_callers_are_anonymous_a_key_or_a_user() -> None:
    key_id, user_id = uuid.uuid4(), uuid.uuid4()
    assert caller_of(scope_of(None)) == "anonymous"
    assert caller_of(scope_of(Principal(api_key_id=key_id))) == f"key:{key_id}"
    assert caller_of(scope_of(Principal(user_id=user_id, is_admin=True))) == f"user:{user_id}"


def test_a_user_and_a_key_with_one_uuid_are_different_callers() -> None:
    same = uuid.uuid4()
    as_user = caller_of(scope_of(Principal(user_id=same)))
    as_key = caller_of(scope_of(Principal(api_key_id=same)))
    assert as_user != as_key
    assert max(len(as_user), len(as_key)) <= 64  # the width of idempotency_keys.caller
