"""HTTP errors in the shape of the API a client speaks, wherever they arise.

Each API has its own error body: talkserve's own `{"error": {"code", "message"}}`, DICE-Talk's
`{"error": ..., "detail": ...}`, EchOfU's `{"status": "error", "message": ...}`, and the plain
FastAPI `{"detail": ...}` of the EchoMimic and LatentSync wrappers. The API of a request is
the one of the route it matches (by the router's tag), so errors raised before a handler
runs (keys, rate limits, body limits) and errors no handler expected (validation, an
unreachable store, a bug) answer in the same shape as the handler's own.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from libs.store.client import StoreUnavailable

log = logging.getLogger(__name__)

NATIVE, DICETALK, ECHOFU, PLAIN = "native", "dicetalk", "echofu", "plain"
_TAG_API = {"Jobs": NATIVE, "DICE-Talk": DICETALK, "EchOfU": ECHOFU}
# The EchoMimic and LatentSync wrappers' answer for a task they do not know ({"detail": ...}).
TASK_NOT_FOUND = "任务不存在"
# How long a client should wait before trying again while the store is unreachable.
STORE_RETRY_AFTER = "5"


class ApiError(Exception):
    """An HTTP error with its exact JSON body."""

    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None):
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers


def dicetalk_error(status: int, error: str, detail: object = None,
                   headers: dict[str, str] | None = None) -> ApiError:
    body: dict[str, object] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return ApiError(status, body, headers)


def fastapi_error(status: int, detail: object, headers=None) -> ApiError:
    return ApiError(status, {"detail": detail}, headers)


def route_of(scope: Scope):
    """The route a request goes to (a full match, else one that matches the path only), or None."""
    app = scope.get("app")
    partial = None
    for route in getattr(getattr(app, "state", None), "api_routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial


def api_for(tags, path: str) -> str:
    """The API of an operation with these OpenAPI tags at this path."""
    for tag in tags or ():
        if tag in _TAG_API:
            return _TAG_API[tag]
    return NATIVE if path.startswith("/v1/") else PLAIN


def api_of(scope: Scope) -> str:
    """Which API's error shape a request gets."""
    return api_for(getattr(route_of(scope), "tags", None), scope.get("path", ""))


def error_body(api: str, code: str, message: str, detail: object = None) -> dict:
    """An error's body in one API's shape; `code` is kept where the shape has room for it."""
    if api == NATIVE:
        body: dict = {"code": code, "message": message}
        if detail is not None:
            body["detail"] = detail
        return {"error": body}
    if api == DICETALK:
        return {"error": message, **({"detail": detail} if detail is not None else {})}
    if api == ECHOFU:
        return {"status": "error", "message": message}
    return {"detail": message if detail is None else detail}


def error_response(scope: Scope, status: int, code: str, message: str, detail: object = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error answer in the shape of the request's API."""
    return JSONResponse(error_body(api_of(scope), code, message, detail), status_code=status, headers=headers)


def _json_safe(errors: list[dict]) -> list[dict]:
    """Validation errors without what cannot be sent back: the raw input when it is not plain
    JSON (the bytes of a form body) or large (a whole oversized value), and pydantic's context."""
    safe = []
    for error in errors:
        entry = {k: v for k, v in error.items() if k not in ("ctx", "input", "url")}
        value = error.get("input")
        if value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 200):
            entry["input"] = value
        entry["loc"] = [p if isinstance(p, (str, int)) else str(p) for p in error.get("loc", ())]
        safe.append(entry)
    return safe


def install_handlers(app: FastAPI, routers: list) -> None:
    """Answer every error in its API's shape; `routers` are the APIRouters the app includes."""
    # The routes as their routers declare them (with their tags), for route_of.
    app.state.api_routes = [route for router in routers for route in router.routes]

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = _json_safe(list(exc.errors()))
        api = api_of(request.scope)
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        message = f"{where}: {first.get('msg', 'invalid')}"
        if api == DICETALK:
            return JSONResponse({"error": "Invalid request", "detail": errors}, status_code=422)
        if api == NATIVE:
            return JSONResponse(error_body(api, "invalid_parameter", message, errors), status_code=422)
        if api == ECHOFU:
            return JSONResponse(error_body(api, "invalid_parameter", message), status_code=422)
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(request.scope, exc.status_code, code, message, headers=headers)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(request.scope, 503, "store_unavailable",
                              "The object store is unavailable; try again shortly.",
                              headers={"Retry-After": STORE_RETRY_AFTER})

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(request.scope, 500, "internal", "Internal server error")
