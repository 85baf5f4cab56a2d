# The two commands a newcomer runs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint unit install bench clean

run: $(STAMP)  ## the router on :8080 with one test event of each type sent through it
	@scripts/ensure-rabbitmq.sh
	@scripts/run-demo.sh

test: lint  ## lint, then the whole suite against the local RabbitMQ
	@scripts/ensure-rabbitmq.sh
	@scripts/ensure-load-tools.sh
	@scripts/ensure-node-tools.sh
	@scripts/ensure-browser.sh
	$(BIN)/pytest

lint: $(STAMP)  ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(STAMP)  ## only the tests that need no broker and no database
	$(BIN)/pytest -m "not broker and not database"

bench: $(STAMP)  ## the benchmark suite (not a test); BENCH_ARGS="--quick" for a smoke run
	@scripts/ensure-rabbitmq.sh
	@scripts/ensure-load-tools.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
