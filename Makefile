# The two promised commands: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV := .venv
BENCH_VENV := .venv-bench
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard distributed_asgi tests bench examples) compile_native.py

.PHONY: demo test lint typecheck compile clean-native bench soak clean constraints

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The request path's modules compiled with mypyc, when a C compiler is there (rebuilt only
# when a source changed; compile_native.py says which and why). DISTRIBUTED_ASGI_COMPILE=0,
# or `make clean-native`, runs the plain sources instead.
compile: $(STAMP)
	$(PY) compile_native.py

clean-native: $(STAMP)
	$(PY) compile_native.py --clean

# `make demo ARGS=--once` (or DEMO_ONCE=1) exits after the self-check.
demo: compile
	$(PY) -m distributed_asgi.ops.demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports  # the import directions in .importlinter

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck compile
	$(PY) -m pytest -q

$(BENCH_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	touch $@

bench: $(BENCH_VENV)/.installed compile
	$(BENCH_VENV)/bin/python -m bench

# Minutes of steady load with a worker replaced every 30 s (SOAK_MINUTES, default 3).
soak: $(BENCH_VENV)/.installed compile
	$(BENCH_VENV)/bin/python -m bench.soak

# constraints.txt from the newest releases pyproject.toml allows (run `make test` before committing it).
constraints:
	rm -rf /tmp/distributed-asgi-constraints
	$(PYTHON) -m venv /tmp/distributed-asgi-constraints
	/tmp/distributed-asgi-constraints/bin/python -m pip install --quiet -e '.[dev]'
	{ grep '^#' constraints.txt; /tmp/distributed-asgi-constraints/bin/python -m pip freeze --exclude-editable \
	  | sed 's/$$/ ; python_version == "3.11"/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(BENCH_VENV) .mypy_cache .pytest_cache .ruff_cache .import_linter_cache build
	find distributed_asgi -name '*.so' -delete
