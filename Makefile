# Onshore's two entry points: `make demo` (install, then run the main example on the embedded server)
# and `make test` (install the dev tools, then lint, type-check and run the test suite).
# The interpreter of .venv, which Onshore's server and the default image's containers run on: the
# distribution's CPython (/usr/bin/python3) where it is recent enough and has venv, else python3 on PATH.
# Distributions build CPython with profile-guided and link-time optimization, which a plain source build
# (pyenv's default) lacks: on the development machine the warm call path runs about 20% faster on Debian's
# build (README, Performance). `make PYTHON=...` picks another.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint bench stop

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

# The suite runs on TEST_WORKERS pytest-xdist workers (the tests are independent: each starts its own servers
# on free loopback ports); the docker tests stay on one worker, as they share one private dockerd.
# pytest exits 5 when it collects no test: that is not a failure of the suite.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# The unit tier alone (services, policies and stores over fakes): seconds, no server, no containers.
test-fast: install
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

bench: install
	$(BIN)/python bench/run.py

stop: install
	$(BIN)/onshore stop
