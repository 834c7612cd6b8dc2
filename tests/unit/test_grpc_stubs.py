"""The checked-in gRPC stubs are what tools/gen_grpc.sh makes of the .proto, and the .proto
declares the Open Inference Protocol's messages and RPCs exactly as the descriptors
tritonclient[grpc] ships do (names, numbers, types, streaming), so neither can drift.

The stubs themselves are never imported here: they and tritonclient's would both register the
``inference`` package in protobuf's default pool, which one process refuses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from tritonclient.grpc import service_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "src" / "stratus" / "grpc_api" / "proto"
GENERATED = ("grpc_inference_pb2.py", "grpc_inference_pb2_grpc.py")


def test_regenerating_gives_the_checked_in_stubs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "tools" / "gen_grpc.sh"), str(tmp_path)], env=env,
                   check=True, capture_output=True, timeout=120)
    for name in GENERATED:
        fresh = (tmp_path / "stratus" / "grpc_api" / "proto" / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} is stale: run tools/gen_grpc.sh"


def _ours(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / "set.pb"
    code = protoc.main(["protoc", f"-I{ROOT / 'src'}", f"--descriptor_set_out={out}",
                        "stratus/grpc_api/proto/grpc_inference.proto"])
    assert code == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


def _messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, messages: list[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            name = f"{prefix}.{message.name}"
            found[name] = message
            walk(name, list(message.nested_type))

    walk(f".{file.package}", list(file.message_type))
    return found


def _fields(message: descriptor_pb2.DescriptorProto) -> list[tuple[object, ...]]:
    return sorted((f.number, f.name, f.type, f.label, f.type_name) for f in message.field)


def test_the_proto_matches_tritonclients(tmp_path: Path) -> None:
    ours = _ours(tmp_path)
    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == theirs.package == "inference"
    (service,) = ours.service
    (triton_service,) = theirs.service
    assert service.name == triton_service.name == "GRPCInferenceService"
    triton_methods = {m.name: m for m in triton_service.method}
    for method in service.method:
        other = triton_methods[method.name]
        assert (method.input_type, method.output_type, method.client_streaming,
                method.server_streaming) == (other.input_type, other.output_type,
                                             other.client_streaming, other.server_streaming)
    assert {m.name for m in service.method} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
        "ModelInfer", "ModelStreamInfer"}
    triton_messages = _messages(theirs)
    for name, message in _messages(ours).items():
        assert name in triton_messages, name
        assert _fields(message) == _fields(triton_messages[name]), name
        assert [o.name for o in message.oneof_decl] == \
            [o.name for o in triton_messages[name].oneof_decl], name


def test_a_process_can_import_both_stratus_and_tritonclient() -> None:
    """Stratus's messages live in a descriptor pool of their own: tritonclient registers the
    same ``inference`` package in protobuf's default pool, and an in-process test harness (or
    a user's program) that imports both failed with "duplicate symbol"."""
    probe = ("import tritonclient.grpc.service_pb2, stratus.server\n"
             "from stratus.grpc_api.proto import grpc_inference_pb2 as pb\n"
             "print(pb.ModelInferRequest(model_name='m').SerializeToString())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(b"\n\x01m")
