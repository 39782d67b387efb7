"""Polyfactory factories for request bodies: valid, unique by default, overridable per test."""

from __future__ import annotations

import itertools

from polyfactory import Use
from polyfactory.factories.msgspec_factory import MsgspecFactory

from accounts.users.schemas import UserCreate

_serial = itertools.count(1)


def _unique_name() -> str:
    return f"user{next(_serial):06d}"


class UserCreateFactory(MsgspecFactory[UserCreate]):
    __check_model__ = False

    username = Use(_unique_name)
    email = Use(lambda: f"{_unique_name()}@example.com")
    full_name = Use(MsgspecFactory.__faker__.name)
    bio = Use(MsgspecFactory.__faker__.sentence)
