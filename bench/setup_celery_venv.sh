#!/usr/bin/env bash
# Create bench/.venv-celery with the peer (Celery 5 + the Redis client) used by bench/async.py.
#
# Usage: bash bench/setup_celery_venv.sh
#
# Idempotent: a stamp file inside the venv records the exact requirement set;
# when it matches and the imports succeed, the script does nothing. Override the
# interpreter with PYTHON=/path/to/python3 (default: python3).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BENCH_DIR}/.venv-celery"
PYTHON="${PYTHON:-python3}"
# Pinned, and nothing here pulls torch: celery[redis] brings kombu, billiard and redis-py.
REQUIREMENTS=("celery[redis]==5.7.0")
STAMP="${VENV}/.stratus-bench-requirements"
WANT="$(printf '%s\n' "${REQUIREMENTS[@]}")"

if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT}" ]] \
    && "${VENV}/bin/python" -c 'import celery, redis' >/dev/null 2>&1; then
    echo "setup_celery_venv: ${VENV} is up to date"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "setup_celery_venv: creating ${VENV} with $(${PYTHON} -V)"
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
"${VENV}/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}"
"${VENV}/bin/python" -c 'import celery, redis; print("celery", celery.__version__, "redis", redis.__version__)'
printf '%s\n' "${REQUIREMENTS[@]}" > "${STAMP}"
echo "setup_celery_venv: done in $(( $(date +%s) - start ))s"
