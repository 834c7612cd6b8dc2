"""``inference.GRPCInferenceService``: the Open Inference Protocol's RPCs over gRPC.

An inference becomes the same ``Invocation`` the HTTP v2 adapter makes: the dispatcher
chooses the revision (``model_version`` pins one), the chosen revision's declared inputs are
checked, and the run goes through the same pools, so routing, splits, cold starts, batching,
quotas, metering, tracing and audit apply as they do over HTTP. The client's deadline bounds
the invocation; a call that is cancelled cancels it, as an HTTP disconnect does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import grpc

from stratus.dispatch.dispatcher import Choice, Invocation
from stratus.errors import BadRequest, RequestTimeout, StratusError
from stratus.gateway.adapters import v2_models
from stratus.gateway.adapters.v2 import version_revision
from stratus.gateway.adapters.v2_codec import check_declared_inputs
from stratus.gateway.authz import DATA_PLANE
from stratus.gateway.http import REVISION_HEADER, pinned_revision
from stratus.gateway.state import Components
from stratus.gateway.streaming import InvocationStream
from stratus.grpc_api.edge import Edge, GrpcCall, log, remaining_s
from stratus.grpc_api.proto import grpc_inference_pb2 as pb
from stratus.grpc_api.proto import grpc_inference_pb2_grpc as pb_grpc
from stratus.grpc_api.status import REQUEST_ID_KEY, REVISION_KEY
from stratus.grpc_api.tensors import build_response, parse_inputs
from stratus.resilience.priority import PRIORITY_HEADER, request_priority
from stratus.runtime import wire
from stratus.security.roles import Permission

COLD_START_KEY = "x-stratus-cold-start"
ATTEMPTS_KEY = "x-stratus-attempts"  # how many times it was sent to a replica (retries)
DEADLINE_GRACE_S = 0.05


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, parts: Components, edge: Edge) -> None:
        self.parts = parts
        self.edge = edge

    # -- health and metadata ------------------------------------------------------------
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.parts.ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self.edge.call(context, "ServerMetadata", Permission.AUTHENTICATED):
            return pb.ServerMetadataResponse(**v2_models.server_metadata())
        return None  # the edge aborted the call

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self.edge.call(context, "ModelMetadata", Permission.AUTHENTICATED) as call:
            version = request.version or None
            unit = v2_models.find_model(self.parts.controller, call.principal.namespace,
                                        request.name, version)
            return pb.ModelMetadataResponse(**v2_models.model_metadata(unit, version))
        return None

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self.edge.call(context, "ModelReady", Permission.AUTHENTICATED) as call:
            version = request.version or None
            unit = v2_models.find_model(self.parts.controller, call.principal.namespace,
                                        request.name, version)
            return pb.ModelReadyResponse(ready=v2_models.is_ready(unit, version))
        return None

    # -- inference ----------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self.edge.call(context, "ModelInfer", DATA_PLANE) as call:
            choice, invocation, raw = self._prepare(call, request, remaining_s(context))
            streamed: list[Any] = []
            invocation = replace(invocation,
                                 on_chunk=lambda kind, payload: streamed.append(payload))
            result = await _bounded(self.parts.dispatcher.run(choice, invocation),
                                    invocation.deadline)
            if streamed:
                raise BadRequest(f"model {request.model_name!r} streams its answer; "
                                 "call it with ModelStreamInfer")
            if result.kind != wire.KIND_TENSORS:
                raise BadRequest("the handler did not answer with tensors")
            context.set_trailing_metadata(_served(call, result.revision, result.cold_start,
                                                  result.attempts))
            return build_response(request.model_name, str(result.revision), request,
                                  result.payload, raw)
        return None

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Each request on the stream runs as it arrives; a handler that streams answers
        with one response per item, any other with one response. A request that fails
        answers with ``error_message`` and the stream goes on, as Triton's does."""
        async with self.edge.call(context, "ModelStreamInfer", DATA_PLANE) as call:
            deadline = remaining_s(context)
            responses: asyncio.Queue[Any] = asyncio.Queue()
            tasks: set[asyncio.Task[None]] = set()
            end = object()
            reading = True

            def finished(task: asyncio.Task[None]) -> None:
                tasks.discard(task)
                if not reading and not tasks:
                    responses.put_nowait(end)

            async def read() -> None:
                nonlocal reading
                try:
                    async for request in request_iterator:
                        task = asyncio.create_task(self._one_on_stream(
                            call, request, deadline, responses.put_nowait))
                        tasks.add(task)
                        task.add_done_callback(finished)
                finally:
                    reading = False
                    if not tasks:
                        responses.put_nowait(end)

            reader = asyncio.create_task(read())
            try:
                while (item := await responses.get()) is not end:
                    yield item
                await reader  # a stream that broke off ends with its error
            finally:
                for task in (reader, *tasks):
                    task.cancel()
                for task in (reader, *tasks):
                    with contextlib.suppress(BaseException):
                        await task

    async def _one_on_stream(self, call: GrpcCall, request: Any, remaining: float | None,
                             put: Callable[[Any], None]) -> None:
        try:
            refused = self.edge.guard.check_rate(call.principal)
            if refused is not None:
                raise refused
            choice, invocation, raw = self._prepare(call, request, remaining)
            stream = InvocationStream(self.parts.dispatcher, choice, invocation)
            try:
                async for _, payload in _bounded_items(stream, invocation.deadline):
                    put(pb.ModelStreamInferResponse(infer_response=build_response(
                        request.model_name, str(stream.revision), request, payload, raw)))
                result = await stream.result()
                if result.kind == wire.KIND_TENSORS:
                    put(pb.ModelStreamInferResponse(infer_response=build_response(
                        request.model_name, str(result.revision), request, result.payload, raw)))
            finally:
                await stream.close()
        except StratusError as error:
            put(pb.ModelStreamInferResponse(
                error_message=error.message,
                infer_response=pb.ModelInferResponse(model_name=request.model_name,
                                                     id=request.id)))
        except Exception:
            log.exception("unhandled error on a ModelStreamInfer request")
            put(pb.ModelStreamInferResponse(error_message="internal server error"))

    def _prepare(self, call: GrpcCall, request: Any,
                 remaining: float | None) -> tuple[Choice, Invocation, bool]:
        """Choose the revision, then check the inputs against what *it* declares."""
        namespace, name = call.principal.namespace, request.model_name
        dispatcher = self.parts.dispatcher
        pinned = (version_revision(dispatcher, namespace, name, request.model_version)
                  if request.model_version else pinned_revision(call.metadata.get(REVISION_HEADER)))
        choice = dispatcher.choose(namespace, name, pinned, call.metadata, None)
        inputs, raw = parse_inputs(request)
        meta = choice.pool.meta
        if meta.get("kind") == "lambda":
            raise BadRequest(f"{name!r} is a Lambda-style handler; invoke it on the native route")
        check_declared_inputs(inputs, (meta.get("options") or {}).get("inputs") or [])
        deadline = time.monotonic() + remaining if remaining is not None else None
        principal = call.principal  # the same rule as HTTP's: the metadata, within its key's
        priority = request_priority(call.metadata.get(PRIORITY_HEADER), principal.priority,
                                    principal.max_priority)
        return choice, Invocation(kind=wire.KIND_TENSORS, payload=inputs,
                                  request_id=call.request_id, protocol="grpc",
                                  deadline=deadline, priority=priority), raw


def _served(call: GrpcCall, revision: int, cold_start: bool,
            attempts: int) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_KEY, call.request_id), (REVISION_KEY, str(revision)),
            (COLD_START_KEY, "true" if cold_start else "false"),
            (ATTEMPTS_KEY, str(attempts)))


def _expired() -> RequestTimeout:
    return RequestTimeout("the call's deadline passed before the model answered")


async def _bounded(awaitable: Any, deadline: float | None) -> Any:
    """Await ``awaitable`` until the call's deadline: a request still queued for a slot then
    is given up. The dispatcher bounds the replica's answer by the deadline itself, and
    records it as a timeout; the grace lets it be first."""
    if deadline is None:
        return await awaitable
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.0) + DEADLINE_GRACE_S):
            return await awaitable
    except TimeoutError:
        raise _expired() from None


async def _bounded_items(stream: InvocationStream,
                         deadline: float | None) -> AsyncIterator[tuple[int, Any]]:
    """A stream's items until the call's deadline."""
    while True:
        item = await _bounded(stream.next_item(), deadline)
        if item is None:
            return
        yield item
