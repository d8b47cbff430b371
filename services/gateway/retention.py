"""Delete finished tasks, their objects and stale cache entries once they are past retention."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from libs.store.client import NotFound, ObjectStore
from libs.tasks import TaskStore
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def sweep(tasks: TaskStore, store: ObjectStore, retention: timedelta) -> int:
    """One pass: expired tasks with everything under their prefix, then cache and idempotency entries as old."""
    removed = tasks.sweep_expired(retention)
    cutoff = datetime.now(UTC) - retention
    for key in store.list_keys("cache/") + store.list_keys("idempotency/"):
        try:
            modified = store.stat(key).last_modified
            if modified is not None and modified < cutoff:
                store.delete(key)
        except NotFound:
            continue
    return removed


class RetentionSweeper:
    """Runs `sweep` every `sweep_interval_seconds` in a background thread."""

    def __init__(self, tasks: TaskStore, store: ObjectStore, settings: GatewaySettings):
        self._tasks = tasks
        self._store = store
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        retention = timedelta(hours=self._settings.retention_hours)
        while not self._stop.wait(self._settings.sweep_interval_seconds):
            try:
                sweep(self._tasks, self._store, retention)
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.warning("retention sweep failed", exc_info=True)
