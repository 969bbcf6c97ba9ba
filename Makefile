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
