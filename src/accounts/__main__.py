"""The `accounts` command: the Litestar CLI for this app, with the embedded database started when needed."""

from __future__ import annotations

import os
import sys

from accounts.config import ConfigError, Settings
from accounts.core.observability.tracing import tracing_requested


def main() -> None:
    try:
        settings = Settings.from_env()
        tracing_requested(os.environ)  # an OTEL_* value this service cannot export with stops here, not in each worker
    except ConfigError as exc:
        sys.exit(f"accounts: invalid configuration: {exc}")
    if settings.database_url is None:
        from accounts.core.db import start_embedded  # noqa: PLC0415

        # Children (granian workers, migrations) inherit the URL; the server stops when this process exits.
        os.environ["DATABASE_URL"] = start_embedded(settings.data_path)
        os.environ.setdefault("MIGRATE_ON_START", "true")
    os.environ.setdefault("LITESTAR_APP", "accounts.app:create_app")

    from litestar.cli.main import litestar_group  # noqa: PLC0415

    litestar_group()


if __name__ == "__main__":
    main()
