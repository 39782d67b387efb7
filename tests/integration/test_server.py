"""`accounts serve` (what `make run` starts): granian on uvloop over real sockets, shutdown, embedded data."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server import serving

SIGN_UP = {"email": "kept@example.com", "username": "kept", "password": "long enough"}


def log_in(client: httpx.Client) -> dict[str, str]:
    form = {"grant_type": "password", "username": SIGN_UP["email"], "password": SIGN_UP["password"]}
    response = client.post("/api/v1/auth/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_serves_with_several_workers_and_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serving({"DATABASE_URL": database_url, "WEB_CONCURRENCY": "2"}, log) as client:
        assert client.get("/health/ready").status_code == 200
        created = client.post("/api/v1/auth/register", json=SIGN_UP)
        assert created.status_code == 201
        assert created.headers["x-request-id"]
        assert client.get("/api/v1/users/me", headers=log_in(client)).json() == created.json()
    lines = log.read_text()
    assert '"path":"/api/v1/auth/register"' in lines
    assert "Spawning worker-2" in lines


def test_embedded_database_starts_migrates_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "WEB_CONCURRENCY": "1"}
    log = tmp_path / "serve.log"
    with serving(env, log) as client:
        created = client.post("/api/v1/auth/register", json=SIGN_UP)
        assert created.status_code == 201, created.text
        token = log_in(client)
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    assert (tmp_path / "data" / "jwt-signing-key.pem").stat().st_mode & 0o777 == 0o600

    with serving(env, log) as client:
        assert client.get("/api/v1/users/me", headers=token).json() == created.json()  # same data, same key
