"""The gateway's queue: FIFO per model kind, dispatched against the replicas' real free slots.

A task enters the queue when it is created and again when this gateway starts and finds it
unfinished in the store. Before running a task the dispatcher claims it in the store with a
lease, so no two gateways run it at once; leases are renewed while the task runs, and one
whose holder died expires and is taken over.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from libs.tasks import TaskStatus, TaskStore
from services.gateway.clients import Clients, Replica
from services.gateway.pipeline import Pipeline, Retryable, Run, TaskFailed
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

_WAITING = {TaskStatus.PENDING, TaskStatus.PROCESSING}


class QueueFull(Exception):
    """The kind's queue holds `max_queue` waiting tasks already."""


class Dispatcher:
    """Owns the queues, the running tasks and their leases."""

    def __init__(self, settings: GatewaySettings, clients: Clients, tasks: TaskStore, pipeline: Pipeline):
        self.settings = settings
        self.clients = clients
        self.tasks = tasks
        self.pipeline = pipeline
        self.queues: dict[str, collections.deque[str]] = {k: collections.deque() for k in clients.replicas}
        self.running: dict[str, Run] = {}
        self._inflight: dict[str, int] = collections.defaultdict(int)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- queue ---------------------------------------------------------------------------------

    def submit(self, task_id: str, kind: str, check_limit: bool = True) -> int:
        """Queue a task; returns its 0-based position among the kind's waiting tasks."""
        with self._cond:
            queue = self.queues[kind]
            if check_limit and len(queue) >= self.settings.max_queue:
                raise QueueFull(f"the {kind} queue is full ({self.settings.max_queue} waiting tasks)")
            if task_id not in queue:
                queue.append(task_id)
            self._cond.notify_all()
            return queue.index(task_id)

    def position(self, task_id: str, kind: str) -> int | None:
        with self._cond:
            try:
                return self.queues[kind].index(task_id)
            except (ValueError, KeyError):
                return None

    def snapshot(self, kind: str) -> tuple[list[str], list[str]]:
        """(waiting ids in order, running ids) for one kind."""
        with self._cond:
            running = [tid for tid, run in self.running.items() if run.record.kind == kind]
            return list(self.queues[kind]), running

    def cancel(self, task_id: str) -> bool:
        """Drop a waiting task or stop a running one; True when this gateway had it."""
        with self._cond:
            for queue in self.queues.values():
                if task_id in queue:
                    queue.remove(task_id)
                    return True
            run = self.running.get(task_id)
        if run is not None:
            run.cancel()
            return True
        return False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._recover()
        for kind in self.queues:
            self._spawn(self._dispatch_loop, kind, name=f"dispatch-{kind}")
        self._spawn(self._renew_loop, name="lease-renew")

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=grace)

    def _spawn(self, fn, *args, name: str) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _recover(self) -> None:
        """Queue every unfinished task whose claim is free, oldest first."""
        found = []
        for task_id in self.tasks.list_ids():
            try:
                rec, _ = self.tasks.get(task_id)
            except Exception:  # noqa: BLE001 - a record deleted meanwhile
                continue
            if rec.status in _WAITING and rec.kind in self.queues:
                found.append((rec.created_at, rec.id, rec.kind))
        for _, task_id, kind in sorted(found):
            self.submit(task_id, kind, check_limit=False)
        if found:
            log.info("recovered %d unfinished tasks", len(found))

    # -- dispatch ------------------------------------------------------------------------------

    def _free_replica(self, kind: str) -> Replica | None:
        """A replica with a free slot, counting the jobs this gateway has sent it already."""
        best, best_free = None, 0
        for replica in self.clients.replicas[kind]:
            cap = replica.capacity()
            if cap is None or cap.draining:
                continue
            free = min(cap.slots_free, cap.slots_total - self._inflight[replica.target])
            if free > best_free:
                best, best_free = replica, free
        return best

    def _dispatch_loop(self, kind: str) -> None:
        queue = self.queues[kind]
        while not self._stopping.is_set():
            with self._cond:
                while not queue and not self._stopping.is_set():
                    self._cond.wait(timeout=1.0)
            if self._stopping.is_set():
                return
            replica = self._free_replica(kind)
            if replica is None:
                with self._cond:
                    self._cond.wait(timeout=0.2)
                continue
            with self._cond:
                if not queue:
                    continue
                task_id = queue.popleft()
            record = self.tasks.claim(task_id, self.settings.gateway_id, self.settings.lease_seconds)
            if record is None or record.status not in _WAITING:
                continue
            run = Run(record=record, replica=replica, stop=threading.Event())
            with self._cond:
                self.running[task_id] = run
                self._inflight[replica.target] += 1
            self._spawn(self._execute, run, name=f"task-{task_id[:8]}")

    def _execute(self, run: Run) -> None:
        task_id = run.record.id
        try:
            self.pipeline.run(run)
        except TaskFailed as exc:
            status = TaskStatus.CANCELLED if exc.code == "cancelled" else TaskStatus.FAILED
            self._finish(task_id, status, str(exc), exc.code)
        except Retryable as exc:
            self._retry(run, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the task PROCESSING
            log.exception("task %s crashed the pipeline", task_id)
            self._retry(run, f"{type(exc).__name__}: {exc}")
        finally:
            with self._cond:
                self.running.pop(task_id, None)
                self._inflight[run.replica.target] -= 1
                self._cond.notify_all()

    def _finish(self, task_id: str, status: TaskStatus, message: str, code: str) -> None:
        def mutate(rec):
            rec.status = status
            rec.message = message
            rec.error = message
            rec.error_code = code
            rec.owner = None
            rec.lease_until = None

        self.tasks.update(task_id, mutate)

    def _retry(self, run: Run, reason: str) -> None:
        attempts = run.record.attempts + 1
        if attempts >= self.settings.max_attempts:
            self._finish(run.record.id, TaskStatus.FAILED,
                         f"gave up after {attempts} attempts; last error: {reason}", "retries_exhausted")
            return
        log.warning("task %s: attempt %d failed (%s); queued again", run.record.id, attempts, reason)

        def mutate(rec):
            rec.status = TaskStatus.PENDING
            rec.attempts = attempts
            rec.message = f"Retrying after an error: {reason}"
            rec.owner = None
            rec.lease_until = None

        self.tasks.update(run.record.id, mutate)
        with self._cond:
            self.queues[run.record.kind].appendleft(run.record.id)
            self._cond.notify_all()

    def _renew_loop(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.5)
        while not self._stopping.wait(interval):
            with self._cond:
                ids = list(self.running)
            for task_id in ids:
                try:
                    self.tasks.renew(task_id, self.settings.gateway_id, self.settings.lease_seconds)
                except Exception:  # noqa: BLE001 - next round tries again
                    log.warning("could not renew the lease of %s", task_id, exc_info=True)
