# Every target builds its own virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test lint diagrams chaos bench bench-double clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m scripts.demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check consul_leader fsm adapters tests scripts bench
	$(VENV)/bin/mypy

diagrams: $(VENV)/.installed
	$(PY) -m scripts.draw_diagrams

chaos: $(VENV)/.installed
	$(PY) -m scripts.chaos --out out/chaos

bench: $(VENV)/.installed
	$(PY) -m bench --json out/bench.json

bench-double: $(VENV)/.installed
	$(PY) -m tests.consul_double.bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
