#!/usr/bin/env bash
# Create bench/.venv-mlserver with the peer (Seldon MLServer) used by bench/grpc.py.
#
# Usage: bash bench/setup_mlserver_venv.sh
#
# Idempotent: a stamp file inside the venv records the exact requirement set;
# when it matches and the imports succeed, the script does nothing. Override the
# interpreter with PYTHON=/path/to/python3 (default: python3).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BENCH_DIR}/.venv-mlserver"
PYTHON="${PYTHON:-python3}"
# torch is pinned (an unpinned torch would pull GBs of CUDA wheels) and is the project's own
# version, as is safetensors: the digits runtime loads the same network and weights file.
# uvloop is held at the release MLServer 1.7.1 shipped with: from 0.22 on, get_event_loop()
# without a running loop raises, which kills every MLServer inference worker at start.
REQUIREMENTS=("mlserver==1.7.1" "uvloop==0.21.0" "torch==2.13.0" "safetensors==0.8.0")
STAMP="${VENV}/.stratus-bench-requirements"
WANT="$(printf '%s\n' "${REQUIREMENTS[@]}")"
CHECK='import mlserver, torch, safetensors; print("mlserver", mlserver.__version__, "torch", torch.__version__)'

if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT}" ]] \
    && "${VENV}/bin/python" -c "${CHECK}" >/dev/null 2>&1; then
    echo "setup_mlserver_venv: ${VENV} is up to date"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "setup_mlserver_venv: creating ${VENV} with $(${PYTHON} -V)"
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
"${VENV}/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}"
"${VENV}/bin/python" -c "${CHECK}"
printf '%s\n' "${REQUIREMENTS[@]}" > "${STAMP}"
echo "setup_mlserver_venv: done in $(( $(date +%s) - start ))s"
