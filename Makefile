# Thin verbs; CI (.ci/run) calls the same targets. `make` alone lists them.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=
# Workers for the whole suite: most of its time is spent waiting (sshd, ansible, sleeps of fault
# drills), so three processes on two cores finish sooner; groups: tests/conftest.py.
PYTEST_WORKERS ?= 3

.DEFAULT_GOAL := help
.PHONY: help setup system demo test test-unit test-fast lint bench docs ci clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

system: ## Install missing system packages (openssh-server, rsync, ...)
	@scripts/bootstrap-system.sh

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: system $(STAMP) ## Install everything (system packages, venv, package with dev extras)

demo: setup ## Run a sample step over SSH (and a calc over the WebAPI) on a private local set-up
	$(BIN)/python -m demo

test: setup ## Run the whole test suite (slow tests included), as CI does
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-unit: setup ## Run the fast layer only (tests/unit: no sockets, no processes; seconds)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-fast: setup ## Run the tests without the slow ones
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

lint: setup ## ruff, mypy (strict), import contracts, yamllint, ansible-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/yamllint -s .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ansible-lint -q playbooks $(wildcard roles)

bench: setup ## Run every benchmark, even after a miss (tables, JSON in bench/results/; ~15 min)
	$(BIN)/python bench/run_all.py

docs: setup ## Regenerate docs/cli.md (--help), docs/architecture.md (tree, imports), docs/ansible.md
	$(BIN)/python scripts/gen_cli_docs.py
	$(BIN)/python scripts/gen_arch_docs.py
	$(BIN)/python -m tests.ansible.argspec_doc > docs/ansible.md

ci: lint test ## What CI runs

clean: ## Remove the venv and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
