"""The gateway's dispatcher: each model service's queue (queues.py) run against the replicas'
real free slots, each unit by its kind's runner (kinds/).

A task enters the queue when it is created and again when a gateway finds it unfinished in
the store (recovery.py). Before running anything of a task the dispatcher claims the task in
the store with a lease, so no two gateways run it; leases are renewed while it runs, and one
whose holder died expires and is taken over.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tenacity import wait_random_exponential

from libs.tasks import LeaseLost, TaskNotFound, TaskRecord, TaskStatus, TaskStore, utcnow
from services.gateway.clients import Clients, Replica
from services.gateway.kinds import JobKind, api_name
from services.gateway.metrics import QUEUE_WAIT_SECONDS
from services.gateway.outcomes import Held, Outcomes
from services.gateway.pipeline import Pipeline, Run
from services.gateway.queues import Item, QueueFull, Queues
from services.gateway.recovery import WAITING, StoreScan
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

__all__ = ["Dispatcher", "QueueFull"]


class Dispatcher(Outcomes):
    """Owns the queues, the claimed tasks and their leases."""

    def __init__(self, settings: GatewaySettings, clients: Clients, tasks: TaskStore, pipeline: Pipeline,
                 kinds: Mapping[str, JobKind[Any]]):
        self.settings = settings
        self.clients = clients
        self.tasks = tasks
        self.pipeline = pipeline
        self.kinds = kinds
        self.queues = Queues(list(clients.replicas))
        self.held: dict[str, Held] = {}
        self._inflight: dict[str, int] = collections.defaultdict(int)
        # Tasks taken off a queue and being claimed: the store scan must not queue them again.
        self._claiming: set[str] = set()
        # Each replica's slot count from its last answer: while this gateway's own runs fill
        # them all, asking the replica again cannot reveal a free one.
        self._slots: dict[str, int] = {}
        self._scan = StoreScan(tasks, settings.gateway_id, kinds)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # Called with a task id whenever a unit of it ended here; the hook reads the record to see
        # whether the task is final (webhooks). Hooks must return at once.
        self.finish_hooks: list[Callable[[str], None]] = []
        # Full-jitter exponential backoff between tries of a unit hit by an outage.
        self._outage_wait = wait_random_exponential(multiplier=0.5, max=settings.outage_backoff_max_seconds)

    # -- queue ---------------------------------------------------------------------------------

    def _service(self, kind: str) -> str:
        """The model service that runs a task kind (a kind no module registers runs nowhere)."""
        known = self.kinds.get(kind)
        return known.service if known is not None else kind

    def _running(self) -> set[str]:
        return {tid for tid, held in self.held.items() if held.runs}

    def submit(self, record: TaskRecord, check_limit: bool = True) -> int:
        """Queue a task's unfinished units; returns its 0-based position among waiting tasks."""
        service = self._service(record.kind)
        units = self.kinds[record.kind].pending_units(record)
        with self._cond:
            if check_limit and len(self.queues.waiting_ids(service, self._running())) >= self.settings.max_queue:
                raise QueueFull(f"the {service} queue is full ({self.settings.max_queue} waiting tasks)")
            queued = self.queues.queued_units(record.id)
            running = set(self.held[record.id].runs) if record.id in self.held else set()
            created = record.created_at.timestamp()
            for unit in units:
                if unit not in queued and unit not in running:
                    self.queues.insert(service, Item(created, record.id, -1 if unit is None else unit, record.key_id))
            self._cond.notify_all()
            # A dispatcher thread may claim the task between the insert and here.
            waiting = self.queues.waiting_ids(service, self._running())
            return waiting.index(record.id) if record.id in waiting else 0

    def position(self, task_id: str, kind: str) -> int | None:
        """0-based position of a waiting task in its service's queue; None when not waiting here."""
        with self._cond:
            waiting = self.queues.waiting_ids(self._service(kind), self._running())
            return waiting.index(task_id) if task_id in waiting else None

    def snapshot(self, service: str) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
        """(waiting tasks in order, running tasks) of one model service, each as (id, key id)."""
        with self._cond:
            running = [(tid, h.record.key_id) for tid, h in self.held.items()
                       if h.runs and self._service(h.record.kind) == service]
            owners = self.queues.owners(service)
            return [(tid, owners.get(tid)) for tid in self.queues.waiting_ids(service, self._running())], running

    def queue_depth(self, service: str) -> int:
        with self._cond:
            return len(self.queues[service])

    def cancel(self, task_id: str) -> bool:
        """Drop a task's queued units and stop its running ones; True when this gateway had it."""
        with self._cond:
            found = self.queues.drop(task_id)
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
        for service in self.queues:
            self._spawn(self._dispatch_loop, service, name=f"dispatch-{service}")
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

    def _spawn(self, fn: Callable[..., None], *args: Any, name: str) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        if not name.startswith("run-"):
            self._threads.append(t)

    def _recover(self) -> None:
        """Queue every unfinished task in the store that nobody holds, oldest first (recovery.py)."""

        def known() -> set[str]:
            with self._cond:
                return set(self.held) | self._claiming | self.queues.task_ids()

        for rec in self._scan.orphans(known):
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

        def mutate(rec: TaskRecord) -> bool | None:
            if rec.finished or rec.owner != self.settings.gateway_id:
                return False
            rec.status = TaskStatus.PENDING
            rec.owner = None
            rec.lease_until = None
            rec.message = message
            return None

        try:
            self.tasks.update(task_id, mutate)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            log.warning("could not hand back %s", task_id, exc_info=True)
        with self._cond:
            self.held.pop(task_id, None)

    # -- dispatch ------------------------------------------------------------------------------

    def _free_replica(self, service: str) -> Replica | None:
        """The replica with the most free slots, counting the jobs this gateway sent it already."""
        best, best_free = None, 0
        for replica in self.clients.replicas[service]:
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

    def _dispatch_loop(self, service: str) -> None:
        while not self._stopping.is_set():
            try:
                self._dispatch_one(service)
            except Exception:  # noqa: BLE001 - a store outage must not end dispatching
                log.warning("dispatching %s failed; retrying", service, exc_info=True)
                self._stopping.wait(0.5)

    def _dispatch_one(self, service: str) -> None:
        """Wait for a queued unit and a free slot, claim, and start the unit."""
        with self._cond:
            while not self._stopping.is_set():
                wait = self.queues.next_ready(service)
                if wait == 0.0:
                    break
                self._cond.wait(timeout=min(1.0, wait))
        if self._stopping.is_set():
            return
        replica = self._free_replica(service)
        if replica is None:
            with self._cond:
                self._cond.wait(timeout=0.2)
            return
        with self._cond:
            item = self.queues.take(service)
            if item is None:
                return
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
        if record is None or record.status not in WAITING:
            with self._cond:
                # Another gateway holds it (or it ended): its units are not ours to run.
                self.queues.drop(task_id)
            return None
        if record.attempts == 1:  # its first claim: how long it waited for a free slot
            QUEUE_WAIT_SECONDS.labels(api_name(record.kind)).observe(
                max(0.0, (utcnow() - record.created_at).total_seconds()))
        kind = self.kinds.get(record.kind)
        units = kind.pending_units(record) if kind is not None else [None]
        held = Held(record=record, left={u for u in units if u is not None})
        with self._cond:
            self.held[task_id] = held
        return held

    def _abandon(self, task_id: str) -> None:
        """Another gateway holds the task now (or it is gone): stop here, recording nothing."""
        with self._cond:
            held = self.held.pop(task_id, None)
            self.queues.drop(task_id)
            runs = list(held.runs.values()) if held else []
        for run in runs:
            run.cancel(handback=True)

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
                status: TaskStatus | None
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
