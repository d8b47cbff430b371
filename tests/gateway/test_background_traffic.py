"""The gateway's background work scales with live work: the store scan and the dispatcher's
capacity checks leave finished tasks and replicas it keeps busy itself alone."""

import time
from datetime import datetime, timedelta, timezone

import requests

from libs.speech.espeak import synthesize, write_wav
from libs.store.client import ObjectStore
from libs.tasks import TaskRecord, TaskStatus, TaskStore
from tests import servers


def _counting(obj, name: str) -> list:
    """Count calls of a bound method of `obj` (the real method still runs)."""
    calls: list = []
    real = getattr(obj, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    setattr(obj, name, counted)
    return calls


def test_the_store_scan_reads_finished_tasks_once_and_queued_ones_never(seaweed):
    # No DICE-Talk replica: a task queued here stays queued.
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket, slots=1) as back, \
            servers.gateway_app(back, scan_interval_seconds=3600, dicetalk_targets=[]) as (_, app):
        dispatcher = app.state.gateway.dispatcher
        tasks = TaskStore(ObjectStore(bucket))
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        done = tasks.create(TaskRecord(kind="dicetalk", api="dicetalk", status=TaskStatus.COMPLETED))
        tasks.create(TaskRecord(kind="dicetalk", api="dicetalk", status=TaskStatus.FAILED))
        tasks.create(TaskRecord(kind="retired-kind", api="dicetalk", status=TaskStatus.PENDING))
        held = tasks.create(TaskRecord(kind="dicetalk", api="dicetalk", status=TaskStatus.PENDING,
                                       owner="gw-other", lease_until=later))
        dispatcher.submit(tasks.create(TaskRecord(kind="dicetalk", api="dicetalk", status=TaskStatus.PENDING)))
        heads = _counting(dispatcher.tasks.store, "stat")
        gets = _counting(dispatcher.tasks.store, "read_json")

        dispatcher._recover()
        assert len(heads) == 4 and len(gets) == 1  # the unknown kind's record is read to learn its kind

        heads.clear(), gets.clear()
        dispatcher._recover()
        dispatcher._recover()
        # Only the task another gateway holds can still change into one this gateway must run.
        assert [a[0] for a in heads] == [f"tasks/{held.id}.json"] * 2 and not gets
        assert dispatcher.queue_depth("dicetalk") == 1

        # A task deleted (retention) is forgotten: its id, were it ever used again, is read again.
        tasks.delete(done.id)
        dispatcher._recover()
        tasks.create(TaskRecord(id=done.id, kind="dicetalk", api="dicetalk", status=TaskStatus.PENDING,
                                owner="gw-other", lease_until=later))
        heads.clear()
        dispatcher._recover()
        assert sorted(a[0] for a in heads) == sorted(f"tasks/{t}.json" for t in (held.id, done.id))


def test_a_replica_this_gateway_keeps_busy_is_not_asked_for_free_slots(seaweed, portrait, tmp_path):
    speech = tmp_path / "longer.wav"  # jobs of about a second each
    write_wav(synthesize("Bob made a map of the moon, and then he made another one. " * 5), speech)
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket, slots=1) as back, \
            servers.gateway_app(back) as (url, app):
        (replica,) = app.state.gateway.clients.replicas["dicetalk"]
        asked = _counting(replica, "capacity")
        ids = []
        for seed in range(3):
            with open(portrait, "rb") as img, open(speech, "rb") as aud:
                resp = requests.post(f"{url}/api/v1/synthesis/start", files={"image": img, "audio": aud},
                                     data={"emotion": "neutral", "min_resolution": "512", "seed": str(seed)})
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["task_id"])
        started = time.monotonic()
        deadline = started + 240
        while time.monotonic() < deadline:
            states = [requests.get(f"{url}/api/v1/synthesis/{t}/status").json()["status"] for t in ids]
            if all(s in ("COMPLETED", "FAILED") for s in states):
                break
            time.sleep(0.1)
        assert states == ["COMPLETED"] * 3
        busy = time.monotonic() - started
        # One question per dispatch (a few more when a slot frees just after the replica was
        # asked), not one every 0.2 s while its only slot runs this gateway's job.
        assert busy > 2 and len(asked) <= 3 + 3, (len(asked), busy)
