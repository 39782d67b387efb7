"""Write load for the fault tests: clients creating users while a test breaks something, and the tally of what
they were told against what the `users` table kept.

The rules under test (docs: DESIGN.md, "Rules that carry weight"): a 2xx on a write means it is committed; a
dropped connection or an unreachable database is a 503 problem with `Retry-After`, never a 409 or a 2xx;
nothing is a 500.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

import httpx

from tests.integration.auth.support import USERS, sql
from tests.problems import assert_problem

REQUEST_TIMEOUT = 10.0
"""Seconds a client waits for an answer; after that the request counts as unanswered."""
PAUSE_AFTER_REFUSAL = 0.05
"""Seconds a client waits after a write that was not acknowledged: an outage is no busy loop on shared cores."""
RETRIES = 2
"""Times an idempotent client sends a write again, with the same key and body, after a 503 or no answer."""
EXAMPLES = 5
"""Answers quoted per broken rule in a failure message."""


@dataclass(frozen=True)
class Answer:
    """What one request to create a user was told."""

    email: str
    status: int | None
    """None: no HTTP answer (the connection broke or the client timed out)."""
    sent_at: float
    """`time.monotonic()` when it was sent."""
    well_formed_503: bool
    """A 503 problem document with `Retry-After`, as a client can act on."""
    detail: str
    """The problem's type and detail, or the transport error: for failure messages."""


def is_well_formed_503(response: httpx.Response) -> bool:
    try:
        assert_problem(response, 503)
    except (AssertionError, ValueError, KeyError):  # ValueError: not JSON; KeyError: no content-type
        return False
    return "retry-after" in response.headers


def describe(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:200]
    return f"{problem.get('type')}: {problem.get('detail')}" if isinstance(problem, dict) else response.text[:200]


class UserWrites:
    """`async with UserWrites(base_url, api_key, clients=8, idempotent=3) as writes:` `clients` concurrent clients
    create users with unique e-mails and usernames until the block ends; every answer is in `writes.answers`.

    The first `idempotent` clients send an `Idempotency-Key` with each user and, as a careful client does,
    send it again with the same key after a 503 or no answer: the retry must never create a second user or
    replay an answer for work that was not committed."""

    def __init__(self, base_url: str, api_key: str, *, clients: int, idempotent: int) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.clients = clients
        self.idempotent = idempotent
        self.answers: list[Answer] = []
        self._run = uuid.uuid4().hex[:8]  # names stay unique across runs on one database
        self._stopping = asyncio.Event()
        self._running: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> UserWrites:
        self._running = [
            asyncio.create_task(self._client(number, idempotent=number < self.idempotent))
            for number in range(self.clients)
        ]
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _error: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        self._stopping.set()  # each client ends after the request it is waiting for (at most REQUEST_TIMEOUT)
        try:
            await asyncio.gather(*self._running)
        finally:
            for client in self._running:
                client.cancel()

    def first_acknowledged_since(self, moment: float) -> float | None:
        """When the first write sent at or after `moment` (monotonic) was sent, if one was acknowledged yet."""
        return min((a.sent_at for a in self.answers if a.status == 201 and a.sent_at >= moment), default=None)

    async def _client(self, number: int, *, idempotent: bool) -> None:
        headers = {"X-API-Key": self.api_key}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
            for sequence in itertools.count():
                if self._stopping.is_set():
                    return
                name = f"w{self._run}c{number}n{sequence}"
                user = {"email": f"{name}@example.com", "username": name}
                key = {"Idempotency-Key": str(uuid.uuid4())} if idempotent else {}
                for _ in range(1 + (RETRIES if idempotent else 0)):
                    answer = await self._create(client, user, key)
                    if answer.status == 201:
                        break
                    await asyncio.sleep(PAUSE_AFTER_REFUSAL)
                    if answer.status not in (503, None):
                        break

    async def _create(self, client: httpx.AsyncClient, user: dict[str, str], headers: dict[str, str]) -> Answer:
        sent_at = time.monotonic()
        try:
            response = await client.post(USERS, json=user, headers=headers)
        except httpx.TransportError as exc:
            answer = Answer(user["email"], None, sent_at, well_formed_503=False, detail=repr(exc))
        else:
            answer = Answer(
                user["email"],
                response.status_code,
                sent_at,
                well_formed_503=response.status_code == 503 and is_well_formed_503(response),
                detail="" if response.status_code == 201 else describe(response),
            )
        self.answers.append(answer)
        return answer


async def kept_emails(database_url: str) -> frozenset[str]:
    """Every e-mail in the `users` table, read straight from the database."""
    return frozenset(row["email"] for row in await sql(database_url, "SELECT email FROM users"))


class Tally:
    """The answers of a write load against the e-mails the `users` table kept afterwards."""

    def __init__(self, answers: Iterable[Answer], kept: frozenset[str]) -> None:
        self.answers = list(answers)
        self.acknowledged = {a.email for a in self.answers if a.status == 201}
        self.lost = sorted(self.acknowledged - kept)
        # Each user is new, so a conflict is only true if an earlier attempt at the same user was committed.
        self.false_conflicts = [a for a in self.answers if a.status == 409 and a.email not in kept]
        self.server_errors = [a for a in self.answers if a.status is not None and a.status >= 500 and a.status != 503]
        self.unavailable = [a for a in self.answers if a.status == 503]
        self.malformed_unavailable = [a for a in self.unavailable if not a.well_formed_503]
        self.unanswered = [a for a in self.answers if a.status is None]

    def figures(self) -> dict[str, int]:
        return {
            "requests": len(self.answers),
            "acknowledged": len(self.acknowledged),
            "lost": len(self.lost),
            "false 409s": len(self.false_conflicts),
            "5xx other than 503": len(self.server_errors),
            "503s": len(self.unavailable),
            "503s without problem+json or Retry-After": len(self.malformed_unavailable),
            "unanswered": len(self.unanswered),
        }

    def broken_rules(self) -> dict[str, int]:
        """How often each rule broke; all zero when the service kept its promises."""
        return {
            "acknowledged writes lost": len(self.lost),
            "409s for a user that is not in the table": len(self.false_conflicts),
            "5xx other than 503": len(self.server_errors),
            "503s without problem+json or Retry-After": len(self.malformed_unavailable),
        }

    def examples(self) -> str:
        """A few answers of each broken rule, for the failure message."""
        quoted = {
            "lost (answered 201, not in the table)": self.lost[:EXAMPLES],
            "false 409s": [f"{a.email} {a.detail}" for a in self.false_conflicts[:EXAMPLES]],
            "5xx other than 503": [f"{a.status} {a.detail}" for a in self.server_errors[:EXAMPLES]],
            "malformed 503s": [a.detail for a in self.malformed_unavailable[:EXAMPLES]],
        }
        return "\n".join(f"{rule}: {examples}" for rule, examples in quoted.items() if examples)


NO_BROKEN_RULES = dict.fromkeys(Tally([], frozenset()).broken_rules(), 0)
