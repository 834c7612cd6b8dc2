"""Open Inference Protocol v2 bodies: JSON tensors and the binary tensor data extension.

With the binary extension, the body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by each binary tensor in order; a BYTES tensor's elements are each
prefixed by their 4-byte little-endian length.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stratus.errors import InvalidJSON, InvalidTensor, UnencodableOutput
from stratus.runtime.tensors import (
    BYTES,
    DATATYPES,
    NUMERIC_DATATYPES,
    WireTensor,
    check_shape,
    element_count,
)
from stratus.security.jsondepth import DEFAULT_MAX_DEPTH, check_depth

HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, WireTensor]
    requested: list[tuple[str, bool]] | None  # (name, binary) per requested output
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def unpack_bytes(name: str, data: memoryview, count: int) -> list[bytes]:
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidTensor(f"input {name!r}: truncated BYTES element length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidTensor(f"input {name!r}: BYTES element overruns its data")
        items.append(bytes(data[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidTensor(f"input {name!r}: {len(items)} BYTES elements for {count} in its shape")
    return items


def pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def _json_tensor(name: str, datatype: str, shape: list[int], data: Any) -> WireTensor:
    count = element_count(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == BYTES:
        flat = np.asarray(data, dtype=object).reshape(-1) if data else np.empty(0, dtype=object)
        if flat.size != count:
            raise InvalidTensor(f"input {name!r}: {flat.size} elements for shape {shape}")
        items = [item.encode() if isinstance(item, str) else item for item in flat]
        if not all(isinstance(item, bytes) for item in items):
            raise InvalidTensor(f"input {name!r}: BYTES data must be strings")
        return [BYTES, shape, items]
    try:
        array = np.asarray(data)
    except ValueError as exc:
        raise InvalidTensor(f"input {name!r}: data is not a rectangular array: {exc}") from None
    if array.size != count:
        raise InvalidTensor(f"input {name!r}: {array.size} elements do not fit shape {shape}")
    target = NUMERIC_DATATYPES[datatype]
    kind = array.dtype.kind
    allowed = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}[target.kind]
    if array.size and kind not in allowed:
        raise InvalidTensor(f"input {name!r}: {array.dtype} values cannot be {datatype}")
    if array.size and target.kind in "iu" and kind in "iu":
        limits = np.iinfo(target)
        if int(array.min()) < limits.min or int(array.max()) > limits.max:
            raise InvalidTensor(f"input {name!r}: values outside the range of {datatype}")
    with np.errstate(over="ignore"):  # overflow is detected just below, and refused
        converted = np.ascontiguousarray(array, dtype=target)
    if target.kind == "f" and np.isinf(converted).sum() > np.isinf(array).sum():
        raise InvalidTensor(f"input {name!r}: values outside the range of {datatype}")
    return [datatype, shape, converted.tobytes()]


def parse_infer_request(body: bytes, header_length: str | None,
                        max_depth: int = DEFAULT_MAX_DEPTH) -> InferRequest:
    binary = memoryview(b"")
    header = body
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise InvalidTensor(f"{HEADER_LENGTH} of {header_length!r} does not fit the body")
        split = int(header_length)
        header, binary = body[:split], memoryview(body)[split:]
    check_depth(header, max_depth)
    try:
        document = json.loads(header)
    except ValueError as exc:
        raise InvalidJSON(f"inference request is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise InvalidTensor("an inference request needs an 'inputs' list")
    inputs: dict[str, WireTensor] = {}
    offset = 0
    for entry in document["inputs"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidTensor("every input needs a 'name'")
        name = entry["name"]
        if name in inputs:
            raise InvalidTensor(f"input {name!r} is given twice")
        datatype = entry.get("datatype")
        if datatype not in DATATYPES:
            raise InvalidTensor(f"input {name!r}: unsupported datatype {datatype!r}")
        shape = check_shape(name, entry.get("shape"))
        parameters = entry.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidTensor(f"input {name!r}: binary_data_size {size!r} overruns the body")
            chunk = binary[offset : offset + size]
            offset += size
            if datatype == BYTES:
                inputs[name] = [BYTES, shape, unpack_bytes(name, chunk, element_count(shape))]
            else:
                expected = element_count(shape) * NUMERIC_DATATYPES[datatype].itemsize
                if size != expected:
                    raise InvalidTensor(
                        f"input {name!r}: {size} bytes for shape {shape} of {datatype} "
                        f"(expected {expected})"
                    )
                inputs[name] = [datatype, shape, bytes(chunk)]
        elif "data" in entry:
            inputs[name] = _json_tensor(name, datatype, shape, entry["data"])
        else:
            raise InvalidTensor(f"input {name!r} has neither 'data' nor binary data")
    if offset != len(binary):
        raise InvalidTensor(f"{len(binary) - offset} bytes of binary data belong to no input")
    parameters = document.get("parameters") or {}
    requested = None
    if isinstance(document.get("outputs"), list):
        requested = []
        for output in document["outputs"]:
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise InvalidTensor("every requested output needs a 'name'")
            output_parameters = output.get("parameters") or {}
            if not isinstance(output_parameters, dict):
                raise InvalidTensor(f"output {output['name']!r}: 'parameters' must be an object")
            requested.append((output["name"], bool(output_parameters.get("binary_data"))))
    request_id = document.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        requested=requested,
        binary_output=bool(isinstance(parameters, dict) and parameters.get("binary_data_output")),
        parameters=parameters if isinstance(parameters, dict) else {},
    )


def check_declared_inputs(inputs: dict[str, WireTensor], declared: list[dict[str, Any]]) -> None:
    """Enforce the deployment's declared signature: names, datatypes and shapes (-1 = any)."""
    if not declared:
        return
    names = {spec["name"] for spec in declared}
    for extra in inputs.keys() - names:
        raise InvalidTensor(f"unknown input {extra!r}; this model takes {sorted(names)}")
    for spec in declared:
        name = spec["name"]
        if name not in inputs:
            raise InvalidTensor(f"missing input {name!r}")
        datatype, shape, _ = inputs[name]
        if datatype != spec["datatype"]:
            raise InvalidTensor(f"input {name!r} must be {spec['datatype']}, not {datatype}")
        expected = spec["shape"]
        if len(shape) != len(expected) or any(
            want != -1 and want != got for want, got in zip(expected, shape, strict=True)
        ):
            raise InvalidTensor(f"input {name!r} has shape {shape}; the model expects {expected}")


def _json_data(name: str, tensor: WireTensor) -> list[Any]:
    datatype, _, data = tensor
    if datatype == BYTES:
        try:
            return [item.decode() for item in data]
        except UnicodeDecodeError:
            raise UnencodableOutput(
                f"output {name!r} holds non-UTF-8 bytes; request it as binary data"
            ) from None
    array = np.frombuffer(data, dtype=NUMERIC_DATATYPES[datatype])
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UnencodableOutput(
            f"output {name!r} holds NaN or infinity, which JSON cannot carry; request binary data"
        )
    values: list[Any] = array.tolist()
    return values


def build_infer_response(
    model_name: str, model_version: str, request: InferRequest, outputs: dict[str, WireTensor]
) -> tuple[bytes, dict[str, str]]:
    """Encode the handler's outputs as the v2 response; returns the body and extra headers."""
    if request.requested is not None:
        selected = []
        for name, binary in request.requested:
            if name not in outputs:
                raise UnencodableOutput(f"requested output {name!r} was not produced")
            selected.append((name, binary or request.binary_output))
    else:
        selected = [(name, request.binary_output) for name in outputs]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in selected:
        datatype, shape, data = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            blob = pack_bytes(data) if datatype == BYTES else bytes(data)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(name, outputs[name])
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version,
                                "outputs": entries}
    if request.id is not None:
        document["id"] = request.id
    header = json.dumps(document).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
