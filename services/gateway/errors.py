"""HTTP errors in the shape of the API a client speaks.

DICE-Talk answers `{"error": ..., "detail": ...}`; the EchoMimic and LatentSync wrappers are
plain FastAPI servers and answer `{"detail": ...}`. Each router raises ApiError with the
body its clients expect.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An HTTP error with its exact JSON body."""

    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None):
        super().__init__(body)
        self.status = status
        self.body = body
        self.headers = headers


def dicetalk_error(status: int, error: str, detail: object = None, headers=None) -> ApiError:
    body = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return ApiError(status, body, headers)


def fastapi_error(status: int, detail: object, headers=None) -> ApiError:
    return ApiError(status, {"detail": detail}, headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{k: v for k, v in e.items() if k != "ctx"} for e in exc.errors()]
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "Invalid request", "detail": errors}, status_code=422)
        return JSONResponse({"detail": errors}, status_code=422)
