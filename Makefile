# Shortcuts for development; .ci/run is what CI runs (fresh venv, SQLite and PostgreSQL).
VENV ?= .venv
BIN := $(VENV)/bin
AUDIENCE_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install test test-pg lint serve ci

install: $(BIN)/audience

$(BIN)/audience: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'
	touch $@

test: install
	$(BIN)/pytest

# The same suite on PostgreSQL: it creates (and drops) its own database from this server URL.
test-pg: install
	AUDIENCE_TEST_DATABASE_URL=$(AUDIENCE_TEST_DATABASE_URL) $(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)
	$(BIN)/mypy

serve: install
	$(BIN)/audience serve

ci:
	.ci/run
