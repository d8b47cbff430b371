"""The store scan: find unfinished tasks nobody runs and queue them, oldest first.

It runs when a gateway starts and then every `scan_interval_seconds`: tasks created by
another gateway, or held by one that died, are found here once their lease has expired.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus, TaskStore

log = logging.getLogger(__name__)

WAITING = frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING})


class StoreScan:
    """Reads the store for tasks to queue, remembering the ones it never needs to read again."""

    def __init__(self, tasks: TaskStore, gateway_id: str, runnable: Collection[str]):
        self.tasks = tasks
        self.gateway_id = gateway_id
        self.runnable = runnable  # task kinds this gateway runs
        # Tasks the scan never needs to look at again: finished (a final state) or of a kind
        # no dispatcher runs (a task's kind never changes). Without this every scan sends a
        # HEAD for every task kept in the store (24 h of them) every 2 s.
        self.settled: set[str] = set()

    def orphans(self, known: Callable[[], set[str]]) -> list[TaskRecord]:
        """Unfinished tasks nobody holds, oldest first; `known()` are those queued or held here."""
        found = []
        try:
            ids = self.tasks.list_ids()
        except Exception:  # noqa: BLE001 - the store is restarting; the next scan catches up
            log.warning("store scan failed", exc_info=True)
            return []
        self.settled.intersection_update(ids)  # forget deleted tasks
        # Queued here already: claimed when their turn comes, and not read before.
        skip = known()
        for task_id in ids:
            if task_id in skip or task_id in self.settled:
                continue
            try:
                meta = self.tasks.peek(task_id)
                if meta.finished:
                    self.settled.add(task_id)
                    continue
                if meta.status not in WAITING:
                    continue
                # A task this gateway id holds but this process does not run was held by its previous
                # process (a restarted container keeps its id): take it back without waiting for the
                # lease. Another holder's live lease is respected.
                mine = meta.owner == self.gateway_id
                if meta.owner and not mine and meta.lease_until and meta.lease_until.timestamp() > time.time():
                    continue
                rec, _ = self.tasks.get(task_id)
            except TaskNotFound:
                continue
            except Exception:  # noqa: BLE001
                log.warning("store scan failed on %s", task_id, exc_info=True)
                continue
            if rec.kind not in self.runnable:
                self.settled.add(task_id)
            elif rec.status in WAITING:
                found.append(rec)
        for rec in found:
            if rec.owner and rec.owner != self.gateway_id:
                log.info("taking over task %s from %s, whose lease expired", rec.id, rec.owner)
        return sorted(found, key=lambda r: r.created_at)
