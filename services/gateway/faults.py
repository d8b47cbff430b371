"""What a failed service call or store operation means: the gateway's one error map.

Every failure is classified once here (`classify`): the job itself failed, an outage that a
later try outlives, a busy replica, or an input refused for good. From that class follow
both the outcome of a task's step (`failure`: retry later without using an attempt, retry
using one, or fail the task) and the HTTP status of a request that called a service while
the client waits (`http_status`). An outage (a service restarting, its connection lost,
the object store down) says nothing about the job, so the job waits it out without using
up one of its attempts; only a failure of the job itself counts against `max_attempts`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import grpc

from libs.grpcutil.errors import error_code_of, error_reason
from libs.store.client import StoreUnavailable
from libs.tasks import TaskConflict


class Fault(enum.Enum):
    """What a failure says about the job."""

    OUTAGE = "outage"  # retry later, without using an attempt
    BUSY = "busy"  # the replica had no free slot after all: dispatch again at once
    JOB = "job"  # the job failed: one attempt used
    PERMANENT = "permanent"  # running it again cannot help


# Codes a talkserve service answers for an input it refuses.
PERMANENT_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE})
# The peer is gone or restarting (a killed process, a lost connection, GOAWAY).
OUTAGE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# Error codes of a failed task that blame its inputs (EchOfU answers 400 for them, 500 otherwise).
CLIENT_ERROR_CODES = frozenset({"bad_audio", "bad_video", "no_face", "invalid_request", "no_speech",
                                "input_missing", "llm_rejected"})


def classify(exc: BaseException, peer_alive: Callable[[], bool] | None = None) -> Fault:
    """The fault behind `exc`, raised by a gRPC call or a store operation.

    CANCELLED counts as an outage because the gateway checks its own cancellations first:
    a call cancelled by the other side was cut by a server shutting down. DEADLINE_EXCEEDED
    is an outage only when the peer no longer answers (`peer_alive`); otherwise the step
    really took too long.
    """
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code in PERMANENT_CODES:
            return Fault.PERMANENT
        if code in OUTAGE_CODES:
            return Fault.OUTAGE
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return Fault.BUSY
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and peer_alive is not None and not peer_alive():
            return Fault.OUTAGE
        return Fault.JOB
    if isinstance(exc, (StoreUnavailable, TaskConflict, ConnectionError, TimeoutError)):
        return Fault.OUTAGE
    return Fault.JOB


def http_status(err: grpc.RpcError, failed: int = 503) -> int:
    """The status of a request whose service call failed while the client waits: 400 when the
    service refused the input (a URL that timed out on the service's side included), 503 when
    the service is down or busy, `failed` when it failed (the API's status for that)."""
    fault = classify(err)
    timed_out = err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    if fault is Fault.PERMANENT or (timed_out and error_reason(err) is not None):
        return 400
    return failed if fault is Fault.JOB and not timed_out else 503


def task_http_status(error_code: str | None, failed: int = 500) -> int:
    """The status of a request that waited for a task which failed with `error_code`."""
    return 400 if error_code in CLIENT_ERROR_CODES else failed


# -- outcomes of a task's step ----------------------------------------------------------------


class TaskFailed(Exception):
    """The task cannot succeed; `code` and the message go into the record."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class Retryable(Exception):
    """The step failed for a reason outside the task (a replica died, a store hiccup)."""

    def __init__(self, message: str, counts: bool = True):
        super().__init__(message)
        # False when the task never started (no free slot after all): not an attempt.
        self.counts = counts


class Outage(Retryable):
    """A service or the store was unreachable: the unit runs again once it is back, and the
    job keeps its attempts (the dispatcher waits with backoff, for `outage_retry_seconds`)."""

    def __init__(self, message: str):
        super().__init__(message, counts=False)


class HandedBack(Exception):
    """The unit stops here and another gateway runs it: this one is shutting down, or lost
    the task's lease to another gateway."""


def failure(exc: BaseException, where: str, peer_alive: Callable[[], bool] | None = None) -> Exception:
    """The exception a step raises for a failed gRPC call or store operation."""
    fault = classify(exc, peer_alive)
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if fault is Fault.PERMANENT:
            return TaskFailed(exc.details() or code.name, error_code_of(exc))
        detail = f"{where}: {code.name}: {exc.details()}"
    else:
        detail = f"{where}: {type(exc).__name__}: {exc}"
    if fault is Fault.OUTAGE:
        return Outage(detail)
    return Retryable(detail, counts=fault is not Fault.BUSY)
