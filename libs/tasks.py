"""Durable task records: one JSON object per task in the object store, changed only by compare-and-swap.

Layout (DESIGN.md, "Task state in object storage")::

    tasks/<id>.json          the whole record; user metadata repeats what is read often
    tasks/<id>/inputs/...    uploaded or fetched inputs
    tasks/<id>/outputs/...   results

Every write carries the ETag it was based on (``If-Match``, or ``If-None-Match: *`` on
create), so concurrent writers (several gateway replicas, a worker and a cancel request)
never lose each other's updates, and a task is claimed by exactly one owner at a time.
"""

from __future__ import annotations

import collections
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from libs.store.client import AlreadyExists, NotFound, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

TASKS_ROOT = "tasks/"
#: How long finished tasks are kept by default (the DICE-Talk document promises 24 h).
DEFAULT_RETENTION = timedelta(hours=24)
_RECENT_MAX = 10_000  # records kept by TaskStore.recent
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class TaskStatus(str, Enum):
    """Life cycle of a task; the last three are final."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED."""
        return self in FINISHED


FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TaskError(Exception):
    """Base class of task-store errors."""


class TaskNotFound(TaskError, LookupError):
    """No record with that id."""


class TaskExists(TaskError):
    """``create`` found a record with that id already."""


class TaskConflict(TaskError):
    """``update`` lost the compare-and-swap more times than it was allowed to retry."""


class LeaseLost(TaskError):
    """``renew`` by an owner that no longer holds the task."""


def utcnow() -> datetime:
    """Current time, timezone-aware UTC (every timestamp in a record is)."""
    return datetime.now(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    # Naive datetimes are taken as UTC: every writer here stores UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return _as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def valid_task_id(task_id: str) -> bool:
    """True if ``task_id`` can name a task (letters, digits, '-' and '_'; no path tricks)."""
    return bool(_ID.fullmatch(task_id))


class TaskRecord(BaseModel):
    """Everything known about one task; the body of ``tasks/<id>.json``."""

    # Unknown fields are kept, so a record written by a newer release survives a
    # read-modify-write by an older one during a rolling upgrade.
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), pattern=f"^{_ID.pattern}$")
    kind: str  # what to run: "dicetalk", "echomimic", "echomimic_multi", "latentsync", ...
    api: str  # which REST API created it, so GET /task answers in that API's shape
    status: TaskStatus = TaskStatus.PENDING
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)  # name -> object key
    outputs: dict[str, str] = Field(default_factory=dict)  # name -> object key
    engine: str | None = None
    error: str | None = None
    error_code: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Bumped on every write: the ETag is the body's MD5, so without it a write that
    # changed nothing else would keep the ETag and defeat compare-and-swap.
    revision: int = 0
    owner: str | None = None
    lease_until: datetime | None = None
    attempts: int = 0  # holders so far: every claim by a new owner, or after a lease ran out
    # Runs that failed through the job's own fault; the gateway's max_attempts of them fail the task.
    # Outages (a service or the store down) are not counted here.
    failures: int = 0
    idempotency_key: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)  # what the engine reported: frames, size, ...
    started_at: datetime | None = None  # when work on it first began
    # The API key that created the task (its id, never the key itself); None when made without one.
    key_id: str | None = None
    # talkserve's own API: where the final state is POSTed (delivery state: tasks/<id>/webhook.json).
    webhook_url: str | None = None
    # The running step as the model service reports it: stage, done, total, eta_seconds.
    progress_detail: dict[str, Any] = Field(default_factory=dict)
    # The result cache: the hash of the request's parameters and inputs, and whether the task
    # was answered with a copy of an earlier task's result.
    cache_key: str | None = None
    cached: bool = False
    # The X-Request-ID of the request that created it: the log lines of its work name it.
    request_id: str | None = None
    # talkserve's own API: the client's metadata, echoed on the job and its webhooks; and the
    # webhook events the client asked for (None: the final one only).
    metadata: dict[str, Any] | None = None
    webhook_events: list[str] | None = None

    @field_validator("created_at", "updated_at", "lease_until", "started_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value)

    @property
    def finished(self) -> bool:
        """True once the task reached a final status."""
        return self.status.finished

    def lease_live(self, now: datetime | None = None) -> bool:
        """True while an owner holds an unexpired lease."""
        return bool(self.owner and self.lease_until and self.lease_until > (now or utcnow()))

    @property
    def prefix(self) -> str:
        """Key prefix under which this task's inputs and outputs live."""
        return task_prefix(self.id)

    def input_key(self, name: str) -> str:
        """Object key for an input file of this task."""
        return f"{self.prefix}inputs/{name}"

    def output_key(self, name: str) -> str:
        """Object key for a result file of this task."""
        return f"{self.prefix}outputs/{name}"


@dataclass(frozen=True)
class TaskMeta:
    """The often-read part of a record, from the object's metadata (one HEAD, no body)."""

    id: str
    status: TaskStatus | None
    progress: float
    updated_at: datetime | None
    owner: str | None
    lease_until: datetime | None
    kind: str | None
    revision: int
    etag: str

    @property
    def finished(self) -> bool:
        """True once the task reached a final status."""
        return self.status is not None and self.status.finished


def record_key(task_id: str) -> str:
    """Object key of a task record."""
    return f"{TASKS_ROOT}{task_id}.json"


def task_prefix(task_id: str) -> str:
    """Key prefix of a task's inputs and outputs."""
    return f"{TASKS_ROOT}{task_id}/"


def _metadata(record: TaskRecord) -> dict[str, str]:
    return {
        "status": record.status.value,
        "progress": f"{record.progress:.4f}",
        "updated-at": _iso(record.updated_at),
        "owner": record.owner or "",
        "lease-until": _iso(record.lease_until),
        "kind": record.kind,
        "revision": str(record.revision),
        # Never change after creation: listing a key's jobs needs only a HEAD per task.
        "key-id": record.key_id or "",
        "created-at": _iso(record.created_at),
    }


def _body(record: TaskRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


class TaskStore:
    """Reads and writes task records; safe to share between threads and processes.

    Writers in one process queue on a per-task lock before the compare-and-swap: SeaweedFS
    makes a losing conditional write wait about a second, so local contenders should never
    race each other; only writers in other processes can.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # The last version of each record this process read or wrote, for status polling:
        # clients poll far more often than records change.
        self._recent: collections.OrderedDict[str, tuple[float, TaskRecord, str]] = collections.OrderedDict()
        self._recent_guard = threading.Lock()

    def _lock(self, task_id: str) -> threading.Lock:
        with self._locks_guard:
            if len(self._locks) > 10_000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(task_id, threading.Lock())

    # -- recently seen records ------------------------------------------------------------

    def _remember(self, record: TaskRecord, etag: str) -> None:
        with self._recent_guard:
            self._recent[record.id] = (time.monotonic(), record.model_copy(deep=True), etag)
            self._recent.move_to_end(record.id)
            while len(self._recent) > _RECENT_MAX:
                self._recent.popitem(last=False)

    def _forget(self, task_id: str) -> None:
        with self._recent_guard:
            self._recent.pop(task_id, None)

    def recent(self, task_id: str, max_age: float) -> TaskRecord | None:
        """The record as this process last read or wrote it, if that was at most `max_age` s ago.

        Writes made here are seen at once; writes made by other processes within `max_age`.
        The record is shared: callers must not change it.
        """
        with self._recent_guard:
            entry = self._recent.get(task_id)
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        return entry[1]

    def _last_known(self, task_id: str) -> tuple[TaskRecord, str] | None:
        """A private copy of the record as this process last read or wrote it, and its ETag."""
        with self._recent_guard:
            entry = self._recent.get(task_id)
        return None if entry is None else (entry[1].model_copy(deep=True), entry[2])

    # -- single records -------------------------------------------------------------------

    def create(self, record: TaskRecord) -> TaskRecord:
        """Store a new record (revision 1); raises ``TaskExists`` if the id is taken."""
        new = record.model_copy(deep=True)
        new.revision = 1
        new.updated_at = utcnow()
        try:
            etag = self.store.create_json(record_key(new.id), _body(new), _metadata(new))
        except AlreadyExists as exc:
            raise TaskExists(new.id) from exc
        self._remember(new, etag)
        return new

    def get(self, task_id: str) -> tuple[TaskRecord, str]:
        """The record and its ETag; raises ``TaskNotFound``."""
        if not valid_task_id(task_id):
            raise TaskNotFound(task_id)
        try:
            body, _, etag = self.store.read_json(record_key(task_id))
        except NotFound as exc:
            self._forget(task_id)
            raise TaskNotFound(task_id) from exc
        record = TaskRecord.model_validate(body)
        self._remember(record, etag)
        return record, etag

    def peek(self, task_id: str) -> TaskMeta:
        """Status, progress, owner and lease from the object's metadata only (a HEAD)."""
        if not valid_task_id(task_id):
            raise TaskNotFound(task_id)
        try:
            info = self.store.stat(record_key(task_id))
        except NotFound as exc:
            raise TaskNotFound(task_id) from exc
        meta = info.metadata
        try:
            status: TaskStatus | None = TaskStatus(meta.get("status", ""))
        except ValueError:
            status = None
        try:
            progress = float(meta.get("progress", "0"))
        except ValueError:
            progress = 0.0
        try:
            revision = int(meta.get("revision", "0"))
        except ValueError:
            revision = 0
        return TaskMeta(
            id=task_id,
            status=status,
            progress=progress,
            updated_at=_parse_time(meta.get("updated-at")) or info.last_modified,
            owner=meta.get("owner") or None,
            lease_until=_parse_time(meta.get("lease-until")),
            kind=meta.get("kind") or None,
            revision=revision,
            etag=info.etag,
        )

    def update(
        self,
        task_id: str,
        mutate: Callable[[TaskRecord], bool | None],
        retries: int = 20,
    ) -> TaskRecord:
        """Read, ``mutate`` in place, write back if the record is unchanged meanwhile.

        On a lost race the whole cycle runs again on the fresh record, so ``mutate`` must
        depend only on the record it is given (it may run several times). If it returns
        ``False`` nothing is written and the record as read is returned. Raises
        ``TaskNotFound``, or ``TaskConflict`` after ``retries`` lost races.
        """
        with self._lock(task_id):
            return self._update(task_id, mutate, retries)

    def _update(self, task_id: str, mutate: Callable[[TaskRecord], bool | None], retries: int) -> TaskRecord:
        # First try the version this process last read or wrote, without a GET: a task's writes
        # mostly come from the gateway that runs it, one after another. The compare-and-swap
        # still guards the write; if that copy was stale, or mutate would not write (or raises)
        # on it, the usual rounds follow on fresh reads, so every record this returns was read
        # from the store or written to it. The try costs none of the `retries`.
        known = self._last_known(task_id)
        if known is not None:
            record, etag = known
            base_revision = record.revision
            try:
                wanted = mutate(record) is not False
            except Exception:  # noqa: BLE001 - decided on what may be stale; decide again on a fresh read
                wanted = False
            if wanted and self._write(task_id, record, base_revision, etag):
                return record
        for attempt in range(retries + 1):
            record, etag = self.get(task_id)
            base_revision = record.revision
            if mutate(record) is False:
                return record
            if self._write(task_id, record, base_revision, etag):
                return record
            # Full jitter: contending writers spread out instead of colliding again.
            time.sleep(random.uniform(0.0, min(0.25, 0.005 * 2**attempt)))
        raise TaskConflict(f"{task_id}: gave up after {retries} lost compare-and-swap rounds")

    def _write(self, task_id: str, record: TaskRecord, base_revision: int, etag: str) -> bool:
        """Store ``record`` as the revision after ``base_revision`` if the object still has
        ``etag``; False when another write came first."""
        if record.id != task_id:
            raise ValueError("mutate must not change the task id")
        record.revision = base_revision + 1
        record.updated_at = utcnow()
        try:
            new_etag = self.store.replace_json(record_key(task_id), _body(record), _metadata(record), if_match=etag)
        except PreconditionFailed:
            return False
        self._remember(record, new_etag)
        return True

    # -- ownership ------------------------------------------------------------------------

    def claim(self, task_id: str, owner: str, lease_s: float) -> TaskRecord | None:
        """Take the task for ``owner`` for ``lease_s`` seconds.

        Returns the claimed record, or ``None`` when another owner holds a live lease or
        the task is finished. An expired lease is taken over (``attempts`` counts holders).
        """
        claimed = False

        def mutate(record: TaskRecord) -> bool:
            nonlocal claimed
            now = utcnow()
            claimed = False
            if record.finished:
                return False
            if record.owner != owner and record.lease_live(now):
                return False
            if record.owner != owner or not record.lease_live(now):
                record.attempts += 1
            record.owner = owner
            record.lease_until = now + timedelta(seconds=lease_s)
            claimed = True
            return True

        record = self.update(task_id, mutate)
        return record if claimed else None

    def renew(self, task_id: str, owner: str, lease_s: float) -> TaskRecord:
        """Extend ``owner``'s lease; raises ``LeaseLost`` if someone else holds the task.

        The returned record shows whether the task was cancelled meanwhile.
        """

        def mutate(record: TaskRecord) -> None:
            if record.owner != owner:
                raise LeaseLost(f"{task_id}: held by {record.owner!r}, not {owner!r}")
            record.lease_until = utcnow() + timedelta(seconds=lease_s)

        return self.update(task_id, mutate)

    def release(self, task_id: str, owner: str) -> TaskRecord:
        """Give the task up if ``owner`` holds it (no-op otherwise)."""

        def mutate(record: TaskRecord) -> bool:
            if record.owner != owner:
                return False
            record.owner = None
            record.lease_until = None
            return True

        return self.update(task_id, mutate)

    # -- many records ---------------------------------------------------------------------

    def list_ids(self, prefix: str = TASKS_ROOT) -> list[str]:
        """Ids of all task records under ``prefix`` (their input/output folders are skipped)."""
        ids = []
        for key in self.store.list_keys(prefix, recursive=False):
            name = key[len(TASKS_ROOT):] if key.startswith(TASKS_ROOT) else key
            if name.endswith(".json") and "/" not in name:
                ids.append(name[: -len(".json")])
        return ids

    def delete(self, task_id: str) -> None:
        """Remove the record and every object under ``tasks/<id>/``."""
        if not valid_task_id(task_id):
            raise TaskNotFound(task_id)
        # Files first, record last: if this is interrupted the record still exists,
        # so the next sweep finds the task and finishes the job.
        self.store.delete_prefix(task_prefix(task_id))
        self.store.delete(record_key(task_id))
        self._forget(task_id)

    def sweep_expired(self, older_than: timedelta = DEFAULT_RETENTION) -> int:
        """Delete finished tasks last updated more than ``older_than`` ago; returns how many."""
        cutoff = utcnow() - older_than
        removed = 0
        for task_id in self.list_ids():
            try:
                meta = self.peek(task_id)
            except TaskNotFound:
                continue
            if meta.finished and meta.updated_at is not None and meta.updated_at < cutoff:
                self.delete(task_id)
                removed += 1
        if removed:
            log.info("retention sweep removed %d finished tasks", removed)
        return removed
