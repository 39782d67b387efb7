"""What the health endpoints answer."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct


class Health(Struct, kw_only=True):
    status: Literal["ok"]
