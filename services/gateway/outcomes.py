"""What the dispatcher does once a unit of a task has run: complete, retry, wait out an outage, fail.

A failure of the job itself uses one of the task's `max_attempts`; an outage is waited out
with backoff for up to `outage_retry_seconds` without using one (faults.py says which is
which); a task whose units all finished is completed, its segments joined first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState

from libs.logs import REQUEST_ID
from libs.tasks import TaskRecord, TaskStatus, TaskStore
from services.gateway.faults import (
    Fault,
    HandedBack,
    Outage,
    Retryable,
    TaskFailed,
    classify,
)
from services.gateway.kinds import JobKind, api_name
from services.gateway.metrics import TASK_SECONDS, TASKS_FINISHED
from services.gateway.pipeline import Pipeline, Run
from services.gateway.queues import Item, Queues
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


@dataclass
class Held:
    """A task this gateway has claimed, with its running units."""

    record: TaskRecord
    claimed_at: float = field(default_factory=time.monotonic)
    runs: dict[int | None, Run] = field(default_factory=dict)
    left: set[int] = field(default_factory=set)  # segments not finished yet
    failed: bool = False
    outage_since: float | None = None  # monotonic time of the first outage since its last success
    outages: int = 0  # outages waited out since then


class Outcomes:
    """The outcome half of the Dispatcher (dispatcher.py), which owns the state used here."""

    settings: GatewaySettings
    tasks: TaskStore
    pipeline: Pipeline
    kinds: Mapping[str, JobKind[Any]]
    queues: Queues
    held: dict[str, Held]
    finish_hooks: list[Callable[[str], None]]
    _cond: threading.Condition
    _outage_wait: Callable[[RetryCallState], float]

    def _service(self, kind: str) -> str:
        raise NotImplementedError

    def _release_slot(self, run: Run) -> None:
        raise NotImplementedError

    def _execute(self, held: Held, run: Run) -> None:
        # The unit's log lines, here and (through the gRPC metadata) on the services, name the
        # request that created the task.
        REQUEST_ID.set(held.record.request_id or "-")
        try:
            self._execute_unit(held, run)
        except Exception:  # noqa: BLE001 - recording the outcome failed (store down for long)
            log.exception("task %s: could not record the outcome; letting its lease lapse", held.record.id)
            with self._cond:
                held.runs.pop(run.segment, None)
                if not held.runs:
                    # Not renewed any more, the lease expires and a store scan queues the task again.
                    self.held.pop(held.record.id, None)
                self._cond.notify_all()

    def _execute_unit(self, held: Held, run: Run) -> None:
        task_id = held.record.id
        outcome = "done"
        try:
            kind = self.kinds.get(run.record.kind)
            if kind is None:
                raise TaskFailed(f"unknown task kind {run.record.kind!r}", "bad_kind")
            kind.run(self.pipeline, run, kind.load(run.record))
        except TaskFailed as exc:
            outcome = "failed"
            self._fail(held, TaskStatus.CANCELLED if exc.code == "cancelled" else TaskStatus.FAILED, str(exc), exc.code)
        except HandedBack:
            outcome = "retry"
        except Outage as exc:
            outcome = "retry"
            self._wait_out(held, run, str(exc))
        except Retryable as exc:
            outcome = "retry"
            self._retry(held, run, str(exc), counts=exc.counts)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the task PROCESSING
            outcome = "retry"
            if classify(exc) is Fault.OUTAGE:  # the store, say, down for longer than its own retries
                self._wait_out(held, run, f"{type(exc).__name__}: {exc}")
            else:
                log.exception("task %s crashed the pipeline", task_id)
                self._retry(held, run, f"{type(exc).__name__}: {exc}")
        finally:
            self._release_slot(run)
            with self._cond:
                held.runs.pop(run.segment, None)
                if outcome == "done" and run.segment is not None:
                    held.left.discard(run.segment)
                finished_all = outcome == "done" and not held.left and not held.runs and not held.failed
                if outcome != "retry" and not held.runs and (held.failed or run.segment is None or finished_all):
                    self.held.pop(task_id, None)
                self._cond.notify_all()
        if outcome == "done":
            held.outage_since, held.outages = None, 0
        if outcome == "done" and run.segment is None:
            self._count(held, TaskStatus.COMPLETED, "ok")
        if finished_all and run.segment is not None:
            self._finish_segments(held, run)
        self._ended(task_id)

    def _ended(self, task_id: str) -> None:
        for hook in self.finish_hooks:
            try:
                hook(task_id)
            except Exception:  # noqa: BLE001 - a hook must never stop dispatching
                log.warning("finish hook failed for %s", task_id, exc_info=True)

    def _count(self, held: Held, status: TaskStatus, reason: str) -> None:
        TASKS_FINISHED.labels(api_name(held.record.kind), status.value, reason).inc()
        if status == TaskStatus.COMPLETED:
            TASK_SECONDS.labels(api_name(held.record.kind)).observe(time.monotonic() - held.claimed_at)

    def _finish_segments(self, held: Held, run: Run) -> None:
        kind = self.kinds[held.record.kind]
        try:
            if kind.finish is not None:
                kind.finish(self.pipeline, run, kind.load(held.record))
            self._count(held, TaskStatus.COMPLETED, "ok")
        except TaskFailed as exc:
            self._fail(held, TaskStatus.FAILED, str(exc), exc.code)
        except Exception as exc:  # noqa: BLE001 - joining failed: the segments stay downloadable
            log.exception("task %s: joining segments failed", held.record.id)
            self._fail(held, TaskStatus.FAILED, f"joining the segments failed: {exc}", "concat_failed")

    def _fail(self, held: Held, status: TaskStatus, message: str, code: str) -> None:
        with self._cond:
            already = held.failed
            held.failed = True
            others = list(held.runs.values())
            self.queues.drop(held.record.id)
        for other in others:
            other.cancel()
        if not already:
            self._count(held, status, code)

        def mutate(rec: TaskRecord) -> bool | None:
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.status = status
            rec.message = message
            rec.error = message
            rec.error_code = code
            rec.owner = None
            rec.lease_until = None
            return None

        self.tasks.update(held.record.id, mutate)

    def _retry(self, held: Held, run: Run, reason: str, counts: bool = True) -> None:
        """Run the unit again, or fail the task once its own failures used up its attempts."""
        if not counts:
            with self._cond:
                self._requeue(held, run)
            return
        with self._cond:
            held.record.failures += 1
            failures = held.record.failures
        if failures >= self.settings.max_attempts:
            self._fail(held, TaskStatus.FAILED, f"gave up after {failures} failed attempts; last error: {reason}",
                       "retries_exhausted")
            return
        log.warning("task %s: attempt %d failed (%s); queued again", held.record.id, failures, reason)

        def mutate(rec: TaskRecord) -> bool | None:
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.failures = max(rec.failures, failures)
            rec.message = f"Retrying after an error: {reason}"
            return None

        self.tasks.update(held.record.id, mutate)
        with self._cond:
            self._requeue(held, run)

    def _wait_out(self, held: Held, run: Run, reason: str) -> None:
        """An outage hit the unit: run it again after a backoff, without using one of its attempts;
        fail the task only once outages kept it from running for `outage_retry_seconds`."""
        now = time.monotonic()
        with self._cond:
            if held.outage_since is None:
                held.outage_since = now
            held.outages += 1
            tries, since = held.outages, held.outage_since
        if now - since > self.settings.outage_retry_seconds:
            self._fail(held, TaskStatus.FAILED, f"services unavailable for more than "
                       f"{self.settings.outage_retry_seconds:g} s; last error: {reason}", "unavailable")
            return
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # only its attempt_number is read
        state.attempt_number = tries
        delay = self._outage_wait(state)
        log.warning("task %s: %s; trying again in %.1f s", held.record.id, reason, delay)

        def mutate(rec: TaskRecord) -> bool | None:
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.message = f"Waiting for a service to come back ({reason})"
            return None

        try:
            self.tasks.update(held.record.id, mutate)
        except Exception:  # noqa: BLE001 - the store may be the thing that is down
            log.info("task %s: could not note the outage in its record", held.record.id)
        with self._cond:
            self._requeue(held, run, not_before=now + delay)

    def _requeue(self, held: Held, run: Run, not_before: float = 0.0) -> None:
        rec = held.record
        self.queues.insert(self._service(rec.kind), Item(rec.created_at.timestamp(), rec.id,
                                                         -1 if run.segment is None else run.segment,
                                                         rec.key_id, not_before))
        self._cond.notify_all()
