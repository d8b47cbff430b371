"""One map from exceptions to gRPC status codes, each failure carrying a stable error code.

A failed RPC ends with a `google.rpc.Status` whose details hold an `ErrorInfo`: its
`reason` is talkserve's stable error code (`no_face`, `url_timeout`, ...) and its `domain`
is `talkserve`, as in grpc's `examples/python/errors`. Servers build it through
`libs.grpcutil.interceptor.ErrorInterceptor`; clients read the code with `error_code_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from libs.store.client import StoreUnavailable
from libs.talkface import api

DOMAIN = "talkserve"


class InvalidRequest(Exception):
    """A request field is out of range or inconsistent."""

    code = "invalid_request"


class NoFreeSlot(Exception):
    """Every slot of the replica is busy: the caller dispatches the job elsewhere or later."""

    code = "no_free_slot"


@dataclass(frozen=True)
class Failure:
    """How an RPC ends for an exception: status code, stable error code, message."""

    status: grpc.StatusCode
    code: str
    message: str


# A service's own exceptions, mapped before the common ones (media's fetch errors, say).
Classifier = Callable[[BaseException], Failure | None]


def status_for(exc: BaseException, service: Classifier | None = None) -> Failure:
    """The failure an exception raised while serving stands for."""
    if service is not None and (failure := service(exc)) is not None:
        return failure
    if isinstance(exc, api.Cancelled):
        return Failure(grpc.StatusCode.CANCELLED, exc.code, str(exc) or "cancelled")
    if isinstance(exc, api.InputError):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc))
    if isinstance(exc, api.TalkfaceError):
        return Failure(grpc.StatusCode.INTERNAL, exc.code, str(exc))
    if isinstance(exc, InvalidRequest):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc))
    if isinstance(exc, NoFreeSlot):
        return Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.code, str(exc) or "no free slot on this replica")
    if isinstance(exc, StoreUnavailable):
        # An outage, not the job's fault: the caller tries again once the store is back.
        return Failure(grpc.StatusCode.UNAVAILABLE, "store_unavailable", str(exc))
    if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "NotFound":  # the store's, or minio's
        return Failure(grpc.StatusCode.FAILED_PRECONDITION, "input_missing", f"an input object is missing: {exc}")
    return Failure(grpc.StatusCode.INTERNAL, "internal", f"{type(exc).__name__}: {exc}")


def to_status(failure: Failure) -> grpc.Status:
    """The rich status an RPC ends with: code, message and an ErrorInfo with the error code."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=failure.code, domain=DOMAIN))
    return rpc_status.to_status(status_pb2.Status(
        code=failure.status.value[0], message=failure.message, details=[info]))


def error_reason(err: grpc.RpcError) -> str | None:
    """The stable error code a talkserve server gave a failed RPC; None when it gave none
    (a status that gRPC itself made: a deadline, a lost connection)."""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]  # a failed call is both
    except (ValueError, AttributeError):
        return None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == DOMAIN:
            return info.reason
    return None


def error_code_of(err: grpc.RpcError) -> str:
    """The stable error code a talkserve server gave a failed RPC, else the status code's name."""
    reason = error_reason(err)
    if reason is not None:
        return reason
    code = err.code()
    return code.name.lower() if code else "unknown"
