"""One load-generator process of ``bench/grpc.py``: many in-flight inference calls, plain
``grpc.aio`` unary calls or aiohttp POSTs, of one request that tritonclient built once.

    python bench/grpc_client.py --protocol grpc --url 127.0.0.1:8001 --model digits \
        --payload digits --streams 16 --warmup 2 --duration 10

Line protocol with the harness: once set up and one call has succeeded it prints ``ready``
(or ``{"fatal": ...}`` and exits 2 when the server does not answer within
``--connect-timeout``); on the line ``go`` on stdin it warms up for ``--warmup`` s, measures
for ``--duration`` s and prints one JSON report. ``$BENCH_AUTHORIZATION`` becomes the
``authorization`` header (gRPC metadata). The request is serialised once, not per call, so
the client's CPU goes to the transport and to parsing answers (with tritonclient's
``InferResult``), and a 200 MB JSON body costs the client no seconds of encoding.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds bench/grpc.py, which would shadow the grpcio package: look here last.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.append(sys.path.pop(0))

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from grpc_stats import measured_window

PROTOCOLS = ("grpc", "http-json", "http-binary")
OUTPUTS = {"digits": ("digit", "probabilities"), "images": ("mean",)}
CHECKED = {"digits": "probabilities", "images": "mean"}  # compared across targets by the harness
ERROR_SAMPLES = 3


def payload(kind: str, batch: int) -> tuple[str, np.ndarray]:
    """The input tensor: digits' sample 7 (FP32 [1, 64]) or seeded images (FP32 [batch, 3, 224, 224])."""
    if kind == "digits":
        from sklearn.datasets import load_digits

        return "pixels", load_digits().data[7:8].astype(np.float32)
    rng = np.random.default_rng(0)
    return "images", rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)


Call = Callable[[], Awaitable[Any]]
MAX_MESSAGE = 2**31 - 1
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def grpc_call(args: argparse.Namespace, name: str, tensor: np.ndarray,
              headers: dict[str, str]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """A plain ``grpc.aio`` unary call of a request serialised once: tensors in
    ``raw_input_contents``, the answer parsed by tritonclient's ``InferResult``."""
    import grpc
    from tritonclient.grpc import InferResult, service_pb2

    request = service_pb2.ModelInferRequest(
        model_name=args.model,
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype="FP32",
                                                                shape=list(tensor.shape))],
        raw_input_contents=[tensor.tobytes()],
    ).SerializeToString()
    options = [("grpc.max_send_message_length", MAX_MESSAGE),
               ("grpc.max_receive_message_length", MAX_MESSAGE)]
    channel = grpc.aio.insecure_channel(args.url, options=options)
    infer = channel.unary_unary(GRPC_INFER, request_serializer=lambda body: body,
                                response_deserializer=service_pb2.ModelInferResponse.FromString)
    metadata = tuple(headers.items())

    async def call() -> Any:
        return InferResult(await infer(request, metadata=metadata, timeout=args.call_timeout))

    return call, channel.close


def http_call(args: argparse.Namespace, name: str, tensor: np.ndarray,
              headers: dict[str, str]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """An aiohttp POST of a v2 body that tritonclient made once (JSON tensors, or with
    ``http-binary`` the binary tensor extension); the answer parsed by tritonclient."""
    import aiohttp
    import tritonclient.http as httpclient

    binary = args.protocol == "http-binary"
    http_input = httpclient.InferInput(name, list(tensor.shape), "FP32")
    http_input.set_data_from_numpy(tensor, binary_data=binary)
    requested = [httpclient.InferRequestedOutput(out, binary_data=binary) for out in OUTPUTS[args.payload]]
    body, json_size = httpclient.InferenceServerClient.generate_request_body([http_input], outputs=requested)
    # Every target answers uncompressed (MLServer gzips for aiohttp's default Accept-Encoding).
    headers = {**headers, "accept-encoding": "identity"}
    if json_size is None:
        headers["content-type"] = "application/json"
    else:
        headers["content-type"] = "application/octet-stream"
        headers["inference-header-content-length"] = str(json_size)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.streams),
                                    timeout=aiohttp.ClientTimeout(total=args.call_timeout))
    url = f"http://{args.url}/v2/models/{args.model}/infer"

    async def call() -> Any:
        async with session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {answer[:300]!r}")
            length = response.headers.get("inference-header-content-length")
            return httpclient.InferenceServerClient.parse_response_body(
                answer, header_length=int(length) if length else None)

    return call, session.close


def make_call(args: argparse.Namespace, name: str, tensor: np.ndarray,
              headers: dict[str, str]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The inference call and the client's close, for ``args.protocol``."""
    maker = grpc_call if args.protocol == "grpc" else http_call
    return maker(args, name, tensor, headers)


def check_values(result: Any, kind: str) -> list[float]:
    values = np.asarray(result.as_numpy(CHECKED[kind]), dtype=np.float64).ravel()[:16]
    return [round(float(v), 6) for v in values]


async def first_call(call: Call, patience_s: float) -> Any:
    """Retry until the server answers (it may still be binding its port)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await call()
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
            await asyncio.sleep(0.25)


async def measure(call: Call, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter() + args.warmup
    end = start + args.duration
    hard_end = start + max(args.duration, args.max_window)
    completions: list[tuple[float, float]] = []
    errors: list[str] = []
    cpu: dict[str, float] = {}

    def finished() -> bool:
        now = time.perf_counter()
        return now >= hard_end or (now >= end and len(completions) >= args.min_requests)

    async def stream() -> None:
        while not finished():
            began = time.perf_counter()
            try:
                await call()
            except Exception as exc:
                if time.perf_counter() >= start:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                await asyncio.sleep(0.01)  # a refusing server must not become a busy loop
                continue
            ended = time.perf_counter()
            if ended >= start:
                completions.append((ended, (ended - began) * 1e3))

    async def cpu_clock() -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu["end"] = time.process_time()

    clock = asyncio.create_task(cpu_clock())
    await asyncio.gather(*(stream() for _ in range(args.streams)))
    await clock
    window = measured_window(completions, start, args.duration, args.min_requests)
    return {
        "pid": os.getpid(),
        "streams": args.streams,
        "window_s": window.seconds,
        "extended": window.extended,
        "latencies_ms": [round(latency, 4) for latency in window.latencies_ms],
        "errors": len(errors),
        "error_samples": errors[:ERROR_SAMPLES],
        "cpu_s": cpu["end"] - cpu["start"],
    }


async def run(args: argparse.Namespace) -> int:
    name, tensor = payload(args.payload, args.batch)
    auth = os.environ.get("BENCH_AUTHORIZATION")
    headers = {"authorization": auth} if auth else {}
    call, close = make_call(args, name, tensor, headers)
    try:
        try:
            first = await first_call(call, args.connect_timeout)
        except RuntimeError as exc:
            print(json.dumps({"fatal": f"no answer from {args.protocol}://{args.url} "
                                       f"(model {args.model}) in {args.connect_timeout:g}s: {exc}"}),
                  flush=True)
            return 2
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            return 1
        report = await measure(call, args)
        report["check"] = check_values(first, args.payload)
        report["request_tensor_bytes"] = tensor.nbytes
        print(json.dumps(report), flush=True)
        return 0
    finally:
        await close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True)
    parser.add_argument("--url", required=True, help="host:port")
    parser.add_argument("--model", required=True, help="the served model's name")
    parser.add_argument("--payload", choices=tuple(OUTPUTS), required=True)
    parser.add_argument("--batch", type=int, default=64, help="images per request (--payload images)")
    parser.add_argument("--streams", type=int, default=1, help="calls in flight at once")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--min-requests", type=int, default=3, help="stretch the window to this many calls")
    parser.add_argument("--max-window", type=float, default=120.0, help="...but no longer than this (s)")
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument("--call-timeout", type=float, default=300.0)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(run(parse_args())))
