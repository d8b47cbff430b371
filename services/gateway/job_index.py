"""Which tasks each API key made, newest first: the listing behind GET /v1/jobs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING

from libs.store.client import NotFound
from libs.tasks import TaskNotFound, record_key

if TYPE_CHECKING:
    from services.gateway.context import Gateway


class JobIndex:
    """Which key made each task, and when: facts that never change, read once per task with a HEAD."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self._known: dict[str, tuple[datetime, str | None]] = {}
        self._lock = threading.Lock()

    def _facts(self, task_id: str) -> tuple[datetime, str | None] | None:
        try:
            meta = self.gw.store.stat(record_key(task_id)).metadata
        except NotFound:
            return None
        if "created-at" in meta:
            return datetime.fromisoformat(meta["created-at"].replace("Z", "+00:00")), meta.get("key-id") or None
        try:  # a record written before these metadata existed
            rec, _ = self.gw.tasks.get(task_id)
        except TaskNotFound:
            return None
        return rec.created_at, rec.key_id

    def of_key(self, key_id: str | None) -> list[tuple[datetime, str]]:
        """(created_at, id) of every task of one key, newest first."""
        ids = self.gw.tasks.list_ids()
        with self._lock:
            unknown = [i for i in ids if i not in self._known]
        if unknown:
            with ThreadPoolExecutor(max_workers=8) as pool:
                found = dict(zip(unknown, pool.map(self._facts, unknown)))
        else:
            found = {}
        with self._lock:
            self._known.update({i: f for i, f in found.items() if f is not None})
            present = set(ids)
            self._known = {i: f for i, f in self._known.items() if i in present}
            mine = [(created, i) for i, (created, kid) in self._known.items() if kid == key_id]
        return sorted(mine, reverse=True)
