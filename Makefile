# Onshore's two entry points: `make demo` (install, then run the main example on the embedded server)
# and `make test` (install the dev tools, then lint, type-check and run the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench stop

$(BIN)/onshore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/onshore

demo: install
	$(BIN)/onshore run examples/hello_world.py

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src/onshore

# pytest exits 5 when it collects no test: that is not a failure of the suite.
test: lint
	$(BIN)/pytest -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: install
	$(BIN)/python bench/run.py

stop: install
	$(BIN)/onshore stop
