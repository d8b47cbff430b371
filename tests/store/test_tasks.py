"""Task records in a real SeaweedFS: CAS updates, claims and leases, retention sweep, store restarts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from libs.store.client import ObjectStore
from libs.store.seaweed import SeaweedServer
from libs.tasks import (
    LeaseLost,
    TaskExists,
    TaskNotFound,
    TaskRecord,
    TaskStatus,
    TaskStore,
    record_key as task_key,
)


@pytest.fixture
def tasks(store: ObjectStore) -> TaskStore:
    return TaskStore(store)


def _new(**kw) -> TaskRecord:
    return TaskRecord(kind=kw.pop("kind", "dicetalk"), api=kw.pop("api", "dicetalk"), **kw)


def test_create_get_update(tasks: TaskStore) -> None:
    rec = tasks.create(_new(params={"emo_scale": 5}, idempotency_key="req-1"))
    assert rec.revision == 1
    got, etag = tasks.get(rec.id)
    assert got == rec and got.status is TaskStatus.PENDING
    assert got.created_at.tzinfo is not None

    def start(r: TaskRecord) -> None:
        r.status = TaskStatus.PROCESSING
        r.progress = 0.25
        r.message = "rendering"
        r.inputs["image"] = r.input_key("face.png")

    updated = tasks.update(rec.id, start)
    assert updated.revision == 2 and updated.updated_at >= rec.updated_at
    got, etag2 = tasks.get(rec.id)
    assert etag2 != etag
    assert got.status is TaskStatus.PROCESSING and got.progress == 0.25
    assert got.inputs == {"image": f"tasks/{rec.id}/inputs/face.png"}
    assert got.params == {"emo_scale": 5} and got.idempotency_key == "req-1"

    # The cheap read sees the same state from metadata alone.
    meta = tasks.peek(rec.id)
    assert meta.status is TaskStatus.PROCESSING and meta.progress == 0.25
    assert meta.kind == "dicetalk" and meta.revision == 2 and meta.etag == etag2
    assert meta.updated_at == got.updated_at and meta.owner is None and not meta.finished

    # A write that changes nothing visible still changes the ETag (revision).
    tasks.update(rec.id, lambda r: None)
    assert tasks.get(rec.id)[1] != etag2
    # Returning False means: do not write.
    _, before = tasks.get(rec.id)
    tasks.update(rec.id, lambda r: False)
    assert tasks.get(rec.id)[1] == before


def test_recent_records_for_status_polling(tasks: TaskStore, store: ObjectStore) -> None:
    rec = tasks.create(_new())
    assert tasks.recent(rec.id, max_age=5).status is TaskStatus.PENDING
    # This process's own writes are seen at once.
    tasks.update(rec.id, lambda r: setattr(r, "status", TaskStatus.PROCESSING))
    assert tasks.recent(rec.id, max_age=5).status is TaskStatus.PROCESSING
    # Another process's write is seen once the remembered copy is older than max_age.
    other = TaskStore(store)
    other.update(rec.id, lambda r: setattr(r, "progress", 0.5))
    assert tasks.recent(rec.id, max_age=5).progress == 0.0
    time.sleep(0.05)
    assert tasks.recent(rec.id, max_age=0.01) is None
    assert tasks.get(rec.id)[0].progress == 0.5 and tasks.recent(rec.id, max_age=5).progress == 0.5
    # The remembered copy is not the caller's: changing a returned record changes nothing.
    got, _ = tasks.get(rec.id)
    got.progress = 0.9
    assert tasks.recent(rec.id, max_age=5).progress == 0.5
    tasks.delete(rec.id)
    assert tasks.recent(rec.id, max_age=5) is None


def test_errors(tasks: TaskStore) -> None:
    rec = tasks.create(_new())
    with pytest.raises(TaskExists):
        tasks.create(_new(id=rec.id))
    missing = str(uuid.uuid4())
    for call in (tasks.get, tasks.peek, lambda i: tasks.update(i, lambda r: None)):
        with pytest.raises(TaskNotFound):
            call(missing)
    with pytest.raises(TaskNotFound):
        tasks.get("../../etc/passwd")
    with pytest.raises(ValueError):
        _new(id="../x")
    with pytest.raises(ValueError):
        tasks.update(rec.id, lambda r: setattr(r, "progress", 1.5))


def test_no_lost_updates_under_contention(tasks: TaskStore) -> None:
    rec = tasks.create(_new(params={"count": 0}))
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def bump(r: TaskRecord) -> None:
        r.params["count"] += 1

    def worker() -> None:
        start.wait()
        try:
            for _ in range(10):
                tasks.update(rec.id, bump, retries=200)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final, _ = tasks.get(rec.id)
    assert final.params["count"] == 80
    assert final.revision == 81


def test_own_writes_need_no_read_and_others_writes_are_not_lost(store: ObjectStore) -> None:
    """A gateway writing its task's progress one update after another does not read the
    record first each time; a write by another process in between is still merged, and a
    decision is never taken on the stale copy."""
    mine, theirs = TaskStore(store), TaskStore(store)
    reads = []
    real_read = store.read_json

    def counted(key):
        reads.append(key)
        return real_read(key)

    rec = mine.create(_new(params={"mine": 0, "theirs": 0}))
    store.read_json = counted
    try:
        for i in range(1, 6):
            mine.update(rec.id, lambda r, i=i: r.params.__setitem__("mine", i))
        assert reads == []
        # another gateway's write in between: the next update finds its copy stale, reads once
        theirs.update(rec.id, lambda r: r.params.__setitem__("theirs", 1))
        reads.clear()
        mine.update(rec.id, lambda r: r.params.__setitem__("mine", 6))
        assert len(reads) == 1
        final, _ = theirs.get(rec.id)
        assert final.params == {"mine": 6, "theirs": 1} and final.revision == 8
        # a lease taken over elsewhere is seen even though the remembered copy still says ours
        assert mine.claim(rec.id, "gw-a", lease_s=0.3) is not None
        time.sleep(0.4)
        assert theirs.claim(rec.id, "gw-b", lease_s=30) is not None
        with pytest.raises(LeaseLost):
            mine.renew(rec.id, "gw-a", lease_s=30)
        # a refusal is never decided on the old copy: this process last saw gw-b's live
        # lease, and gw-b has let go since
        assert mine.get(rec.id)[0].owner == "gw-b"
        theirs.release(rec.id, "gw-b")
        assert mine.claim(rec.id, "gw-a", lease_s=30) is not None
        # the try on the remembered copy is not one of the lost races `retries` allows
        theirs.update(rec.id, lambda r: r.params.__setitem__("theirs", 2))
        assert mine.update(rec.id, lambda r: r.params.__setitem__("mine", 7), retries=0).params == {
            "mine": 7, "theirs": 2}
    finally:
        store.read_json = real_read


def test_claim_renew_expiry_takeover(tasks: TaskStore) -> None:
    rec = tasks.create(_new())
    a = tasks.claim(rec.id, "gw-a", lease_s=0.6)
    assert a is not None and a.owner == "gw-a" and a.attempts == 1
    assert tasks.claim(rec.id, "gw-b", lease_s=30) is None  # live lease
    assert tasks.peek(rec.id).owner == "gw-a"
    renewed = tasks.renew(rec.id, "gw-a", lease_s=0.6)
    assert renewed.lease_until > a.lease_until
    assert tasks.claim(rec.id, "gw-a", lease_s=0.6).attempts == 1  # re-claim by holder
    with pytest.raises(LeaseLost):
        tasks.renew(rec.id, "gw-b", lease_s=30)

    time.sleep(0.8)  # gw-a "died": its lease runs out
    b = tasks.claim(rec.id, "gw-b", lease_s=30)
    assert b is not None and b.owner == "gw-b" and b.attempts == 2
    with pytest.raises(LeaseLost):
        tasks.renew(rec.id, "gw-a", lease_s=30)
    meta = tasks.peek(rec.id)
    assert meta.owner == "gw-b" and meta.lease_until == b.lease_until

    released = tasks.release(rec.id, "gw-b")
    assert released.owner is None and released.lease_until is None
    # Finished tasks are never claimed.
    tasks.update(rec.id, lambda r: setattr(r, "status", TaskStatus.COMPLETED))
    assert tasks.claim(rec.id, "gw-c", lease_s=30) is None


def test_racing_claims_have_one_winner(tasks: TaskStore) -> None:
    for _ in range(3):
        rec = tasks.create(_new())
        barrier = threading.Barrier(6)
        winners: list[str] = []

        def claim(owner: str, task_id: str = rec.id) -> None:
            barrier.wait()
            if tasks.claim(task_id, owner, lease_s=30) is not None:
                winners.append(owner)

        threads = [threading.Thread(target=claim, args=(f"gw-{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        assert tasks.get(rec.id)[0].owner == winners[0]


def test_list_delete_and_sweep(tasks: TaskStore, store: ObjectStore) -> None:
    old_done = tasks.create(_new())
    old_failed = tasks.create(_new(kind="latentsync", api="latentsync"))
    old_running = tasks.create(_new())
    for rec in (old_done, old_failed):
        store.put_bytes(rec.input_key("a.wav"), b"in")
        store.put_bytes(rec.output_key("v.mp4"), b"out")
    tasks.update(old_done.id, lambda r: setattr(r, "status", TaskStatus.COMPLETED))
    tasks.update(old_failed.id, lambda r: setattr(r, "status", TaskStatus.FAILED))
    tasks.update(old_running.id, lambda r: setattr(r, "status", TaskStatus.PROCESSING))
    time.sleep(1.1)
    fresh_done = tasks.create(_new())
    tasks.update(fresh_done.id, lambda r: setattr(r, "status", TaskStatus.CANCELLED))

    ids = set(tasks.list_ids())
    assert ids == {old_done.id, old_failed.id, old_running.id, fresh_done.id}

    assert tasks.sweep_expired(timedelta(seconds=1)) == 2
    assert set(tasks.list_ids()) == {old_running.id, fresh_done.id}
    for gone in (old_done, old_failed):
        assert store.list_keys(gone.prefix) == []
        with pytest.raises(TaskNotFound):
            tasks.get(gone.id)

    store.put_bytes(fresh_done.output_key("v.mp4"), b"out")
    tasks.delete(fresh_done.id)
    assert store.list_keys(fresh_done.prefix) == [] and not store.exists(task_key(fresh_done.id))
    assert tasks.list_ids() == [old_running.id]


@pytest.fixture
def private_seaweed(tmp_path) -> Iterator[SeaweedServer]:
    """A server of this test's own, so restarting it disturbs no other test."""
    with SeaweedServer(tmp_path / "seaweed") as server:
        yield server


def test_survives_store_restart_and_crash(private_seaweed: SeaweedServer) -> None:
    store = ObjectStore(private_seaweed.settings)
    store.ensure_bucket()
    tasks = TaskStore(store)
    rec = tasks.create(_new(params={"count": 0}))

    def bump(r: TaskRecord) -> None:
        r.params["count"] += 1

    # Graceful restart: the pooled connections go stale; the next call reconnects.
    port = private_seaweed.s3_port
    private_seaweed.restart()
    assert private_seaweed.s3_port == port
    tasks.update(rec.id, bump)

    # Writes issued while the store is down wait for it to come back.
    private_seaweed.stop()
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(3):
                tasks.update(rec.id, bump)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1.5)
    assert not done.is_set()  # still retrying, not failed
    private_seaweed.start()
    thread.join(timeout=30)
    assert done.is_set() and not failures

    # A hard crash (SIGKILL) loses no acknowledged write.
    private_seaweed.kill()
    private_seaweed.start()
    final, _ = tasks.get(rec.id)
    assert final.params["count"] == 4
    assert final.revision == 5
