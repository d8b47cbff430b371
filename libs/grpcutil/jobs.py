"""Run one engine job per streaming RPC: slots, a worker thread, progress events, cancellation.

The engine runs in a worker thread and reports progress through a queue; the RPC thread
turns those reports into stream messages. A cancelled or disconnected RPC sets the stop
event that the engine checks between frames, and the slot is freed only once the engine
has really stopped.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import socket
import threading
import time
from typing import Callable, Iterator, TypeVar

import grpc

from libs.grpcutil.errors import NoFreeSlot
from libs.grpcutil.metrics import JOB_FAILURES, JOB_SECONDS, JOBS_RUNNING
from libs.talkface import api
from talkserve.common.v1 import common_pb2
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

_STAGES = {
    "analyse": (common_pb2.JOB_STAGE_ANALYSING, 0.0, 0.1),
    "render": (common_pb2.JOB_STAGE_RENDERING, 0.1, 0.93),
    "encode": (common_pb2.JOB_STAGE_RENDERING, 0.93, 0.95),
    "upload": (common_pb2.JOB_STAGE_UPLOADING, 0.95, 1.0),
}


class SlotPool:
    """Counts the jobs a replica runs at once; closed until the engine is loaded and while draining."""

    def __init__(self, total: int):
        self.total = total
        self._free = total
        self._lock = threading.Lock()
        self.opened = False
        self.draining = False

    def open(self) -> None:
        self.opened = True

    def try_acquire(self) -> bool:
        with self._lock:
            if not self.opened or self.draining or self._free == 0:
                return False
            self._free -= 1
            return True

    def release(self) -> None:
        with self._lock:
            self._free = min(self.total, self._free + 1)

    @property
    def free(self) -> int:
        with self._lock:
            return self._free if self.opened and not self.draining else 0

    def idle(self) -> bool:
        with self._lock:
            return self._free == self.total


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    """Reports a replica's free slots (jobs and live sessions), its engine and the device it runs on to the gateway."""

    def __init__(self, slots: SlotPool, engines, replica_id: str | None = None, live_slots: SlotPool | None = None):
        self._slots = slots
        self._live = live_slots
        self._engines = engines  # its `name` and `device` (None until loaded) are read per call
        self.replica_id = replica_id or socket.gethostname()

    def GetCapacity(self, request, context):
        device = self._engines.device
        return worker_pb2.GetCapacityResponse(
            slots_total=self._slots.total,
            slots_free=self._slots.free,
            engine=self._engines.name,
            replica_id=self.replica_id,
            draining=self._slots.draining,
            # the engine's own placement: it says cuda only once it sits on a GPU it found
            gpu=bool(device and device.gpu),
            device_kind=device.kind if device else "",
            device_name=device.name if device else "",
            live_slots_total=self._live.total if self._live is not None and self._live.opened else 0,
            live_slots_free=self._live.free if self._live is not None else 0,
        )


class _Tracker:
    """Turns engine progress into overall fraction and ETA."""

    def __init__(self):
        self.started = time.monotonic()
        self.render_started: float | None = None
        self.fraction = 0.0

    def to_proto(self, p: api.Progress) -> common_pb2.Progress:
        stage, lo, hi = _STAGES.get(p.stage, (common_pb2.JOB_STAGE_RENDERING, 0.1, 0.95))
        part = (p.done / p.total) if p.total > 0 else 0.0
        # Clients draw progress bars: never report less than before.
        self.fraction = max(self.fraction, lo + (hi - lo) * min(max(part, 0.0), 1.0))
        fraction = self.fraction
        eta = -1.0
        if p.stage == "render" and p.total > 0:
            now = time.monotonic()
            if self.render_started is None:
                self.render_started = now
            elif p.done > 0:
                eta = (now - self.render_started) / p.done * (p.total - p.done)
        return common_pb2.Progress(
            stage=stage, done=p.done, total=p.total, fraction=fraction,
            message=p.message or _default_message(p), eta_seconds=eta,
        )


def _default_message(p: api.Progress) -> str:
    if p.stage in ("render", "encode") and p.total:
        return f"Generating video... frame {p.done}/{p.total}"
    if p.stage == "upload":
        return "Saving result..."
    return "Analysing inputs..."


def run_job(
    context: grpc.ServicerContext,
    slots: SlotPool,
    work: Callable[[api.ProgressFn, api.StopFn], T],
    wrap_progress: Callable[[common_pb2.Progress], object],
    wrap_result: Callable[[T], object],
) -> Iterator[object]:
    """Run `work(progress, should_stop)` in a thread and yield progress then result messages.

    What the work raises is raised again here, in the RPC's thread, for ErrorInterceptor.
    """
    if not slots.try_acquire():
        raise NoFreeSlot("no free slot on this replica")
    stop = threading.Event()
    context.add_callback(stop.set)
    events: queue.Queue = queue.Queue()
    tracker = _Tracker()
    done = object()

    def _target():
        try:
            result = work(events.put, stop.is_set)
            events.put((done, result, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the RPC thread
            events.put((done, None, exc))

    # The engine's thread logs with the request id of the call (libs.grpcutil.requestid).
    thread = threading.Thread(target=contextvars.copy_context().run, args=(_target,), name="engine-job", daemon=True)
    started = time.monotonic()
    JOBS_RUNNING.inc()
    outcome = "cancelled"
    thread.start()
    try:
        yield wrap_progress(tracker.to_proto(api.Progress("analyse", 0, 0, "Job started")))
        while True:
            item = events.get()
            if isinstance(item, tuple) and item and item[0] is done:
                _, result, exc = item
                if exc is not None:
                    outcome = getattr(exc, "code", None) or type(exc).__name__
                    if not isinstance(exc, api.Cancelled):
                        log.warning("job failed: %s: %s", type(exc).__name__, exc)
                    raise exc
                outcome = "ok"
                yield wrap_result(result)
                return
            yield wrap_progress(tracker.to_proto(item))
    finally:
        stop.set()
        thread.join()
        slots.release()
        JOBS_RUNNING.dec()
        if outcome == "ok":
            JOB_SECONDS.observe(time.monotonic() - started)
        else:
            JOB_FAILURES.labels(outcome).inc()
