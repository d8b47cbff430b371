"""Task lifecycle guarantees inside one process: idempotency, cache, cancel, order, retention, hand-over."""

import threading
import time
from datetime import timedelta

import pytest
import requests

from libs.store.client import ObjectStore
from libs.tasks import TaskRecord, TaskStatus, TaskStore
from services.gateway.keys import ref
from services.gateway.pipeline import HandedBack, Pipeline, Run
from services.gateway.retention import sweep
from services.gateway.settings import GatewaySettings
from talkserve.dicetalk.v1 import dicetalk_pb2
from tests import servers


@pytest.fixture(scope="module")
def one_slot(seaweed):
    """A stack whose model replicas run one job at a time, so queues form."""
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket, slots=1) as back:
        with servers.gateway(back) as url:
            yield url, back


def _post_dicetalk(url, portrait, speech, headers=None, **data):
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        return requests.post(f"{url}/api/v1/synthesis/start", files={"image": img, "audio": aud},
                             data={"emotion": "neutral", "min_resolution": "128", **data}, headers=headers)


def _job(url, task_id):
    return requests.get(f"{url}/v1/jobs/{task_id}").json()


def _wait_status(url, task_id, statuses, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(url, task_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{task_id} never reached {statuses}: {job}")


def test_idempotency_key_replays_and_conflicts(stack, portrait, speech):
    url, _ = stack
    first = _post_dicetalk(url, portrait, speech, headers={"Idempotency-Key": "abc-1"}, seed="5")
    again = _post_dicetalk(url, portrait, speech, headers={"Idempotency-Key": "abc-1"}, seed="5")
    assert first.status_code == again.status_code == 200
    assert first.json()["task_id"] == again.json()["task_id"]
    other = _post_dicetalk(url, portrait, speech, headers={"Idempotency-Key": "abc-1"}, seed="6")
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]
    body = {"video_url": "http://10.0.0.1/v.mp4", "audio_url": "http://10.0.0.1/a.wav"}
    a = requests.post(f"{url}/sync", json=body, headers={"Idempotency-Key": "sync-1"}).json()
    b = requests.post(f"{url}/sync", json=body, headers={"Idempotency-Key": "sync-1"}).json()
    assert a["task_id"] == b["task_id"]
    assert requests.post(f"{url}/sync", json=body | {"inference_steps": 30},
                         headers={"Idempotency-Key": "sync-1"}).status_code == 409
    requests.post(f"{url}/v1/jobs/{a['task_id']}/cancel")


def test_repeated_request_is_served_from_the_cache(stack, portrait, speech):
    url, _ = stack
    first = _post_dicetalk(url, portrait, speech, seed="77", fps="12").json()
    assert _wait_status(url, first["task_id"], {"COMPLETED"})["status"] == "COMPLETED"
    started = time.monotonic()
    second = _post_dicetalk(url, portrait, speech, seed="77", fps="12").json()
    assert second["status"] == "COMPLETED" and time.monotonic() - started < 5
    assert second["task_id"] != first["task_id"]
    a = requests.get(f"{url}/api/v1/synthesis/{first['task_id']}/download").content
    b = requests.get(f"{url}/api/v1/synthesis/{second['task_id']}/download").content
    assert a == b and len(a) > 1000
    different = _post_dicetalk(url, portrait, speech, seed="78", fps="12").json()
    assert different["status"] == "PENDING"


def test_cancel_mid_generation_frees_the_slot_for_the_next_task(one_slot, portrait, speech):
    url, _ = one_slot
    # long enough (20 s at 512 px, 60 fps) that it is still rendering when the test cancels it
    long_job = _post_dicetalk(url, portrait, speech, min_resolution="512", fps="60", duration="20").json()["task_id"]
    waiting = _post_dicetalk(url, portrait, speech, fps="8").json()["task_id"]
    running = _wait_status(url, long_job, {"PROCESSING"})
    assert running["status"] == "PROCESSING"
    deadline = time.monotonic() + 30
    while _job(url, long_job)["progress"] < 0.2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _job(url, waiting)["status"] == "PENDING"
    cancelled_at = time.monotonic()
    resp = requests.post(f"{url}/v1/jobs/{long_job}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "CANCELLED"
    started = _wait_status(url, waiting, {"PROCESSING", "COMPLETED"}, timeout=10)
    assert time.monotonic() - cancelled_at < 5, "the next task did not get the freed slot"
    assert started["status"] in ("PROCESSING", "COMPLETED")
    assert _wait_status(url, waiting, {"COMPLETED"})["status"] == "COMPLETED"
    final = requests.get(f"{url}/api/v1/synthesis/{long_job}/status").json()
    assert final["status"] == "FAILED" and final["message"] == "Cancelled by the client"
    assert requests.post(f"{url}/v1/jobs/{long_job}/cancel").status_code == 409


def test_queue_positions_match_the_order_tasks_start(one_slot, tmp_path):
    url, back = one_slot
    # A private address is refused before any connection, so each task fails at once when it
    # starts; what matters here is the order in which they start.
    body = {"video_url": "http://10.0.0.1/v.mp4", "audio_url": "http://10.0.0.1/a.wav"}
    created = [requests.post(f"{url}/sync", json=body).json() for _ in range(5)]
    positions = [c["queue_position"] for c in created]
    # Positions count waiting tasks only: a task that already started does not hold a place.
    assert positions == sorted(positions) and positions[-1] <= 4
    for c in created:
        _wait_status(url, c["task_id"], {"FAILED", "COMPLETED", "CANCELLED"}, timeout=60)
    tasks = TaskStore(ObjectStore(back.store_settings))
    starts = [tasks.get(c["task_id"])[0].started_at for c in created]
    assert all(s is not None for s in starts)
    assert starts == sorted(starts), "tasks started out of their queue order"


def test_retention_sweep_removes_finished_tasks_and_their_objects(stack, portrait, speech):
    url, back = stack
    store = ObjectStore(back.store_settings)
    tasks = TaskStore(store)
    done = _post_dicetalk(url, portrait, speech, fps="8").json()["task_id"]
    _wait_status(url, done, {"COMPLETED"})
    assert store.list_keys(f"tasks/{done}/")
    removed = sweep(tasks, store, timedelta(seconds=0))
    assert removed >= 1
    assert store.list_keys(f"tasks/{done}/") == []
    # Deleted by another process (as by another gateway's sweeper): the gateway's status answers
    # may lag by status_max_age_seconds (0.5 s), no more.
    time.sleep(0.6)
    assert requests.get(f"{url}/api/v1/synthesis/{done}/status").status_code == 404


def test_a_second_gateway_finishes_what_a_stopped_one_held(seaweed, portrait, speech):
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket, slots=1) as back:
        with servers.gateway(back, shutdown_grace_seconds=0.5) as first:
            # long enough (20 s at 768 px, 60 fps) to be still running when the gateway stops
            task = _post_dicetalk(first, portrait, speech, min_resolution="768", fps="60",
                                  duration="20").json()["task_id"]
            _wait_status(first, task, {"PROCESSING"})
        # The first gateway handed the task back when it stopped; a new one picks it up.
        record = TaskStore(ObjectStore(back.store_settings)).get(task)[0]
        assert record.status == TaskStatus.PENDING and record.owner is None
        with servers.gateway(back) as second:
            assert _wait_status(second, task, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"


def test_a_gateway_whose_task_was_taken_over_writes_nothing_more(seaweed):
    """A gateway that stalled past its lease must not overwrite what the new holder does."""
    # a bucket no running gateway scans: its dispatcher would race "gw-new" for the task
    with servers.fresh_bucket(seaweed.settings) as bucket:
        _taken_over_writes_nothing(TaskStore(ObjectStore(bucket)))


def _taken_over_writes_nothing(tasks: TaskStore) -> None:
    store = tasks.store
    stalled = Pipeline(GatewaySettings(gateway_id="gw-stalled"), None, tasks, store)
    rec = tasks.create(TaskRecord(kind="dicetalk", api="dicetalk"))
    assert tasks.claim(rec.id, "gw-stalled", 0.05)
    stalled.set(rec.id, 0.3, "rendering", status=TaskStatus.PROCESSING)
    time.sleep(0.1)
    assert tasks.claim(rec.id, "gw-new", 60)  # the lease ran out: another gateway takes over
    with pytest.raises(HandedBack):
        stalled.set(rec.id, 0.9, "stale progress")
    with pytest.raises(HandedBack):
        stalled.set(rec.id, 1.0, "done twice", status=TaskStatus.COMPLETED)
    # Nor does it start rendering: that would render the task twice.
    run = Run(record=rec, replica=None, stop=threading.Event())
    with pytest.raises(HandedBack):
        stalled.render(run, "Synthesize", dicetalk_pb2.SynthesizeRequest(output=ref(f"tasks/{rec.id}/out.mp4")),
                       0.1, 0.9, lambda f, m: None)
    now, _ = tasks.get(rec.id)
    assert now.owner == "gw-new" and now.status == TaskStatus.PROCESSING
    assert now.progress == 0.3 and now.message == "rendering"
