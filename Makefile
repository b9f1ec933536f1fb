# Every target builds its own virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# pip itself is pinned too: pip-tools (make lock) follows pip's internals.
PIP_VERSION := 26.3

# make test-floor: the lowest versions pyproject.toml allows (constraints/floor.txt), the unit
# tests, one election and one TLS election (the server-name case needs the TLS adapter's
# requests hooks, the unix-socket unit tests the other adapter's).
FLOOR_VENV  ?= .venv-floor
FLOOR_PY    := $(FLOOR_VENV)/bin/python
FLOOR_TESTS := tests/unit \
	tests/integration/test_election.py::test_three_sidecars_elect_one_primary_quickly \
	'tests/integration/test_tls.py::test_verified_tls_elects[server-name]'

# make lock: resolve against PyPI alone, whatever index or wheel folder this machine's pip
# configuration adds, so the hashes are those every user downloads.
LOCK_ENV     := env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL \
	PIP_CONFIG_FILE=/dev/null
PIP_COMPILE  := $(LOCK_ENV) $(VENV)/bin/pip-compile --quiet --upgrade --generate-hashes \
	--strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links

.PHONY: demo test lint lock test-floor image test-image diagrams chaos bench bench-double clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m scripts.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check consul_leader fsm adapters tests scripts bench
	$(VENV)/bin/mypy

# Refresh both lock files to the newest versions pyproject.toml allows: requirements.lock (the
# runtime dependencies, what the image installs with --require-hashes) and
# requirements-build.lock (setuptools, what the image builds the wheel with).
lock: $(VENV)/.installed
	$(PIP_COMPILE) --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --build-deps-for=wheel --only-build-deps \
		--output-file requirements-build.lock pyproject.toml

test-floor:
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(FLOOR_PY) -m pip install --quiet --constraint constraints/floor.txt setuptools
	$(FLOOR_PY) -m pip wheel --quiet --no-deps --no-build-isolation \
		--wheel-dir $(FLOOR_VENV)/dist .
	$(FLOOR_PY) -m pip install --quiet --constraint constraints/floor.txt \
		"$$(echo $(FLOOR_VENV)/dist/consul_leader-*.whl)[test]"
	$(FLOOR_PY) -m pip check
	$(FLOOR_PY) -c 'from importlib.metadata import version as v; \
		print("floor:", *(f"{n}=={v(n)}" for n in \
		("requests", "urllib3", "transitions", "prometheus-client", "setuptools")))'
	$(FLOOR_PY) -m pytest -q -p no:cacheprovider $(FLOOR_TESTS)

# The image on a Debian base bootstrapped here (no registry needed), in out/image.
image: $(VENV)/.installed
	$(PY) -m scripts.image --state out/image

test-image: $(VENV)/.installed
	$(PY) -m pytest -q -s -m image tests/image

diagrams: $(VENV)/.installed
	$(PY) -m scripts.draw_diagrams

chaos: $(VENV)/.installed
	$(PY) -m scripts.chaos --out out/chaos

bench: $(VENV)/.installed
	$(PY) -m bench --json out/bench.json

bench-double: $(VENV)/.installed
	$(PY) -m tests.consul_double.bench

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache .mypy_cache .ruff_cache
