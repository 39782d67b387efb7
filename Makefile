# Accounts: `make run` serves the API, `make test` runs the tests. `make` alone lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system
# The dependencies' bytecode is written once, at install: where PYTHONDONTWRITEBYTECODE is set, every process the
# tests start would otherwise compile them again (3.7 s to import the worker, against 1.5 s).
export UV_COMPILE_BYTECODE := 1
# uv on PATH, or the one `make uv` installs from PyPI with pip.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --no-sync

.PHONY: help uv install run worker test faults lint format migrate migration bench bench-h2 clients openapi clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv: ## Install uv (from PyPI with pip) if it is missing
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

install: uv ## Create .venv with the locked dependencies (dev tools included)
	@$(UV) sync --locked --quiet

run: install ## Serve the API (embedded PostgreSQL in .data/ when DATABASE_URL is unset)
	$(RUN) accounts serve

worker: install ## Run a job worker (queue on REDIS_URL, else on the database; embedded database when DATABASE_URL is unset)
	$(RUN) accounts worker

test: install ## Run the tests against a real PostgreSQL (local server, else embedded), a process per CPU if it has room
	$(RUN) pytest -n auto --dist loadfile

faults: install ## Run only the fault suite (tests/faults: failed commits, killed connections, outages; part of make test)
	$(RUN) pytest -s tests/faults

lint: install ## Ruff (lint and format check) and mypy
	$(RUN) ruff check src tests migrations
	$(RUN) ruff format --check src tests migrations
	$(RUN) mypy

format: install ## Apply ruff's fixes and formatting
	$(RUN) ruff check --fix src tests migrations
	$(RUN) ruff format src tests migrations

migrate: install ## Apply pending migrations to DATABASE_URL (or the embedded database)
	$(RUN) accounts database upgrade --no-prompt

migration: install ## Autogenerate a migration from the models: make migration m="what changed"
	$(RUN) accounts database make-migrations --no-prompt -m "$(m)"

bench: install ## Benchmark vs the ceiling and the FastAPI peer with wrk: make bench [users=100000] [runs=3]
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
		{ echo "make bench needs wrk (Debian package wrk)"; exit 1; }
	UV="$(UV)" $(RUN) python -m tests.bench.run --users $(or $(users),100000) --runs $(or $(runs),3)

bench-h2: install ## The read scenario over HTTP/1.1 and HTTP/2 (h2c) with h2load and wrk: make bench-h2 [runs=3]
	@command -v h2load >/dev/null && command -v wrk >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq nghttp2-client wrk) || \
		{ echo "make bench-h2 needs h2load and wrk (Debian packages nghttp2-client, wrk)"; exit 1; }
	$(RUN) python -m tests.bench.h2 --users $(or $(users),100000) --runs $(or $(runs),3)

clients: install ## Generate the Python client and TypeScript SDK from the OpenAPI snapshot into tests/contract/generated/
	$(RUN) python -m tests.contract.clients

openapi: install ## Rewrite the OpenAPI snapshot tests/contract/openapi.json from the app (after an intended change)
	UPDATE_OPENAPI_SNAPSHOT=1 $(RUN) pytest -q tests/contract/test_openapi_snapshot.py

clean: ## Remove the virtualenv and caches (keeps .data/)
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
