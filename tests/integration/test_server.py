"""`accounts serve` (what `make run` starts): granian on uvloop over real sockets, shutdown, embedded data."""

from __future__ import annotations

from pathlib import Path

from tests.server import serving


def test_serves_with_several_workers_and_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serving({"DATABASE_URL": database_url, "WEB_CONCURRENCY": "2"}, log) as client:
        assert client.get("/health/ready").status_code == 200
        created = client.post("/api/v1/users", json={"email": "served@example.com", "username": "served"})
        assert created.status_code == 201
        assert created.headers["x-request-id"]
        assert client.get(created.headers["location"]).json() == created.json()
    lines = log.read_text()
    assert '"path":"/api/v1/users"' in lines
    assert "Spawning worker-2" in lines


def test_embedded_database_starts_migrates_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "WEB_CONCURRENCY": "1"}
    log = tmp_path / "serve.log"
    with serving(env, log) as client:
        created = client.post("/api/v1/users", json={"email": "kept@example.com", "username": "kept"})
        assert created.status_code == 201, created.text
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()

    with serving(env, log) as client:
        assert client.get(created.headers["location"]).json() == created.json()
        assert client.get("/api/v1/users").json()["total"] == 1
