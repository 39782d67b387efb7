"""The served OpenAPI document equals the committed snapshot, so every contract change shows up in review.

After an intended change, `make openapi` rewrites tests/contract/openapi.json; commit it with the change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

SNAPSHOT = Path(__file__).with_name("openapi.json")


def canonical(document: object) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


async def test_served_document_matches_the_snapshot(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    served = canonical(response.json())
    if os.environ.get("UPDATE_OPENAPI_SNAPSHOT") == "1":
        SNAPSHOT.write_text(served)
    assert SNAPSHOT.exists(), "no snapshot: run `make openapi`"
    assert SNAPSHOT.read_text() == served, "the OpenAPI document changed: review it, then run `make openapi`"
