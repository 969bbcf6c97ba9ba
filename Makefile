# The two commands of the README, plus a few conveniences. Each installs what it needs.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo down status test lint bench

setup:
	@deploy/setup.sh

## The main job: the whole stack on this machine, on the embedded defaults.
demo: setup
	$(BIN)/nrtrec up
	$(BIN)/nrtrec status

down:
	$(BIN)/nrtrec down

status:
	$(BIN)/nrtrec status

## The test suite, against real services started by the tests themselves.
test: setup lint
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Benchmarks: JSON and plots into bench/results/.
bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.query_node --n 100000 --dim 64 --queries 1000 --out bench/results
	$(BIN)/python -m bench.encoders --out bench/results
	$(BIN)/python -m bench.streaming --out bench/results
