#!/usr/bin/env bash
# Create tests/.venv-mlflow with a real MLflow tracking server for
# tests/integration/test_mlflow_mirror.py (the client, mlflow-skinny, is the project's
# `mlflow` extra; the server needs the full package and its Flask/SQLAlchemy stack, which
# stay out of the project's venv).
#
# Usage: bash tests/setup_mlflow_venv.sh
#
# The server is mlflow 3.17.2: the full mlflow 3.18.0 needs mlflow-tracing==3.18.0, which the
# package index does not have. Idempotent: a stamp file records the requirement set; when it
# matches and `mlflow server --help` runs, nothing is done. PYTHON=/path/to/python3 overrides
# the interpreter (default: python3).
set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TESTS_DIR}/.venv-mlflow"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=("mlflow==3.17.2")
STAMP="${VENV}/.stratus-test-requirements"
WANT="$(printf '%s\n' "${REQUIREMENTS[@]}")"

if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT}" ]] \
    && "${VENV}/bin/mlflow" server --help >/dev/null 2>&1; then
    echo "setup_mlflow_venv: ${VENV} is up to date"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "setup_mlflow_venv: creating ${VENV} with $(${PYTHON} -V)"
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
"${VENV}/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}"
"${VENV}/bin/mlflow" --version
printf '%s\n' "${REQUIREMENTS[@]}" > "${STAMP}"
echo "setup_mlflow_venv: done in $(( $(date +%s) - start ))s"
