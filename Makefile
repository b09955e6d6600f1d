# `make demo` and `make test` work on a fresh machine: `setup` creates .venv and installs all.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo

.PHONY: setup demo test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/refine run configs/demo.yaml --input 'tests/data/warc/*.gz' \
		--output $(DEMO) --workers 2 --overwrite
	$(VENV)/bin/refine stats $(DEMO) > /dev/null

test: setup
	$(VENV)/bin/pytest -q -rs

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

bench: setup
	$(PY) bench/refine_throughput.py
	$(PY) bench/extraction_quality.py

lint: setup
	$(VENV)/bin/ruff check refine tests bench

clean:
	rm -rf runs .pytest_cache .ruff_cache
