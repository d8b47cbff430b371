"""The OpenAPI document lists every status an operation answers, each error with its API's schema.

FastAPI documents what a route declares; errors that arise around the handler (keys, rate
limits, body limits, an unreachable store, validation) and the error bodies of the
documented APIs are added here, once, when the document is generated. A route declares its
own statuses with a description only (`responses={404: {"description": ...}}`); the schema
of every error status comes from the API the operation belongs to (errors.py).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from services.gateway.auth import PUBLIC_PATHS
from services.gateway.errors import DICETALK, ECHOFU, NATIVE, PLAIN, api_for

_SCHEMAS: dict[str, dict[str, Any]] = {
    NATIVE: {"title": "NativeError", "type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "description": "stable, for programs"},
            "message": {"type": "string", "description": "for people"},
            "detail": {"description": "more about the error (pydantic's errors for invalid parameters)"}}}}},
    DICETALK: {"title": "DiceTalkError", "type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "detail": {"description": "optional details"}}},
    ECHOFU: {"title": "EchofuError", "type": "object", "required": ["status", "message"], "properties": {
        "status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}}},
    PLAIN: {"title": "PlainError", "type": "object", "required": ["detail"], "properties": {
        "detail": {"description": "a message, or FastAPI's list of validation errors"}}},
}
_NAMES = {api: schema["title"] for api, schema in _SCHEMAS.items()}

# Statuses that arise around the handlers, and when they apply.
_AROUND = {
    401: "no API key, or an unknown one (when the server requires keys)",
    429: "the API key's rate limit is reached; see Retry-After",
    503: "the object store (or a service the request needs) is unavailable; see Retry-After",
}
_BODY = {
    400: "the request is malformed (for example JSON nested deeper than the limit)",
    413: "the body is larger than its limit",
}
_VALIDATED = {422: "a parameter or field is missing or invalid"}
# What a route's own statuses mean unless it says more.
_MEANING = {
    400: "the request cannot be carried out as it is; the message says why",
    404: "no such task or file (also when it belongs to another API key)",
    409: "conflicts with the state of the task, or with an earlier request of the same Idempotency-Key",
    413: "a file or the body is larger than its limit",
    415: "the body's content type is not accepted",
    416: "the requested byte range is outside the file",
    500: "the work failed on the server (the message says how); documented by this API",
    503: "the queue is full or a service is unavailable; see Retry-After",
}


def statuses(*codes: int, **described: str) -> dict[int | str, dict]:
    """`responses=` for a route's own error statuses: `statuses(400, 404)`, or with a meaning of its
    own: `statuses(404, s409="the job already ended")`. Their schemas are filled in by document_errors."""
    out: dict[int | str, dict] = {code: {"description": _MEANING[code]} for code in codes}
    out.update({int(name[1:]): {"description": text} for name, text in described.items()})
    return out
# Operations that answer without the store or any key.
_NO_STORE = {"/livez", "/metrics", "/api/status", "/readyz"}


def document_errors(schema: dict) -> dict:
    """Add the around-the-handler statuses and error schemas to every operation of `schema`."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for api, body in _SCHEMAS.items():
        components[_NAMES[api]] = body
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            api = api_for(operation.get("tags"), path)
            responses = operation.setdefault("responses", {})
            extra: dict[int, str] = {}
            if path not in PUBLIC_PATHS:
                extra.update({401: _AROUND[401], 429: _AROUND[429]})
            if path not in _NO_STORE:
                extra[503] = _AROUND[503]
            if "requestBody" in operation or method in ("post", "put", "patch"):
                extra.update(_BODY)
            if operation.get("parameters") or "requestBody" in operation:
                extra.update(_VALIDATED)
            for status, description in extra.items():
                responses.setdefault(str(status), {"description": description})
            ref = {"$ref": f"#/components/schemas/{_NAMES[api]}"}
            for status, response in responses.items():
                if status[0] in "45":
                    if status == "422" or "content" not in response:
                        response["content"] = {"application/json": {"schema": ref}}
    # FastAPI's own validation-error schemas are not what these APIs answer.
    for name in ("HTTPValidationError", "ValidationError"):
        if not _still_used(schema, name):
            components.pop(name, None)
    return schema


def _still_used(schema: dict, name: str) -> bool:
    target = f"#/components/schemas/{name}"
    others = {k: v for k, v in schema.get("components", {}).get("schemas", {}).items()
              if k not in ("HTTPValidationError", "ValidationError")}
    return target in json.dumps(schema.get("paths", {})) or target in json.dumps(others)


def install(app: FastAPI) -> None:
    """Make the app's /openapi.json carry the error statuses and schemas."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
