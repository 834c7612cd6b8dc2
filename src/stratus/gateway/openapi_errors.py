"""The error answers in the OpenAPI document: every operation lists the error statuses it can
answer with, each in the error shape of its protocol (the contract's, OIP v2's or OpenAI's)."""

from __future__ import annotations

from typing import Any

from stratus.gateway.edge import is_public
from stratus.gateway.http import error_shape

_TEXT = {"type": "string"}
SCHEMAS: dict[str, dict[str, Any]] = {
    "contract": {"title": "Error", "type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["type", "message", "request_id"], "properties": {
            "type": _TEXT, "message": _TEXT, "request_id": _TEXT,
            "detail": {**_TEXT, "description": "a stack trace, for admins who ask for it"}}}}},
    "v2": {"title": "V2Error", "type": "object", "required": ["error", "error_type", "request_id"],
           "properties": {"error": _TEXT, "error_type": _TEXT, "request_id": _TEXT}},
    "openai": {"title": "OpenAIError", "type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["message", "type", "code", "request_id"],
                  "properties": {"message": _TEXT, "type": _TEXT, "code": _TEXT,
                                 "param": {"type": ["string", "null"]}, "request_id": _TEXT}}}},
}
DESCRIPTIONS = {
    "400": "Malformed input",
    "401": "Missing or invalid credentials",
    "403": "Not allowed",
    "404": "Unknown resource, or a namespace these credentials cannot reach",
    "409": "Conflicts with the current state",
    "413": "Payload too large",
    "429": "Rate limited, over quota or shed; retry after Retry-After seconds",
    "500": "Internal or handler error",
    "502": "The replica failed",
    "503": "Unavailable; retry after Retry-After seconds",
    "504": "Timed out",
    "507": "The server's storage is full: nothing was written; retry once space is freed",
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
CREDENTIALED = ("400", "401", "403", "404", "429")  # bad namespace header, auth, rate limits
WITH_BODY = ("413",)
WRITES = ("put", "post", "patch", "delete")  # any of them may meet a full disk (507)


def error_reference(shape: str) -> dict[str, Any]:
    """A ``$ref`` to the error body of ``shape``, for routes that declare an error status whose
    body may also be something else."""
    return {"$ref": f"#/components/schemas/{SCHEMAS[shape]['title']}"}


def _error_response(status: str, shape: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": DESCRIPTIONS.get(status, "Error"),
                                "content": {"application/json": {"schema": error_reference(shape)}}}
    if status in ("429", "503"):
        response["headers"] = RETRY_AFTER
    return response


def document_errors(document: dict[str, Any]) -> None:
    """Add the error responses to every operation of ``document``, in place.

    An error status an operation declares without a body schema gets its protocol's error
    shape; one it declares with a schema keeps it. FastAPI's 422 goes: validation errors are
    answered with 400.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for body in SCHEMAS.values():
        schemas[body["title"]] = body
    for path, item in document["paths"].items():
        shape = error_shape(path)
        for method, operation in item.items():
            # A copy: operations may share one responses object (the data plane's do).
            responses: dict[str, Any] = dict(operation.get("responses", {}))
            operation["responses"] = responses
            responses.pop("422", None)
            statuses = [] if is_public(path) else [*CREDENTIALED]
            if "requestBody" in operation or method in ("put", "post", "patch"):
                statuses += WITH_BODY
            if method in WRITES and not is_public(path):
                statuses.append("507")
            statuses += [s for s in responses if s[:1] in ("4", "5")]
            for status in statuses:
                declared = responses.get(status, {})
                content = declared.get("content", {}).get("application/json", {})
                if not content.get("schema"):
                    responses[status] = {**_error_response(status, shape),
                                         **{k: v for k, v in declared.items() if k != "content"}}
    if not any("HTTPValidationError" in str(item) for item in document["paths"].values()):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
