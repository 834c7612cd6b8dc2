"""Tensors of a gRPC inference: a ``ModelInferRequest``'s inputs as the wire's tensors, and a
handler's outputs as a ``ModelInferResponse``.

``raw_input_contents`` pass through as the bytes they arrived as (the replica rebuilds them
with ``np.frombuffer``); a BYTES tensor's raw form is Triton's, each element a 4-byte
little-endian length and its bytes. Outputs go back raw when the request came raw, as
Triton answers, else as typed ``contents``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stratus.errors import InvalidTensor, UnencodableOutput
from stratus.gateway.adapters.v2_codec import pack_bytes, unpack_bytes
from stratus.grpc_api.proto import grpc_inference_pb2 as pb
from stratus.runtime.tensors import (
    BYTES,
    DATATYPES,
    NUMERIC_DATATYPES,
    WireTensor,
    check_shape,
    element_count,
)

# The typed ``contents`` field that carries each datatype; FP16 has none (raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def parse_inputs(request: Any) -> tuple[dict[str, WireTensor], bool]:
    """The request's input tensors, and whether they came as ``raw_input_contents``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidTensor(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: "
                            "raw contents must be given for every input or for none")
    inputs: dict[str, WireTensor] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise InvalidTensor(f"input {name!r} is given twice")
        datatype = tensor.datatype
        if datatype not in DATATYPES:
            raise InvalidTensor(f"input {name!r}: unsupported datatype {datatype!r}")
        shape = check_shape(name, list(tensor.shape))
        if raw:
            if tensor.HasField("contents"):
                raise InvalidTensor(f"input {name!r} has contents as well as raw_input_contents")
            inputs[name] = _raw_tensor(name, datatype, shape, raw[index])
        elif tensor.HasField("contents"):
            inputs[name] = _typed_tensor(name, datatype, shape, tensor.contents)
        else:
            raise InvalidTensor(f"input {name!r} has neither contents nor raw_input_contents")
    return inputs, bool(raw)


def _raw_tensor(name: str, datatype: str, shape: list[int], data: bytes) -> WireTensor:
    count = element_count(shape)
    if datatype == BYTES:
        return [BYTES, shape, unpack_bytes(name, memoryview(data), count)]
    expected = count * NUMERIC_DATATYPES[datatype].itemsize
    if len(data) != expected:
        raise InvalidTensor(f"input {name!r}: {len(data)} bytes for shape {shape} of {datatype} "
                            f"(expected {expected})")
    return [datatype, shape, data]


def _typed_tensor(name: str, datatype: str, shape: list[int], contents: Any) -> WireTensor:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidTensor(f"input {name!r}: {datatype} travels only as raw_input_contents")
    values = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidTensor(f"input {name!r}: {len(values)} elements in {field} for shape {shape}")
    if datatype == BYTES:
        return [BYTES, shape, list(values)]
    dtype = NUMERIC_DATATYPES[datatype]
    if dtype.kind in "iu" and count:
        array = np.asarray(values, dtype=np.int64 if dtype.kind == "i" else np.uint64)
        limits = np.iinfo(dtype)
        if int(array.min()) < limits.min or int(array.max()) > limits.max:
            raise InvalidTensor(f"input {name!r}: values outside the range of {datatype}")
        return [datatype, shape, array.astype(dtype).tobytes()]
    return [datatype, shape, np.asarray(values, dtype=dtype).tobytes()]


def build_response(model_name: str, model_version: str, request: Any,
                   outputs: dict[str, WireTensor], raw: bool) -> Any:
    """The ``ModelInferResponse`` of a handler's outputs: those the request asked for (all
    when it named none), raw when ``raw`` or when a datatype has no typed field."""
    wanted = [output.name for output in request.outputs] or list(outputs)
    for name in wanted:
        if name not in outputs:
            raise UnencodableOutput(f"requested output {name!r} was not produced")
    raw = raw or any(outputs[name][0] not in CONTENTS_FIELD for name in wanted)
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version,
                                     id=request.id)
    for name in wanted:
        datatype, shape, data = outputs[name]
        entry = response.outputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            response.raw_output_contents.append(pack_bytes(data) if datatype == BYTES else data)
        elif datatype == BYTES:
            entry.contents.bytes_contents.extend(data)
        else:
            array = np.frombuffer(data, dtype=NUMERIC_DATATYPES[datatype])
            getattr(entry.contents, CONTENTS_FIELD[datatype]).extend(array.tolist())
    return response
