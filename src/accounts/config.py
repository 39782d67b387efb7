"""Settings: read once from the environment into a frozen Struct."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["auto", "json", "console"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_HTTP_SCHEMES = ("http://", "https://")
_DOMAIN = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"


class ConfigError(Exception):
    """A setting has a value the service cannot start with; the message is one line for the operator."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the service; the environment variable is the field name in upper case."""

    database_url: str | None = None
    """PostgreSQL URL; unset means the embedded PostgreSQL in `data_dir`."""
    database_replica_urls: str = ""
    """Comma-separated URLs of read replicas of `database_url`: user reads go to them in turn (empty: none)."""
    database_pgbouncer: bool = False
    """The database URLs lead to PgBouncer in transaction pooling mode: no prepared statement outlives a query."""
    database_direct_url: str | None = None
    """URL of the primary bypassing PgBouncer, for LISTEN/NOTIFY and the job queue's locks (default: `database_url`)."""
    database_pool_size: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10
    database_max_overflow: Annotated[int, msgspec.Meta(ge=0, le=200)] = 5
    database_pool_timeout: Annotated[int, msgspec.Meta(ge=1, le=300)] = 10
    database_connect_timeout: Annotated[int, msgspec.Meta(ge=1, le=60)] = 3
    data_dir: str = ".data"
    migrate_on_start: bool = False
    """Apply pending migrations before serving; switched on when the embedded database is used."""
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8000
    web_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = os.cpu_count() or 1
    http_version: Literal["1", "auto", "2"] = "1"
    """What `accounts serve` speaks: `1` HTTP/1.1, `2` HTTP/2 by prior knowledge (h2c), `auto` either, told apart by a
    connection's first bytes (no `Upgrade: h2c`). Only `1` closes a connection that sends no request head in time."""
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "auto"
    access_log: bool = True
    max_request_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 1 << 20
    request_read_timeout: Annotated[int, msgspec.Meta(ge=1, le=300)] = 20
    """Seconds a client may take to send a request's head, and to send each part of its body: a request that stalls
    longer is answered 408 and its connection closed."""
    ready_timeout: Annotated[float, msgspec.Meta(gt=0, le=30)] = 1.0
    shutdown_timeout: Annotated[int, msgspec.Meta(ge=1, le=600)] = 30
    shutdown_drain_seconds: Annotated[int, msgspec.Meta(ge=0, le=300)] = 0
    """Seconds `accounts serve` keeps serving after SIGTERM, with `/health/ready` answering 503, so load balancers
    stop sending requests before the listener closes; in-flight requests then get `shutdown_timeout` to finish."""
    metrics_dir: str | None = None
    """Folder the API workers of one server share their metrics and draining mark through (one per server, never
    a volume shared between pods); `accounts serve` makes a temporary one if unset."""
    worker_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9102
    """Port of a job worker's own `/metrics` (0: none)."""
    jwt_issuer: str = ""
    """The `iss` of every token and the `issuer` of the discovery documents: an http(s) URL (default: `public_url`)."""
    jwt_accepted_issuers: str = ""
    """Comma-separated earlier issuers whose unexpired tokens are still accepted (`accounts` after an upgrade from a
    release whose default issuer was not a URL), for ACCESS_TOKEN_TTL after the change."""
    jwt_audience: str = "accounts"
    jwt_signing_key: str | None = None
    """PEM of the Ed25519 private key that signs access tokens (or use `jwt_signing_key_file`)."""
    jwt_signing_key_file: str | None = None
    jwt_verify_key_files: str = ""
    """Comma-separated PEM files of retired keys: still published and accepted until their tokens expire."""
    access_token_ttl: Annotated[int, msgspec.Meta(ge=60, le=86_400)] = 900
    refresh_token_ttl: Annotated[int, msgspec.Meta(ge=300, le=31_536_000)] = 2_592_000
    registration_enabled: bool = True
    login_max_failures_per_account: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    login_max_failures_per_address: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 50
    login_failure_window: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 900
    webauthn_rp_id: str = ""
    """The WebAuthn relying party id passkeys are bound to: a domain, which every origin in `webauthn_origins` is or
    is a subdomain of (default: the host of `public_url`). Changing it makes every registered passkey unusable."""
    webauthn_rp_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")] = (
        "Accounts"
    )
    """The name a browser or passkey manager shows for this service when a passkey is made."""
    webauthn_origins: str = ""
    """Comma-separated origins (`https://app.example.com`) the passkey ceremonies may run on: the pages that call
    `navigator.credentials` (default: the origin of `public_url`)."""
    webauthn_challenge_ttl: Annotated[int, msgspec.Meta(ge=30, le=3_600)] = 300
    """Seconds a passkey registration or sign-in challenge stays usable (once)."""
    idempotency_key_ttl: Annotated[int, msgspec.Meta(ge=60, le=2_592_000)] = 86_400
    """Seconds a caller's `Idempotency-Key` and its stored response are kept."""
    redis_url: str | None = None
    """Redis for the job queue; unset means the queue lives in PostgreSQL."""
    queue_name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "accounts"
    """The job queue's name, the same for the API and its workers; deployments (or test runs) that share a Redis
    or a database each need their own."""
    worker_concurrency: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10
    """Jobs one worker process runs at once."""
    job_sweep_interval: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 10
    """Seconds between a worker's sweeps for jobs whose worker died (their heartbeat or timeout passed): how soon
    such a job runs again on another worker (SAQ's default is 60)."""
    worker_in_process: bool = False
    """Also run a worker inside each API process (development: `make run` with no `make worker`)."""
    job_result_ttl: Annotated[int, msgspec.Meta(ge=3600, le=31_536_000)] = 604_800
    """Seconds a finished job and its result file are kept."""
    import_max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 40)] = 100 << 20
    """Largest file `POST /api/v1/users/imports` accepts (larger: 413, nothing kept)."""
    smtp_host: str | None = None
    """SMTP server for outgoing e-mail; unset means messages are written as .eml files into `data_dir/mail`."""
    smtp_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    mail_from: str = "Accounts <accounts@localhost>"
    public_url: str = "http://127.0.0.1:8000"
    """Where users reach the service (or its front end): the base of the links in e-mails."""
    email_verification_ttl: Annotated[int, msgspec.Meta(ge=300, le=2_592_000)] = 172_800
    email_verification_interval: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60
    """At most one verification e-mail per account within this many seconds (sign-up's, then resends)."""
    outbox_flush_after: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60
    """Seconds an unsent e-mail waits before the minutely outbox flush puts it on the queue again (the request that
    wrote it tries first; this covers a queue that was down then)."""
    events_enabled: bool = True
    """Record an event with every change (the feed, its streams, webhooks, the audit trail). Off, nothing is recorded:
    for measuring what recording costs (`make bench`), or a deployment that wants no events at all."""
    audit_retention_days: Annotated[int, msgspec.Meta(ge=1, le=36_500)] = 365
    """Days an event is kept, in the audit trail and the feed alike; the scheduled clean-up deletes older ones."""
    event_stream_heartbeat: Annotated[float, msgspec.Meta(gt=0, le=300)] = 15.0
    """Seconds an idle event stream (SSE) waits before it sends a heartbeat comment (proxies close silent ones)."""
    password_breach_api: str | None = None
    """A Have I Been Pwned-compatible range API (`https://api.pwnedpasswords.com/range/`): set, a new password given
    to the API that it has seen in a breach is refused. Only the first 5 hex digits of the password's SHA-1 leave."""
    password_breach_timeout: Annotated[float, msgspec.Meta(gt=0, le=30)] = 2.0
    """Seconds the range API may take; slower, down or answering an error, a password is judged by the local
    screening alone (and a warning logged): sign-ups never depend on a third party being up."""
    password_reset_ttl: Annotated[int, msgspec.Meta(ge=300, le=86_400)] = 3_600
    password_reset_interval: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 60
    """At most one password-reset e-mail per account within this many seconds."""
    mfa_encryption_keys: str = ""
    """Comma-separated base64url 32-byte AES keys that seal TOTP secrets at rest: the first seals, all open (rotate by
    putting a new key first). Unset: a key generated in `data_dir` (fine for one machine; set it when servers share a
    database)."""
    mfa_token_ttl: Annotated[int, msgspec.Meta(ge=30, le=3_600)] = 300
    """Seconds the `mfa_token` of a password login that needs a second factor stays usable (once)."""
    totp_issuer: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^:\x00-\x1f\x7f]+$")] = "Accounts"
    """The name authenticator apps show beside a TOTP code (the `issuer` of the `otpauth://` URI)."""
    webhook_allow_private_urls: bool = False
    """Let webhooks point at loopback, private, link-local and other non-public addresses (tests, closed networks);
    off, such a URL is refused when saved and again at each delivery."""
    webhook_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    """Seconds a webhook delivery may take to connect, send and be answered; longer is a failed attempt."""
    webhook_retry_window: Annotated[int, msgspec.Meta(ge=1, le=2_592_000)] = 86_400
    """Seconds a delivery is retried for after its first attempt (exponential back-off with full jitter), then it
    has failed."""
    webhook_max_consecutive_failures: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10
    """Deliveries to one endpoint that fail for good in a row (no success between) after which it is disabled."""
    nats_url: str | None = None
    """NATS server with JetStream (nats://host:4222) the event relay publishes to; unset: no relay."""
    nats_stream: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = (
        "ACCOUNTS_EVENTS"
    )
    """The JetStream stream the relay publishes into (made if missing, over `nats_subject_prefix`.>)."""
    nats_subject_prefix: Annotated[
        str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    ] = "accounts.events"
    """Each event is published as `<prefix>.<event type>` (`accounts.events.user.created`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `environ` (the process environment by default).

        Raises ConfigError naming the first variable with a bad value and what it expects.
        """
        environ = os.environ if environ is None else environ
        raw = {
            name: environ[name.upper()] for name in cls.__struct_fields__ if environ.get(name.upper(), "").strip() != ""
        }
        if "log_level" in raw:
            raw["log_level"] = raw["log_level"].upper()  # `info` means INFO, as in every logging tool
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(_describe(exc, raw)) from None
        if settings.database_url is not None and not settings.database_url.startswith(_POSTGRES_SCHEMES):
            raise ConfigError("DATABASE_URL: expected a PostgreSQL URL (postgresql://user:password@host:port/database)")
        if not all(url.startswith(_POSTGRES_SCHEMES) for url in _split(settings.database_replica_urls)):
            raise ConfigError("DATABASE_REPLICA_URLS: expected comma-separated PostgreSQL URLs (postgresql://...)")
        if _split(settings.database_replica_urls) and settings.database_url is None:
            raise ConfigError("DATABASE_REPLICA_URLS: needs DATABASE_URL (the embedded database has no replicas)")
        if settings.database_direct_url is not None and not settings.database_direct_url.startswith(_POSTGRES_SCHEMES):
            raise ConfigError("DATABASE_DIRECT_URL: expected a PostgreSQL URL (postgresql://user:password@host/db)")
        if settings.database_pgbouncer and settings.database_direct_url is None:
            raise ConfigError("DATABASE_DIRECT_URL: required with DATABASE_PGBOUNCER (LISTEN needs its own session)")
        if (problem := _webauthn_problem(settings)) is not None:
            raise ConfigError(problem)
        if not _is_issuer(settings.issuer):
            variable = "JWT_ISSUER" if settings.jwt_issuer else "PUBLIC_URL"
            raise ConfigError(f"{variable}: the issuer must be an http(s) URL without query or fragment")
        if settings.password_breach_api is not None and not settings.password_breach_api.startswith(_HTTP_SCHEMES):
            raise ConfigError("PASSWORD_BREACH_API: expected an http(s) URL to which a hash prefix is appended")
        if settings.redis_url is not None and not settings.redis_url.startswith(_REDIS_SCHEMES):
            raise ConfigError("REDIS_URL: expected a Redis URL (redis://host:port/db, rediss:// or unix://)")
        if settings.nats_url is not None and not settings.nats_url.startswith(("nats://", "tls://")):
            raise ConfigError("NATS_URL: expected a NATS URL (nats://host:4222 or tls://host:4222)")
        return settings

    @property
    def issuer(self) -> str:
        """The token issuer: `jwt_issuer`, else `public_url` (without a trailing slash)."""
        return self.jwt_issuer or self.public_url.rstrip("/")

    @property
    def accepted_issuers(self) -> list[str]:
        return _split(self.jwt_accepted_issuers)

    @property
    def rp_id(self) -> str:
        """The WebAuthn relying party id: `webauthn_rp_id`, else the host of `public_url`."""
        return (self.webauthn_rp_id or _host(self.public_url)).lower()

    @property
    def origins(self) -> list[str]:
        """The origins passkey ceremonies may run on: `webauthn_origins`, else the origin of `public_url`."""
        return _split(self.webauthn_origins) or [_origin(self.public_url)]

    @property
    def async_database_url(self) -> str | None:
        """`database_url` with the asyncpg driver selected, as SQLAlchemy wants it."""
        if self.database_url is None:
            return None
        _, rest = self.database_url.split("://", 1)
        return f"postgresql+asyncpg://{rest}"

    @property
    def asyncpg_database_url(self) -> str | None:
        """`database_url` as asyncpg's own `connect()` takes it."""
        if self.database_url is None:
            return None
        _, rest = self.database_url.split("://", 1)
        return f"postgresql://{rest}"

    @property
    def asyncpg_replica_urls(self) -> list[str]:
        """`database_replica_urls` as asyncpg's `connect()` takes them."""
        return [f"postgresql://{url.split('://', 1)[1]}" for url in _split(self.database_replica_urls)]

    @property
    def asyncpg_direct_url(self) -> str | None:
        """`database_direct_url` (else `database_url`) as asyncpg's `connect()` takes it."""
        url = self.database_direct_url or self.database_url
        return None if url is None else f"postgresql://{url.split('://', 1)[1]}"

    @property
    def statement_cache_size(self) -> int:
        """Prepared statements asyncpg keeps per connection (its default, 100); none behind PgBouncer, where
        the next transaction may run on a server connection that never saw them."""
        return 0 if self.database_pgbouncer else 100

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()


def _is_issuer(url: str) -> bool:
    """RFC 8414 section 2: a URL with a scheme and host, no query and no fragment."""
    return re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", url) is not None


def _origin(url: str) -> str:
    """`scheme://host[:port]` of a URL (`https://example.com/app` -> `https://example.com`)."""
    scheme, _, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return f"{scheme.lower()}://{authority.lower()}"


def _host(url: str) -> str:
    """The host of a URL, without port or user information (an IPv6 literal keeps its brackets off)."""
    authority = _origin(url).partition("://")[2].rpartition("@")[2]
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.partition(":")[0]


def _webauthn_problem(settings: Settings) -> str | None:
    """Why the WebAuthn settings that were set cannot work, in one line naming the variable; None when they can (or
    none was set: the defaults from PUBLIC_URL agree by construction). An origin's host must be the relying party id
    or a subdomain of it (WebAuthn section 5.1.4.1); Android apps' `android:apk-key-hash:` origins have no host."""
    rp_id = settings.rp_id
    if settings.webauthn_rp_id and re.fullmatch(_DOMAIN, rp_id) is None:
        return f"WEBAUTHN_RP_ID: {rp_id!r} must be a domain name (example.com), without scheme, port or path"
    if not (settings.webauthn_rp_id or settings.webauthn_origins):
        return None
    for origin in settings.origins:
        if origin.startswith("android:apk-key-hash:"):
            continue
        if re.fullmatch(r"https?://[^/?#\s@]+", origin) is None:
            return f"WEBAUTHN_ORIGINS: {origin!r} is not an origin (https://host[:port], no path)"
        host = _host(origin)
        if host != rp_id and not host.endswith(f".{rp_id}"):
            return f"WEBAUTHN_ORIGINS: the host of {origin!r} is neither WEBAUTHN_RP_ID {rp_id!r} nor a subdomain of it"
    return None


def _split(urls: str) -> list[str]:
    return [url.strip() for url in urls.split(",") if url.strip()]


def _describe(exc: msgspec.ValidationError, raw: Mapping[str, str]) -> str:
    """Turn msgspec's `Expected ... - at `$.port`` into `PORT='abc': expected ...`."""
    message = str(exc)
    match = re.search(r" - at `\$\.(\w+)`$", message)
    if match is None:
        return f"invalid configuration: {message}"
    field = match.group(1)
    expected = message[: match.start()].replace("`", "")
    return f"{field.upper()}={raw.get(field, '')!r}: {expected[0].lower()}{expected[1:]}"
