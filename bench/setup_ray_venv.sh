#!/usr/bin/env bash
# Create bench/.venv-ray with the peer (Ray Serve) used by the Stratus benchmarks.
#
# Usage: bash bench/setup_ray_venv.sh
#
# Idempotent: a stamp file inside the venv records the exact requirement set;
# when it matches and the imports succeed, the script does nothing. Override the
# interpreter with PYTHON=/path/to/python3 (default: python3).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${BENCH_DIR}/.venv-ray"
PYTHON="${PYTHON:-python3}"
# torch is pinned: an unpinned torch would pull GBs of CUDA wheels.
REQUIREMENTS=("ray[serve]==2.60.0" "torch==2.13.0")
STAMP="${VENV}/.stratus-bench-requirements"
WANT="$(printf '%s\n' "${REQUIREMENTS[@]}")"

if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT}" ]] \
    && "${VENV}/bin/python" -c 'import ray, ray.serve, torch' >/dev/null 2>&1; then
    echo "setup_ray_venv: ${VENV} is up to date"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "setup_ray_venv: creating ${VENV} with $(${PYTHON} -V)"
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
"${VENV}/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}"
"${VENV}/bin/python" -c 'import ray, ray.serve, torch; print("ray", ray.__version__, "torch", torch.__version__)'
printf '%s\n' "${REQUIREMENTS[@]}" > "${STAMP}"
echo "setup_ray_venv: done in $(( $(date +%s) - start ))s"
