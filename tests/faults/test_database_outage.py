"""A database outage under write load: the PostgreSQL under `accounts serve` stops (`pg_ctl stop -m fast`) for
three seconds, then starts again. While it is down, everything that needs it answers a 503 problem with
`Retry-After` within a second, and liveness stays 200; once it is back, readiness and writes recover within
seconds, and every write acknowledged before, during or after the outage is in the table.

The cluster is the test's own (initdb in a scratch folder, on a free port): the shared server is never stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal

import httpx
import pytest

from tests.clusters import Cluster, initdb, postgres_server, server_tools
from tests.database import database_url_on, execute, insert_api_key, migrate
from tests.faults.load import NO_BROKEN_RULES, Tally, UserWrites, is_well_formed_503, kept_emails
from tests.faults.support import RecordFigures, Serve, seconds_until
from tests.integration.auth.support import PASSWORD
from tests.integration.scaleout.processes import scratch_dir
from tests.integration.scaleout.support import SignedUp, sign_up
from tests.server import free_port

WRITERS = 3
IDEMPOTENT_WRITERS = 1
WARM_UP = 1.0
"""Seconds of load on the healthy database before it stops."""
DOWN_SECONDS = 3.0
ANSWER_WITHIN = 1.0
"""Seconds a call may take to be refused while the database is down."""
BACK_WITHIN = 5.0
"""Seconds after the restart by which readiness and writes must succeed again."""
RECOVERY_LIMIT = 15.0
"""Seconds the test waits for recovery before it gives up (the figures then say which never came back)."""
AFTER = 1.0
"""Seconds of load after writes came back."""
LIVENESS_EVERY = 0.2
PROBE_TIMEOUT = 5.0
CASE_SECONDS = 60.0
"""The whole case, so that a hang anywhere fails it instead of using up CI's budget."""

Caller = Literal["api key", "user", "anyone"]


@dataclass(frozen=True)
class Endpoint:
    """A call that cannot be answered without the database. In `path`, `{id}` is the user signed up before the
    outage; in the bodies, `{name}` is new for each call and `{email}` is that user's address."""

    method: str
    path: str
    caller: Caller
    json: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


NEEDS_DATABASE = (
    Endpoint("POST", "/api/v1/users", "api key", json={"email": "{name}@example.com", "username": "{name}"}),
    Endpoint("GET", "/api/v1/users", "api key"),
    Endpoint("GET", "/api/v1/users/{id}", "api key"),
    Endpoint("PATCH", "/api/v1/users/{id}", "api key", json={"full_name": "{name}"}),
    Endpoint("GET", "/api/v1/users/me", "user"),
    Endpoint(
        "POST",
        "/api/v1/auth/token",
        "anyone",
        form={"grant_type": "password", "username": "{email}", "password": PASSWORD},
    ),
    Endpoint(
        "POST",
        "/api/v1/auth/register",
        "anyone",
        json={"email": "{name}@example.com", "username": "{name}", "password": PASSWORD},
    ),
    Endpoint("GET", "/health/ready", "anyone"),
)


@dataclass(frozen=True)
class Probe:
    """How one call was answered while the database was down."""

    endpoint: str
    status: int | None
    seconds: float
    well_formed_503: bool

    @property
    def as_required(self) -> bool:
        return self.status == 503 and self.well_formed_503 and self.seconds < ANSWER_WITHIN


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of the test's own, running; stopped at once and deleted afterwards."""
    bin_dir = server_tools()
    with scratch_dir("accounts-outage-") as root:
        initdb(bin_dir, root / "data")
        with postgres_server(bin_dir, root / "data", free_port()) as cluster:
            yield cluster


@pytest.fixture
async def outage_database(cluster: Cluster) -> str:
    await execute(cluster.url, "CREATE DATABASE accounts")
    url = database_url_on(cluster.url, "accounts")
    await migrate(url)
    return url


@pytest.fixture
def base_url(outage_database: str, serve: Serve) -> Iterator[str]:
    with serve(DATABASE_URL=outage_database) as url:  # stopped before the cluster: it depends on it
        yield url


async def probe(client: httpx.AsyncClient, endpoint: Endpoint, account: SignedUp, api_key: str) -> Probe:
    fresh = f"p{time.monotonic_ns()}"
    headers = {"api key": {"X-API-Key": api_key}, "user": account.headers, "anyone": {}}[endpoint.caller]
    fill = {"name": fresh, "email": account.user["email"]}
    json = {name: value.format(**fill) for name, value in endpoint.json.items()} or None
    form = {name: value.format(**fill) for name, value in endpoint.form.items()} or None
    started = time.monotonic()
    try:
        response = await client.request(
            endpoint.method, endpoint.path.format(id=account.user["id"]), headers=headers, json=json, data=form
        )
    except httpx.TransportError:
        return Probe(endpoint.name, None, time.monotonic() - started, well_formed_503=False)
    seconds = time.monotonic() - started
    return Probe(endpoint.name, response.status_code, seconds, well_formed_503=is_well_formed_503(response))


async def call_while_down(client: httpx.AsyncClient, account: SignedUp, api_key: str) -> list[Probe]:
    """Every endpoint that needs the database, in turn, for DOWN_SECONDS."""
    probes: list[Probe] = []
    until = time.monotonic() + DOWN_SECONDS
    while time.monotonic() < until:
        probes += [await probe(client, endpoint, account, api_key) for endpoint in NEEDS_DATABASE]
    return probes


def summary(probes: list[Probe]) -> str:
    """`503 x12, slowest 0.02 s`"""
    statuses = Counter(probe.status for probe in probes)
    counted = ", ".join(f"{status} x{count}" for status, count in sorted(statuses.items(), key=str))
    return f"{counted}, slowest {max(probe.seconds for probe in probes):.2f} s"


@asynccontextmanager
async def polled(client: httpx.AsyncClient, path: str, every: float) -> AsyncIterator[list[int | None]]:
    """The statuses of `GET path` every `every` seconds while the block runs (None: no answer)."""
    statuses: list[int | None] = []

    async def poll() -> None:
        while True:
            try:
                statuses.append((await client.get(path)).status_code)
            except httpx.TransportError:
                statuses.append(None)
            await asyncio.sleep(every)

    polling = asyncio.create_task(poll())
    try:
        yield statuses
    finally:
        polling.cancel()
        with suppress(asyncio.CancelledError):
            await polling


async def test_a_stopped_database_is_503s_at_once_then_recovers_with_no_acknowledged_write_lost(
    base_url: str, cluster: Cluster, outage_database: str, record_figures: RecordFigures
) -> None:
    api_key = await insert_api_key(outage_database, ["users:read", "users:write"])
    async with httpx.AsyncClient(base_url=base_url, timeout=PROBE_TIMEOUT) as client:
        account = await sign_up(client)  # the user read, updated and logged in while the database is down

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        async with (
            asyncio.timeout(CASE_SECONDS),
            polled(client, "/health/live", LIVENESS_EVERY) as liveness,
            UserWrites(base_url, api_key, clients=WRITERS, idempotent=IDEMPOTENT_WRITERS) as writes,
        ):
            await asyncio.sleep(WARM_UP)
            await asyncio.to_thread(cluster.stop, "fast")
            down = await call_while_down(client, account, api_key)
            await asyncio.to_thread(cluster.start)
            restarted = time.monotonic()
            ready_after = await seconds_until(ready, within=RECOVERY_LIMIT)

            async def writing() -> bool:
                return writes.first_acknowledged_since(restarted) is not None

            await seconds_until(writing, within=RECOVERY_LIMIT)
            first_write = writes.first_acknowledged_since(restarted)
            writes_after = None if first_write is None else first_write - restarted
            await asyncio.sleep(AFTER)
        tally = Tally(writes.answers, await kept_emails(outage_database))

    by_endpoint = {endpoint.name: [p for p in down if p.endpoint == endpoint.name] for endpoint in NEEDS_DATABASE}
    record_figures(
        tally.figures()
        | {f"down: {name}": summary(probes) for name, probes in by_endpoint.items()}
        | {
            "liveness not 200": sum(status != 200 for status in liveness),
            "ready again after (s)": None if ready_after is None else round(ready_after, 2),
            "writes again after (s)": None if writes_after is None else round(writes_after, 2),
        }
    )
    not_refused_at_once = {
        name: summary(probes) for name, probes in by_endpoint.items() if not all(p.as_required for p in probes)
    }
    assert not_refused_at_once == {}, (
        f"while down, each must be a 503 problem with Retry-After within {ANSWER_WITHIN} s"
    )
    assert set(liveness) == {200}, Counter(liveness)
    assert ready_after is not None, f"/health/ready was not 200 within {RECOVERY_LIMIT} s of the restart"
    assert ready_after < BACK_WITHIN
    assert writes_after is not None, f"no write succeeded within {RECOVERY_LIMIT} s of the restart"
    assert writes_after < BACK_WITHIN
    assert tally.broken_rules() == NO_BROKEN_RULES, tally.examples()
