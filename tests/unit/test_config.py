"""Settings.from_env: defaults, parsing from strings, and one-line errors naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.config import ConfigError, Settings

VARIABLES = [name.upper() for name in Settings.__struct_fields__]


def config_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    message = str(raised.value)
    assert message
    assert "\n" not in message
    assert "\r" not in message
    return message


# --- defaults -----------------------------------------------------------------------------------


async def test_an_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.database_url is None
    assert settings.async_database_url is None
    assert settings.database_pool_size == 10
    assert settings.database_max_overflow == 5
    assert settings.database_pool_timeout == 10
    assert settings.data_dir == ".data"
    assert settings.migrate_on_start is False
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.web_concurrency == (os.cpu_count() or 1)
    assert settings.http_version == "1"  # not granian's `auto`: REQUEST_READ_TIMEOUT then bounds every connection
    assert settings.log_level == "INFO"
    assert settings.log_format == "auto"
    assert settings.access_log is True
    assert settings.max_request_body_bytes == 1 << 20
    assert settings.ready_timeout == 1.0
    assert settings.shutdown_timeout == 30
    assert settings.shutdown_drain_seconds == 0  # `make run` and `docker compose stop` stop at once


async def test_variables_that_are_not_settings_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/bin", "HOME": "/root", "LITESTAR_APP": "x:y", "PORTS": "abc"}) == Settings()


async def test_only_upper_case_names_are_read() -> None:
    assert Settings.from_env({"port": "abc", "log_level": "LOUD"}) == Settings()


@pytest.mark.parametrize("blank", ["", " ", "\t", "\n"])
@pytest.mark.parametrize("variable", VARIABLES)
async def test_an_empty_variable_counts_as_unset(variable: str, blank: str) -> None:
    assert Settings.from_env({variable: blank}) == Settings()


async def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("LOG_FORMAT", "console")

    settings = Settings.from_env()
    assert settings.port == 9123
    assert settings.log_format == "console"


# --- parsing ------------------------------------------------------------------------------------


async def test_every_variable_is_parsed_from_a_string() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:s3cret@db.internal:5433/accounts",
            "DATABASE_POOL_SIZE": "25",
            "DATABASE_MAX_OVERFLOW": "0",
            "DATABASE_POOL_TIMEOUT": "300",
            "DATA_DIR": "/var/lib/accounts",
            "MIGRATE_ON_START": "true",
            "HOST": "192.0.2.10",
            "PORT": "65535",
            "WEB_CONCURRENCY": "4",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            "ACCESS_LOG": "false",
            "MAX_REQUEST_BODY_BYTES": "1024",
            "READY_TIMEOUT": "0.25",
            "SHUTDOWN_TIMEOUT": "600",
        }
    )

    assert settings == Settings(
        database_url="postgresql://app:s3cret@db.internal:5433/accounts",
        database_pool_size=25,
        database_max_overflow=0,
        database_pool_timeout=300,
        data_dir="/var/lib/accounts",
        migrate_on_start=True,
        host="192.0.2.10",
        port=65535,
        web_concurrency=4,
        log_level="WARNING",
        log_format="json",
        access_log=False,
        max_request_body_bytes=1024,
        ready_timeout=0.25,
        shutdown_timeout=600,
    )
    assert isinstance(settings.port, int)
    assert isinstance(settings.ready_timeout, float)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("false", False), ("1", True), ("0", False), ("TRUE", True), ("False", False)],
)
@pytest.mark.parametrize("variable", ["ACCESS_LOG", "MIGRATE_ON_START"])
async def test_booleans_are_parsed(variable: str, raw: str, expected: bool) -> None:
    settings = Settings.from_env({variable: raw})
    assert getattr(settings, variable.lower()) is expected


@pytest.mark.parametrize(("raw", "expected"), [("0.5", 0.5), ("2", 2.0), ("30", 30.0), ("0.001", 0.001)])
async def test_ready_timeout_is_parsed_as_a_float(raw: str, expected: float) -> None:
    assert Settings.from_env({"READY_TIMEOUT": raw}).ready_timeout == expected


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("8080", 8080), ("65535", 65535)])
async def test_port_bounds_are_accepted(raw: str, expected: int) -> None:
    assert Settings.from_env({"PORT": raw}).port == expected


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
async def test_every_log_level_is_accepted(level: str) -> None:
    assert Settings.from_env({"LOG_LEVEL": level}).log_level == level


@pytest.mark.parametrize("log_format", ["auto", "json", "console"])
async def test_every_log_format_is_accepted(log_format: str) -> None:
    assert Settings.from_env({"LOG_FORMAT": log_format}).log_format == log_format


@pytest.mark.parametrize("http_version", ["1", "auto", "2"])
async def test_every_http_version_is_accepted(http_version: str) -> None:
    assert Settings.from_env({"HTTP_VERSION": http_version}).http_version == http_version


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:p@h:5432/d", "postgres://u@h/d", "postgresql+asyncpg://u:p@h/d", "postgresql:///d?host=/tmp"],
)
async def test_postgresql_urls_are_accepted(url: str) -> None:
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("PORT", "80 80"),
        ("PORT", "80\n80"),
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "257"),
        ("WEB_CONCURRENCY", "many"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_POOL_SIZE", "201"),
        ("DATABASE_MAX_OVERFLOW", "-1"),
        ("DATABASE_POOL_TIMEOUT", "0"),
        ("DATABASE_POOL_TIMEOUT", "1.5"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("HTTP_VERSION", "1.1"),
        ("HTTP_VERSION", "h2c"),
        ("HTTP_VERSION", "3"),
        ("ACCESS_LOG", "perhaps"),
        ("ACCESS_LOG", "2"),
        ("MIGRATE_ON_START", "maybe"),
        ("MAX_REQUEST_BODY_BYTES", "1023"),
        ("MAX_REQUEST_BODY_BYTES", "1MB"),
        ("READY_TIMEOUT", "0"),
        ("READY_TIMEOUT", "-1"),
        ("READY_TIMEOUT", "31"),
        ("READY_TIMEOUT", "nan"),
        ("READY_TIMEOUT", "inf"),
        ("READY_TIMEOUT", "soon"),
        ("SHUTDOWN_TIMEOUT", "0"),
        ("SHUTDOWN_TIMEOUT", "601"),
        ("SHUTDOWN_DRAIN_SECONDS", "-1"),
        ("SHUTDOWN_DRAIN_SECONDS", "301"),
    ],
)
async def test_a_bad_value_is_a_one_line_error_naming_the_variable(variable: str, raw: str) -> None:
    message = config_error({variable: raw})
    assert message.startswith(f"{variable}="), message
    assert len(message) < 200, message


@pytest.mark.parametrize(
    "url",
    ["mysql://x", "sqlite:///accounts.db", "postgresql+psycopg://u@h/d", "localhost:5432", "not a url"],
)
async def test_a_database_url_that_is_not_postgresql_is_an_error(url: str) -> None:
    message = config_error({"DATABASE_URL": url})
    assert message.startswith("DATABASE_URL:"), message


async def test_a_bad_database_url_does_not_echo_its_password() -> None:
    message = config_error({"DATABASE_URL": "mysql://app:hunter2@db/accounts"})
    assert "hunter2" not in message


async def test_the_error_names_a_bad_variable_among_good_ones() -> None:
    message = config_error({"HOST": "192.0.2.10", "PORT": "8080", "LOG_FORMAT": "xml", "ACCESS_LOG": "true"})
    assert message.startswith("LOG_FORMAT="), message


# --- async_database_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgres://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgresql+asyncpg://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgresql://u:p%40ss@h/d?sslmode=require", "postgresql+asyncpg://u:p%40ss@h/d?sslmode=require"),
    ],
)
async def test_async_database_url_selects_asyncpg(url: str, expected: str) -> None:
    assert Settings(database_url=url).async_database_url == expected
    assert Settings.from_env({"DATABASE_URL": url}).async_database_url == expected


# --- the command --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("PORT", "abc"), ("LOG_LEVEL", "LOUD"), ("DATABASE_URL", "mysql://x"), ("HTTP_VERSION", "1.1")],
)
async def test_serve_with_a_bad_variable_exits_with_one_line_naming_it(tmp_path: Path, variable: str, raw: str) -> None:
    env = {name: value for name, value in os.environ.items() if name not in VARIABLES}
    # A reachable-looking URL so that, were the bad value accepted, no embedded database would start.
    env["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nothing"
    env[variable] = raw

    result = subprocess.run(
        [sys.executable, "-m", "accounts", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert f"{variable}=" in lines[0] or f"{variable}:" in lines[0]


@pytest.mark.parametrize("level", ["debug", "Info", "warning"])
def test_log_level_is_read_in_any_case(level: str) -> None:
    assert Settings.from_env({"LOG_LEVEL": level}).log_level == level.upper()


# --- read replicas and PgBouncer ----------------------------------------------------------------


async def test_replica_urls_are_split_and_given_to_asyncpg_without_a_driver() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app@primary/accounts",
            "DATABASE_REPLICA_URLS": " postgresql+asyncpg://app@replica1/accounts ,postgres://app@replica2/accounts,",
        }
    )
    assert settings.asyncpg_replica_urls == ["postgresql://app@replica1/accounts", "postgresql://app@replica2/accounts"]
    assert Settings.from_env({}).asyncpg_replica_urls == []


@pytest.mark.parametrize("urls", ["mysql://x", "postgresql://app@replica/accounts,redis://cache"])
async def test_a_replica_url_that_is_not_postgresql_is_an_error(urls: str) -> None:
    message = config_error({"DATABASE_URL": "postgresql://app@primary/accounts", "DATABASE_REPLICA_URLS": urls})
    assert message.startswith("DATABASE_REPLICA_URLS:"), message


async def test_replicas_need_a_database_url() -> None:
    message = config_error({"DATABASE_REPLICA_URLS": "postgresql://app@replica/accounts"})
    assert message.startswith("DATABASE_REPLICA_URLS:"), message


async def test_the_direct_url_defaults_to_the_database_url() -> None:
    assert Settings.from_env({"DATABASE_URL": "postgres://app@db/accounts"}).asyncpg_direct_url == (
        "postgresql://app@db/accounts"
    )
    direct = {
        "DATABASE_URL": "postgresql://app@bouncer/accounts",
        "DATABASE_DIRECT_URL": "postgresql://app@db/accounts",
    }
    assert Settings.from_env(direct).asyncpg_direct_url == "postgresql://app@db/accounts"


async def test_pgbouncer_drops_the_statement_cache_and_needs_a_direct_url() -> None:
    pooled = {"DATABASE_URL": "postgresql://app@bouncer/accounts", "DATABASE_PGBOUNCER": "true"}
    assert config_error(pooled).startswith("DATABASE_DIRECT_URL:")
    settings = Settings.from_env({**pooled, "DATABASE_DIRECT_URL": "postgresql://app@db/accounts"})
    assert settings.statement_cache_size == 0
    assert Settings.from_env({}).statement_cache_size == 100


async def test_a_direct_url_that_is_not_postgresql_is_an_error() -> None:
    assert config_error({"DATABASE_DIRECT_URL": "redis://cache"}).startswith("DATABASE_DIRECT_URL:")


@pytest.mark.parametrize("url", ["api.pwnedpasswords.com/range/", "ftp://mirror/range/", "file:///etc/passwd"])
def test_a_breach_api_that_is_not_http_is_an_error(url: str) -> None:
    assert config_error({"PASSWORD_BREACH_API": url}).startswith("PASSWORD_BREACH_API:")
    mirror = Settings.from_env({"PASSWORD_BREACH_API": "https://api.pwnedpasswords.com/range/"})
    assert mirror.password_breach_api == "https://api.pwnedpasswords.com/range/"
    assert Settings.from_env({}).password_breach_api is None
