"""The Open Inference Protocol v2 (KServe / Triton) inference adapter:
``POST /v2/models/{name}[/versions/{v}]/infer``, JSON and binary tensors.

A model is a deployment; its versions are the deployment's live revisions.
"""

from __future__ import annotations

from stratus.dispatch.dispatcher import Invocation
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
    unit = parts.controller.get_unit(call.principal.namespace, name)
    number: int | None = None
    if version:
        if not version.isdigit() or int(version) not in unit.revisions:
            raise NotFound(f"model {name!r} has no live version {version!r}")
        number = int(version)
    else:
        number = call.pinned_revision()
    infer = parse_infer_request(call.body, call.headers.get(HEADER_LENGTH),
                                parts.settings.max_json_depth)
    live = unit.revisions.get(number if number is not None else unit.stable or unit.latest)
    meta = live.pool.meta if live is not None else {}
    if meta.get("kind") == "lambda":
        raise BadRequest(f"{name!r} is a Lambda-style handler; invoke it on the native route")
    check_declared_inputs(infer.inputs, (meta.get("options") or {}).get("inputs") or [])
    result = await parts.dispatcher.invoke(
        Invocation(
            namespace=unit.namespace,
            deployment=name,
            kind=wire.KIND_TENSORS,
            payload=infer.inputs,
            request_id=call.request_id,
            revision=number,
            headers=call.headers,
            protocol="v2",
        )
    )
    if result.kind != wire.KIND_TENSORS:
        raise BadRequest("the handler did not answer with tensors")
    content, headers = build_infer_response(name, str(result.revision), infer, result.payload)
    content_type = headers.pop("content-type").encode()
    extra = [(key.encode(), value.encode()) for key, value in headers.items()]
    return Reply(200, content, [*extra, *stratus_headers(result.revision, result.cold_start)],
                 content_type)
