"""Map talkserve errors to gRPC status codes and back, carrying a stable error code."""

from __future__ import annotations

import grpc

from libs.store.client import StoreUnavailable
from libs.talkface import api

ERROR_CODE_KEY = "talkserve-error-code"

_CLIENT_FAULTS = (api.BadImageError, api.NoFaceError, api.BadAudioError, api.BadVideoError)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """Return (status code, stable error code, message) for an exception raised by a job."""
    if isinstance(exc, api.Cancelled):
        return grpc.StatusCode.CANCELLED, exc.code, str(exc) or "cancelled"
    if isinstance(exc, _CLIENT_FAULTS):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc)
    if isinstance(exc, api.TalkfaceError):
        return grpc.StatusCode.INTERNAL, exc.code, str(exc)
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc)
    if isinstance(exc, StoreUnavailable):
        # An outage, not the job's fault: the caller tries again once the store is back.
        return grpc.StatusCode.UNAVAILABLE, "store_unavailable", str(exc)
    if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFound":
        return grpc.StatusCode.FAILED_PRECONDITION, "input_missing", f"an input object is missing: {exc}"
    return grpc.StatusCode.INTERNAL, "internal", f"{type(exc).__name__}: {exc}"


def abort_with(context: grpc.ServicerContext, exc: BaseException) -> None:
    """End the RPC with the status that fits `exc` (never returns)."""
    code, err_code, message = status_for(exc)
    context.set_trailing_metadata(((ERROR_CODE_KEY, err_code),))
    context.abort(code, message)


def error_code_of(err: grpc.RpcError) -> str:
    """The stable error code a talkserve server attached to a failed RPC, or a fallback."""
    for key, value in (err.trailing_metadata() or ()):
        if key == ERROR_CODE_KEY:
            return value
    return err.code().name.lower() if err.code() else "unknown"


class InvalidRequest(Exception):
    """A request field is out of range or inconsistent."""

    code = "invalid_request"
