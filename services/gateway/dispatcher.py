"""The gateway's queue: FIFO per model kind, dispatched against the replicas' real free slots.

The queue holds work items: a whole task, or one segment of a multi-audio task, so the
segments of one task spread over every replica with a free slot. A task enters the queue
when it is created and again when a gateway starts and finds it unfinished in the store.
Before running anything of a task the dispatcher claims the task in the store with a lease,
so no two gateways run it; leases are renewed while it runs, and one whose holder died
expires and is taken over.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

from tenacity import RetryCallState, wait_random_exponential

from libs.tasks import LeaseLost, TaskNotFound, TaskRecord, TaskStatus, TaskStore
from services.gateway.clients import Clients, Replica
from services.gateway.faults import Fault, classify
from services.gateway.metrics import TASK_SECONDS, TASKS_FINISHED
from services.gateway.pipeline import MODEL_KIND, HandedBack, Outage, Pipeline, Retryable, Run, TaskFailed
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

_WAITING = {TaskStatus.PENDING, TaskStatus.PROCESSING}


class QueueFull(Exception):
    """The kind's queue holds `max_queue` waiting tasks already."""


@dataclass(frozen=True, order=True)
class Item:
    """One unit of dispatch: a task, or segment `segment` of a multi-audio task.

    Items sort by creation time, so every gateway orders the same tasks the same way.
    """

    created: float
    task_id: str
    segment: int = -1  # -1: the whole task
    key_id: str | None = field(default=None, compare=False)  # whose task it is (queue views)
    not_before: float = field(default=0.0, compare=False)  # monotonic time before which it waits

    @property
    def unit(self) -> int | None:
        return None if self.segment < 0 else self.segment


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


class Dispatcher:
    """Owns the queues, the claimed tasks and their leases."""

    def __init__(self, settings: GatewaySettings, clients: Clients, tasks: TaskStore, pipeline: Pipeline):
        self.settings = settings
        self.clients = clients
        self.tasks = tasks
        self.pipeline = pipeline
        self.queues: dict[str, collections.deque[Item]] = {k: collections.deque() for k in clients.replicas}
        self.held: dict[str, Held] = {}
        self._inflight: dict[str, int] = collections.defaultdict(int)
        # Tasks taken off a queue and being claimed: the store scan must not queue them again.
        self._claiming: set[str] = set()
        # Each replica's slot count from its last answer: while this gateway's own runs fill
        # them all, asking the replica again cannot reveal a free one.
        self._slots: dict[str, int] = {}
        # Tasks the store scan never needs to look at again: finished (a final state) or of a
        # kind no dispatcher runs (a task's kind never changes). Without this every scan
        # sends a HEAD for every task kept in the store (24 h of them) every 2 s.
        self._settled: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Called with a task id whenever a unit of it ended here; the hook reads the record to see
        # whether the task is final (webhooks). Hooks must return at once.
        self.finish_hooks: list = []
        # Full-jitter exponential backoff between tries of a unit hit by an outage.
        self._outage_wait = wait_random_exponential(multiplier=0.5, max=settings.outage_backoff_max_seconds)

    # -- queue ---------------------------------------------------------------------------------

    def submit(self, record: TaskRecord, check_limit: bool = True) -> int:
        """Queue a task's unfinished units; returns its 0-based position among waiting tasks."""
        kind = MODEL_KIND[record.kind]
        segments = self.pipeline.pending_segments(record)
        with self._cond:
            queue = self.queues[kind]
            if check_limit and len(self._waiting_ids(kind)) >= self.settings.max_queue:
                raise QueueFull(f"the {kind} queue is full ({self.settings.max_queue} waiting tasks)")
            queued = {item.unit for item in queue if item.task_id == record.id}
            running = set(self.held[record.id].runs) if record.id in self.held else set()
            created = record.created_at.timestamp()
            for seg in segments:
                if seg not in queued and seg not in running:
                    self._insert(queue, Item(created, record.id, -1 if seg is None else seg, record.key_id))
            self._cond.notify_all()
            # A dispatcher thread may claim the task between the insert and here.
            waiting = self._waiting_ids(kind)
            return waiting.index(record.id) if record.id in waiting else 0

    @staticmethod
    def _insert(queue: collections.deque, item: Item) -> None:
        """Insert keeping creation order (new tasks almost always go last)."""
        index = len(queue)
        while index > 0 and queue[index - 1] > item:
            index -= 1
        queue.insert(index, item)

    def _waiting_ids(self, kind: str) -> list[str]:
        """Ids of the kind's tasks that wait and have nothing running, in queue order."""
        ids: list[str] = []
        for item in self.queues[kind]:
            if item.task_id not in ids and not (item.task_id in self.held and self.held[item.task_id].runs):
                ids.append(item.task_id)
        return ids

    def position(self, task_id: str, kind: str) -> int | None:
        """0-based position of a waiting task in its kind's queue; None when not waiting here."""
        with self._cond:
            waiting = self._waiting_ids(MODEL_KIND.get(kind, kind))
            return waiting.index(task_id) if task_id in waiting else None

    def snapshot(self, kind: str) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
        """(waiting tasks in order, running tasks) of one model kind, each as (id, key id)."""
        with self._cond:
            running = [(tid, h.record.key_id) for tid, h in self.held.items()
                       if h.runs and MODEL_KIND[h.record.kind] == kind]
            owners = {item.task_id: item.key_id for item in self.queues[kind]}
            return [(tid, owners.get(tid)) for tid in self._waiting_ids(kind)], running

    def queue_depth(self, kind: str) -> int:
        with self._cond:
            return len(self.queues[kind])

    def cancel(self, task_id: str) -> bool:
        """Drop a task's queued units and stop its running ones; True when this gateway had it."""
        with self._cond:
            found = False
            for queue in self.queues.values():
                for item in [i for i in queue if i.task_id == task_id]:
                    queue.remove(item)
                    found = True
            held = self.held.get(task_id)
            runs = list(held.runs.values()) if held else []
            if held:
                held.failed = True
        for run in runs:
            run.cancel()
        return found or bool(runs)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._recover()
        for kind in self.queues:
            self._spawn(self._dispatch_loop, kind, name=f"dispatch-{kind}")
        self._spawn(self._renew_loop, name="lease-renew")
        self._spawn(self._scan_loop, name="store-scan")

    def stop(self, grace: float = 5.0) -> None:
        """Dispatch nothing more; let running units finish for `grace` s, then hand them back."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
            deadline = time.monotonic() + grace
            while any(h.runs for h in self.held.values()) and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            leftover = [run for h in self.held.values() for run in h.runs.values()]
        for run in leftover:
            run.cancel(handback=True)
        with self._cond:
            deadline = time.monotonic() + 10
            while any(h.runs for h in self.held.values()) and time.monotonic() < deadline:
                self._cond.wait(timeout=0.5)
            held = list(self.held)
        for task_id in held:
            self._release(task_id, "handed back by a gateway that shut down")
        for t in self._threads:
            t.join(timeout=2)

    def _spawn(self, fn, *args, name: str) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        if not name.startswith("run-"):
            self._threads.append(t)

    def _recover(self) -> None:
        """Queue every unfinished task in the store that nobody holds, oldest first.

        Runs at start and then periodically: tasks created by another gateway, or held by one
        that died, are found here once their lease has expired.
        """
        found = []
        try:
            ids = self.tasks.list_ids()
        except Exception:  # noqa: BLE001 - the store is restarting; the next scan catches up
            log.warning("store scan failed", exc_info=True)
            return
        self._settled.intersection_update(ids)  # forget deleted tasks
        with self._cond:
            # Queued here already: claimed when their turn comes, and not read before.
            known = set(self.held).union(self._claiming,
                                         (item.task_id for queue in self.queues.values() for item in queue))
        for task_id in ids:
            if task_id in known or task_id in self._settled:
                continue
            try:
                meta = self.tasks.peek(task_id)
                if meta.finished:
                    self._settled.add(task_id)
                    continue
                if meta.status not in _WAITING:
                    continue
                # A task this gateway id holds but this process does not run was held by its previous
                # process (a restarted container keeps its id): take it back without waiting for the
                # lease. Another holder's live lease is respected.
                mine = meta.owner == self.settings.gateway_id
                if meta.owner and not mine and meta.lease_until and meta.lease_until.timestamp() > time.time():
                    continue
                rec, _ = self.tasks.get(task_id)
            except TaskNotFound:
                continue
            except Exception:  # noqa: BLE001
                log.warning("store scan failed on %s", task_id, exc_info=True)
                continue
            if rec.kind not in MODEL_KIND:
                self._settled.add(task_id)
            elif rec.status in _WAITING:
                found.append(rec)
        for rec in sorted(found, key=lambda r: r.created_at):
            if rec.owner and rec.owner != self.settings.gateway_id:
                log.info("taking over task %s from %s, whose lease expired", rec.id, rec.owner)
            self.submit(rec, check_limit=False)

    def _scan_loop(self) -> None:
        while not self._stopping.wait(self.settings.scan_interval_seconds):
            try:
                self.clients.refresh()
                self._recover()
            except Exception:  # noqa: BLE001 - one bad scan must not end scanning
                log.warning("store scan failed; retrying", exc_info=True)

    def _release(self, task_id: str, message: str) -> None:
        """Give a claimed task back: PENDING, no owner, so any gateway takes it at once."""

        def mutate(rec):
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.status = TaskStatus.PENDING
            rec.owner = None
            rec.lease_until = None
            rec.message = message

        try:
            self.tasks.update(task_id, mutate)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            log.warning("could not hand back %s", task_id, exc_info=True)
        with self._cond:
            self.held.pop(task_id, None)

    # -- dispatch ------------------------------------------------------------------------------

    def _free_replica(self, kind: str) -> Replica | None:
        """The replica with the most free slots, counting the jobs this gateway sent it already."""
        best, best_free = None, 0
        for replica in self.clients.replicas[kind]:
            own = self._inflight[replica.target]
            if own >= self._slots.get(replica.target, own + 1):
                continue
            cap = replica.capacity()
            if cap is None or cap.draining:
                continue
            self._slots[replica.target] = cap.slots_total
            free = min(cap.slots_free, cap.slots_total - own)
            if free > best_free:
                best, best_free = replica, free
        return best

    def _dispatch_loop(self, kind: str) -> None:
        while not self._stopping.is_set():
            try:
                self._dispatch_one(kind)
            except Exception:  # noqa: BLE001 - a store outage must not end dispatching
                log.warning("dispatching %s failed; retrying", kind, exc_info=True)
                self._stopping.wait(0.5)

    def _dispatch_one(self, kind: str) -> None:
        """Wait for a queued unit and a free slot, claim, and start the unit."""
        queue = self.queues[kind]
        with self._cond:
            while not self._stopping.is_set():
                wait = self._next_ready(queue)
                if wait == 0.0:
                    break
                self._cond.wait(timeout=min(1.0, wait))
        if self._stopping.is_set():
            return
        replica = self._free_replica(kind)
        if replica is None:
            with self._cond:
                self._cond.wait(timeout=0.2)
            return
        with self._cond:
            item = next((i for i in queue if i.not_before <= time.monotonic()), None)
            if item is None:
                return
            queue.remove(item)
            held = self.held.get(item.task_id)
            if held is None:
                self._claiming.add(item.task_id)
        if held is None:
            try:
                held = self._claim(item.task_id)
            finally:
                with self._cond:
                    self._claiming.discard(item.task_id)
            if held is None:
                return
        run = Run(record=held.record, replica=replica, stop=threading.Event(), segment=item.unit)
        run.release_slot = lambda: self._release_slot(run)
        with self._cond:
            if held.failed or item.unit in held.runs:
                return
            held.runs[item.unit] = run
            self._inflight[replica.target] += 1
        self._spawn(self._execute, held, run, name=f"run-{item.task_id[:8]}-{item.unit}")

    @staticmethod
    def _next_ready(queue: collections.deque) -> float:
        """0 when a queued unit may run now, else the seconds until the first one may (inf: none queued).

        Units waiting out an outage step aside: the others behind them run meanwhile.
        """
        now = time.monotonic()
        wait = float("inf")
        for item in queue:
            if item.not_before <= now:
                return 0.0
            wait = min(wait, item.not_before - now)
        return wait

    def _release_slot(self, run: Run) -> None:
        """The unit no longer occupies its replica (idempotent)."""
        with self._cond:
            if run.release_slot is not None:
                run.release_slot = None
                self._inflight[run.replica.target] -= 1
                self._cond.notify_all()

    def _claim(self, task_id: str) -> Held | None:
        try:
            record = self.tasks.claim(task_id, self.settings.gateway_id, self.settings.lease_seconds)
        except TaskNotFound:
            record = None
        if record is None or record.status not in _WAITING:
            with self._cond:
                # Another gateway holds it (or it ended): its units are not ours to run.
                for queue in self.queues.values():
                    for item in [i for i in queue if i.task_id == task_id]:
                        queue.remove(item)
            return None
        held = Held(record=record, left=set(s for s in self.pipeline.pending_segments(record) if s is not None))
        with self._cond:
            self.held[task_id] = held
        return held

    def _execute(self, held: Held, run: Run) -> None:
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
            self.pipeline.run(run)
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
        TASKS_FINISHED.labels(held.record.kind, status.value, reason).inc()
        if status == TaskStatus.COMPLETED:
            TASK_SECONDS.labels(held.record.kind).observe(time.monotonic() - held.claimed_at)

    def _finish_segments(self, held: Held, run: Run) -> None:
        try:
            self.pipeline.finish_segments(run)
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
            others = [r for r in held.runs.values()]
            for queue in self.queues.values():
                for item in [i for i in queue if i.task_id == held.record.id]:
                    queue.remove(item)
        for other in others:
            other.cancel()
        if not already:
            self._count(held, status, code)

        def mutate(rec):
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.status = status
            rec.message = message
            rec.error = message
            rec.error_code = code
            rec.owner = None
            rec.lease_until = None

        self.tasks.update(held.record.id, mutate)

    def _abandon(self, task_id: str) -> None:
        """Another gateway holds the task now (or it is gone): stop here, recording nothing."""
        with self._cond:
            held = self.held.pop(task_id, None)
            for queue in self.queues.values():
                for item in [i for i in queue if i.task_id == task_id]:
                    queue.remove(item)
            runs = list(held.runs.values()) if held else []
        for run in runs:
            run.cancel(handback=True)

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

        def mutate(rec):
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.failures = max(rec.failures, failures)
            rec.message = f"Retrying after an error: {reason}"

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
        state = RetryCallState(None, None, (), {})
        state.attempt_number = tries
        delay = self._outage_wait(state)
        log.warning("task %s: %s; trying again in %.1f s", held.record.id, reason, delay)

        def mutate(rec):
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.message = f"Waiting for a service to come back ({reason})"

        try:
            self.tasks.update(held.record.id, mutate)
        except Exception:  # noqa: BLE001 - the store may be the thing that is down
            log.info("task %s: could not note the outage in its record", held.record.id)
        with self._cond:
            self._requeue(held, run, not_before=now + delay)

    def _requeue(self, held: Held, run: Run, not_before: float = 0.0) -> None:
        rec = held.record
        self._insert(self.queues[MODEL_KIND[rec.kind]],
                     Item(rec.created_at.timestamp(), rec.id, -1 if run.segment is None else run.segment,
                          rec.key_id, not_before))
        self._cond.notify_all()

    def _renew_loop(self) -> None:
        """Renew the leases of held tasks, and stop any that was cancelled through another gateway."""
        renew_every = max(self.settings.lease_seconds / 3, 0.5)
        last_renew = 0.0
        while not self._stopping.wait(min(1.0, renew_every)):
            with self._cond:
                ids = list(self.held)
            renew = time.monotonic() - last_renew >= renew_every
            if renew:
                last_renew = time.monotonic()
            for task_id in ids:
                try:
                    if renew:
                        status = self.tasks.renew(task_id, self.settings.gateway_id, self.settings.lease_seconds).status
                    else:
                        status = self.tasks.peek(task_id).status
                except (LeaseLost, TaskNotFound):
                    log.warning("task %s is no longer ours; stopping it here", task_id)
                    self._abandon(task_id)
                    continue
                except Exception:  # noqa: BLE001 - next round tries again
                    log.warning("could not renew the lease of %s", task_id, exc_info=True)
                    continue
                if status == TaskStatus.CANCELLED:
                    self.cancel(task_id)
