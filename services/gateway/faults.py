"""Why a step of a job failed: the job itself, an outage that a later try outlives, or for good.

This is the one place the gateway decides it. An outage (a service restarting, its
connection lost, the object store down) says nothing about the job, so the job waits it
out without using up one of its attempts; only a failure of the job itself counts
against `max_attempts`; an input the services refuse fails the job at once.
"""

from __future__ import annotations

import enum
from typing import Callable

import grpc

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


def classify(exc: BaseException, peer_alive: Callable[[], bool] | None = None) -> Fault:
    """The fault behind `exc`, raised by a gRPC call or a store operation of a job's step.

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
