"""Fault injection with real processes: jobs survive a killed model replica, a killed gateway
and a store restart; none is lost and none is rendered to completion twice."""

import collections
import re
import time

import av
import grpc
import pytest
import requests
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from libs.store.client import ObjectStore
from libs.tasks import TaskStatus, TaskStore
from services.stack import Stack, free_port
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc

JOBS = 40
WAVE = 10  # jobs submitted right before the gateway is killed, and again before the store restarts


def _submit(url, portrait, speech, seed):
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        resp = requests.post(f"{url}/api/v1/synthesis/start", files={"image": img, "audio": aud},
                             data={"emotion": "neutral", "min_resolution": "128", "fps": "24", "seed": str(seed)},
                             timeout=60)
    resp.raise_for_status()
    return resp.json()["task_id"]


def _statuses(urls, ids):
    """Status of every job, asked of whichever gateway answers (one may be down)."""
    out = {}
    for task_id in ids:
        for url in urls:
            try:
                out[task_id] = requests.get(f"{url}/v1/jobs/{task_id}", timeout=10).json()["status"]
                break
            except (requests.RequestException, ValueError, KeyError):
                continue
    return out


def _wait_busy(target, timeout=60):
    """Until the replica at `target` runs a job."""
    with grpc.insecure_channel(target) as channel:
        worker = worker_pb2_grpc.WorkerServiceStub(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cap = worker.GetCapacity(worker_pb2.GetCapacityRequest(), timeout=5)
            if cap.slots_free < cap.slots_total:
                return
            time.sleep(0.02)
    raise AssertionError(f"{target} never got a job")


def _wait_held(tasks, ids, owner, timeout=60):
    """Ids of the jobs `owner` is running, once it runs at least one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held, done = [], 0
        for task_id in ids:
            meta = tasks.peek(task_id)
            if meta.owner == owner and meta.status == TaskStatus.PROCESSING:
                held.append(task_id)
            done += meta.status == TaskStatus.COMPLETED
        if held:
            return held
        # the fault must hit running work: if the jobs outran the test, it proves nothing
        assert done < len(ids), f"every job finished before {owner} could be caught running one"
        time.sleep(0.05)
    raise AssertionError(f"{owner} never held a running job")


def _wait_completed(urls, ids, at_least, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _statuses(urls, ids)
        if sum(1 for s in states.values() if s == "COMPLETED") >= at_least:
            return states
        time.sleep(0.5)
    raise AssertionError(f"fewer than {at_least} completed: {collections.Counter(states.values())}")


@pytest.mark.timeout(600)
def test_jobs_survive_a_killed_replica_a_killed_gateway_and_a_store_restart(tmp_path):
    portrait, speech = tmp_path / "portrait.png", tmp_path / "speech.wav"
    Image.fromarray(data.astronaut()).save(portrait)
    # Long enough (about 4 s, 100 frames) that work is left for every fault to hit.
    write_wav(synthesize("Hello, this is one of forty jobs, and each of them has a few more words to say."),
              speech)

    stack = Stack(
        data_dir=tmp_path / "stack", gateway_ports=[free_port()], gateways=2,
        replicas={"dicetalk": 2, "echomimic": 0, "latentsync": 0},
        extra_env={
            "TALKSERVE_GATEWAY_LEASE_SECONDS": "3",
            "TALKSERVE_GATEWAY_SCAN_INTERVAL_SECONDS": "1",
            # Each injected fault may cost a job one attempt.
            "TALKSERVE_GATEWAY_MAX_ATTEMPTS": "5",
        },
    )
    with stack:
        urls = stack.gateway_urls
        # Each fault gets fresh work to interrupt, however fast the jobs before it ran.
        def submit(first, count):
            return [_submit(urls[i % 2], portrait, speech, seed=i) for i in range(first, first + count)]

        ids = submit(0, JOBS - 2 * WAVE)

        tasks = TaskStore(ObjectStore(stack.store_settings))

        _wait_completed(urls, ids, 4, timeout=120)
        _wait_busy(stack.service("dicetalk-0").target)
        stack.kill("dicetalk-0")
        stack.restart("dicetalk-0")

        ids += submit(JOBS - 2 * WAVE, WAVE)
        held = []
        for _ in range(3):  # a job seen running may finish before the kill lands: try again
            seen = _wait_held(tasks, ids, "gateway-1")
            stack.kill("gateway-1")
            # what the dead gateway still held: it can no longer finish or release these
            held = [t for t in seen if tasks.peek(t).status == TaskStatus.PROCESSING
                    and tasks.peek(t).owner == "gateway-1"]
            stack.restart("gateway-1")
            if held:
                break
        assert held, "the killed gateway never died holding a running job"

        ids += submit(JOBS - WAVE, WAVE)
        stack.seaweed.restart()

        states = _wait_completed(urls, ids, JOBS, timeout=300)
        assert collections.Counter(states.values()) == {"COMPLETED": JOBS}

        for task_id in held:
            record = tasks.get(task_id)[0]
            assert record.attempts >= 2, "a task held by the killed gateway was not taken over"
        for task_id in ids:
            resp = requests.get(f"{urls[0]}/api/v1/synthesis/{task_id}/download", timeout=30)
            assert resp.status_code == 200
            path = tmp_path / f"{task_id}.mp4"
            path.write_bytes(resp.content)
            with av.open(str(path)) as container:
                assert container.streams.video and container.streams.audio

    finished = collections.Counter()
    for log_file in (tmp_path / "stack" / "logs").glob("dicetalk-*.log"):
        for match in re.finditer(r"job (\S+) finished", log_file.read_text(errors="replace")):
            finished[match.group(1)] += 1
    # A replica killed after publishing a video but before logging it leaves a render that
    # the retry reuses (the gateway says so) instead of rendering again.
    reused = set()
    for log_file in (tmp_path / "stack" / "logs").glob("gateway*.log"):
        reused |= set(re.findall(r"task (\S+): reusing the render of an earlier attempt",
                                 log_file.read_text(errors="replace")))
    assert set(finished) | reused == set(ids), "a job completed without the model service rendering it"
    twice = {k: v for k, v in finished.items() if v > 1}
    assert not twice, f"rendered to completion more than once: {twice}"
