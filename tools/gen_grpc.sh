#!/usr/bin/env bash
# Regenerates the checked-in gRPC stubs of src/stratus/grpc_api/proto from its .proto with
# grpcio-tools (pinned in pyproject.toml's test extra). tests/unit/test_grpc_stubs.py runs
# this into a temporary directory and fails when the result differs from what is checked in.
# Usage: tools/gen_grpc.sh [OUTPUT_ROOT]   (default: src, in place)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/src}"
python="${PYTHON:-python}"
mkdir -p "$out/stratus/grpc_api/proto"
cd "$here/src"
"$python" -m grpc_tools.protoc -I . --python_out="$out" --grpc_python_out="$out" \
    stratus/grpc_api/proto/grpc_inference.proto
# The messages go into a descriptor pool of their own, not protobuf's default one: tritonclient
# (and any client's own stubs) register the same `inference` package there, and a process that
# imports both would fail with "duplicate symbol". Only the service path is on the wire.
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
    "$out/stratus/grpc_api/proto/grpc_inference_pb2.py"
