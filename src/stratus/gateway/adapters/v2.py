"""The Open Inference Protocol v2 (KServe / Triton) inference adapter:
``POST /v2/models/{name}[/versions/{v}]/infer``, JSON and binary tensors.

A model is a deployment; its versions are the deployment's live revisions.
"""

from __future__ import annotations

from stratus.dispatch.dispatcher import Dispatcher, Invocation
from stratus.errors import BadRequest, NotFound
from stratus.gateway.adapters.v2_codec import (
    HEADER_LENGTH,
    build_infer_response,
    check_declared_inputs,
    parse_infer_request,
)
from stratus.gateway.http import Call, Reply, stratus_headers
from stratus.gateway.state import Components
from stratus.runtime import wire


async def v2_infer(parts: Components, call: Call) -> Reply:
    """``POST /v2/models/{name}[/versions/{v}]/infer`` (served by the data plane)."""
    name, version = call.params
    namespace = call.principal.namespace
    dispatcher = parts.dispatcher
    pinned = version_revision(dispatcher, namespace, name, version) if version else call.pinned_revision()
    # The request's JSON is where a sticky field is read from; a binary body has none.
    choice = dispatcher.choose(namespace, name, pinned, call.headers, call.body)
    infer = parse_infer_request(call.body, call.headers.get(HEADER_LENGTH),
                                parts.settings.max_json_depth)
    # Checked against the revision that will serve, which a split may make a canary.
    meta = choice.pool.meta
    if meta.get("kind") == "lambda":
        raise BadRequest(f"{name!r} is a Lambda-style handler; invoke it on the native route")
    check_declared_inputs(infer.inputs, (meta.get("options") or {}).get("inputs") or [])
    result = await dispatcher.run(choice, Invocation(
        kind=wire.KIND_TENSORS, payload=infer.inputs, request_id=call.request_id, protocol="v2",
        priority=call.priority(), deadline=call.deadline()))
    if result.kind != wire.KIND_TENSORS:
        raise BadRequest("the handler did not answer with tensors")
    content, headers = build_infer_response(name, str(result.revision), infer, result.payload)
    content_type = headers.pop("content-type").encode()
    extra = [(key.encode(), value.encode()) for key, value in headers.items()]
    served = stratus_headers(result.revision, result.cold_start, result.attempts)
    return Reply(200, content, [*extra, *served], content_type)


def version_revision(dispatcher: Dispatcher, namespace: str, name: str, version: str) -> int:
    """The revision a ``/versions/{v}`` path names, which must be live; a live one that takes
    no traffic is refused by ``choose``, as a pinned request is."""
    if version.isascii() and version.isdigit() and dispatcher.is_live(namespace, name, int(version)):
        return int(version)
    dispatcher.route_for(namespace, name)  # an unknown model is a 404 of its own
    raise NotFound(f"model {name!r} has no live version {version!r}")
