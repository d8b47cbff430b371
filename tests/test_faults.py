"""Fault injection with real processes and the default settings (lease, attempts, retries):
jobs of every model kind survive SIGKILLed media and model services, a SIGKILLed gateway and
a store that is down for longer than its clients' own retries; none is lost, none fails, none
is stuck and none is rendered to completion twice.

Each component is killed and restarted within seconds, first one at a time (each while it has
work: a job of its kind running, or for the store and media, any job running), then all of
them in a row. Clients behave as documented clients do: they poll, and they retry a request
that found no gateway (or a 503 with Retry-After) a little later.
"""

from __future__ import annotations

import collections
import functools
import http.server
import itertools
import json
import re
import threading
import time

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
from tests.echofu.conftest import training_video  # noqa: F401 - a fixture

KINDS = ("dicetalk", "echomimic", "latentsync", "voice")
FIRST_BATCH = 8  # jobs of each kind queued before the first fault: 32 in all
WAVE = 4  # more jobs of the kind about to be hit, so it has work running when it is killed
DOWN_SECONDS = 2.0  # how long a killed service stays down before it is started again
STORE_DOWN_SECONDS = 35.0  # longer than the store clients' own 30 s of retries


class Clients:
    """What the test's clients do: submit to either gateway, poll, and retry while none answers."""

    def __init__(self, urls: list[str], web: str, model: str, ref_audio: str, portrait: bytes, speech: bytes):
        self.urls, self.web, self.model, self.ref_audio = urls, web, model, ref_audio
        self.portrait, self.speech = portrait, speech
        self.ids: dict[str, str] = {}  # job id -> kind
        self._seed = itertools.count(1)
        self._turn = itertools.count()

    def request(self, method: str, path: str, deadline: float = 120.0, **kw) -> requests.Response:
        """The answer of whichever gateway answers; waits out connection errors and 503s."""
        stop = time.monotonic() + deadline
        for attempt in itertools.count(next(self._turn)):  # requests take turns between the gateways
            url = self.urls[attempt % len(self.urls)]
            try:
                resp = requests.request(method, url + path, timeout=60, **kw)
                if resp.status_code != 503:
                    return resp
                wait = min(float(resp.headers.get("retry-after", "1")), 2.0)
            except requests.ConnectionError:
                wait = 0.5
            assert time.monotonic() < stop, f"{method} {path}: no gateway answered for {deadline} s"
            time.sleep(wait)

    def submit(self, kind: str) -> str:
        seed = next(self._seed)
        # An Idempotency-Key makes a create that is retried after a lost answer the same job.
        key = {"Idempotency-Key": f"fault-{kind}-{seed}"}
        if kind == "dicetalk":
            resp = self.request("POST", "/api/v1/synthesis/start", headers=key,
                                files={"image": ("p.png", self.portrait), "audio": ("s.wav", self.speech)},
                                data={"emotion": "neutral", "min_resolution": "128", "seed": str(seed)})
            task_id = resp.json()["task_id"]
        elif kind == "echomimic":
            resp = self.request("POST", "/generate_video", headers=key,
                                files={"reference_image": ("p.png", self.portrait), "audio_file": ("s.wav", self.speech)},
                                data={"width": "128", "height": "128", "seed": str(seed)})
            task_id = resp.json()["task_id"]
        elif kind == "latentsync":
            resp = self.request("POST", "/sync", headers=key, json={
                "video_url": f"{self.web}/talk.mp4", "audio_url": f"{self.web}/speech.wav", "seed": seed})
            task_id = resp.json()["task_id"]
        else:  # EchOfU person video; that API has no Idempotency-Key, so it is sent while a gateway is up
            resp = self.request("POST", "/video_generation?async=1",
                                data={"model_param": self.model, "ref_audio": self.ref_audio})
            task_id = resp.json()["task_id"]
        assert resp.status_code == 200, resp.text
        self.ids[task_id] = kind
        return task_id

    def statuses(self) -> dict[str, str]:
        return {task_id: self.request("GET", f"/v1/jobs/{task_id}").json()["status"] for task_id in self.ids}


def _busy(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        cap = worker_pb2_grpc.WorkerServiceStub(channel).GetCapacity(worker_pb2.GetCapacityRequest(), timeout=5)
        return cap.slots_free < cap.slots_total


def _wait_until(condition, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _running(tasks: TaskStore, ids, owner: str | None = None) -> bool:
    """A job (held by `owner`, when given) is running now."""
    for task_id in list(ids):
        try:
            meta = tasks.peek(task_id)
        except Exception:  # noqa: BLE001 - the store may be coming back
            return False
        if meta.status == TaskStatus.PROCESSING and (owner is None or meta.owner == owner):
            return True
    return False


def _web_server(folder) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.mark.timeout(900)
def test_no_job_is_lost_failed_stuck_or_rendered_twice(tmp_path, training_video):  # noqa: F811
    portrait, speech = tmp_path / "portrait.png", tmp_path / "speech.wav"
    Image.fromarray(data.astronaut()).resize((256, 256)).save(portrait)
    write_wav(synthesize("Hello, this is one of many jobs, and it has a few words to say."), speech)
    web = tmp_path / "web"
    web.mkdir()
    (web / "talk.mp4").write_bytes(training_video.read_bytes())
    (web / "speech.wav").write_bytes(speech.read_bytes())
    httpd = _web_server(web)

    stack = Stack(data_dir=tmp_path / "stack", gateway_ports=[free_port()], gateways=2,
                  replicas={kind: 1 for kind in KINDS},
                  # Default lease, attempts and retries; only LatentSync's URL inputs on this machine are allowed.
                  extra_env={"TALKSERVE_MEDIA_FETCH_ALLOW_NETWORKS": json.dumps(["127.0.0.1/32"])})
    restarts: list[tuple[str, float, float]] = []  # (name, seconds down, seconds to serve again)
    try:
        with stack:
            urls = stack.gateway_urls
            tasks = TaskStore(ObjectStore(stack.store_settings))
            boot = Clients(urls, f"http://127.0.0.1:{httpd.server_address[1]}", "", "",
                           portrait.read_bytes(), speech.read_bytes())
            # EchOfU needs a person model and a reference recording first.
            ref = boot.request("POST", "/api/upload-reference-audio",
                               files={"audio": ("speech.wav", speech.read_bytes())}).json()["relative_path"]
            video = boot.request("POST", "/api/upload-training-video",
                                 files={"video": ("talk.mp4", training_video.read_bytes())}).json()["relative_path"]
            train = boot.request("POST", "/model_training", data={"ref_video": video}).json()
            _wait_until(lambda: boot.request("GET", f"/api/train-status/{train['task_id']}").json()["state"]
                        == "completed", "the person model was trained")
            clients = Clients(urls, boot.web, train["model_path"], ref, boot.portrait, boot.speech)

            for kind in KINDS:
                for _ in range(FIRST_BATCH):
                    clients.submit(kind)
            assert len(clients.ids) >= 30

            def kill_and_restart(name: str, down: float = DOWN_SECONDS) -> None:
                killed = time.monotonic()
                if name == "store":
                    stack.seaweed.kill()
                    time.sleep(down)
                    started = time.monotonic()
                    stack.seaweed.start()
                else:
                    stack.kill(name)
                    time.sleep(down)
                    started = time.monotonic()
                    stack.restart(name)
                restarts.append((name, started - killed, time.monotonic() - started))

            def with_work(name: str) -> None:
                """Make sure `name` is in the middle of something, then kill it and start it again."""
                kind = name.rsplit("-", 1)[0]
                if kind in KINDS:
                    for _ in range(WAVE):
                        clients.submit(kind)
                    target = stack.service(name).target
                    _wait_until(lambda: _busy(target), f"{name} runs a job")
                elif name.startswith("gateway"):
                    owner = "gateway-1" if name == "gateway-1" else "gateway-0"
                    for kind in KINDS:
                        clients.submit(kind)
                    _wait_until(lambda: _running(tasks, clients.ids, owner), f"{name} runs a job")
                else:
                    for kind in KINDS:
                        clients.submit(kind)
                    _wait_until(lambda: _running(tasks, clients.ids), "a job is running")
                kill_and_restart(name, STORE_DOWN_SECONDS if name == "store" else DOWN_SECONDS)

            # One at a time, each while it has work.
            for name in ("media", "dicetalk-0", "echomimic-0", "latentsync-0", "voice-0", "gateway-1", "store"):
                with_work(name)
            # Then all of them in a row, with work of every kind in the system.
            for kind in KINDS:
                for _ in range(2):
                    clients.submit(kind)
            _wait_until(lambda: _running(tasks, clients.ids), "a job is running")
            for name in ("media", "dicetalk-0", "echomimic-0", "latentsync-0", "voice-0", "gateway", "gateway-1",
                         "store"):
                kill_and_restart(name, 5.0 if name == "store" else DOWN_SECONDS)

            deadline = time.monotonic() + 400
            while True:
                states = clients.statuses()
                if all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in states.values()) \
                        or time.monotonic() > deadline:
                    break
                time.sleep(1)
            counts = collections.Counter(states.values())
            failed = {t: tasks.get(t)[0].error for t, s in states.items() if s != "COMPLETED"}
            assert counts == {"COMPLETED": len(clients.ids)}, f"{counts}; not completed: {failed}"
            # Every job's result is there to download.
            for task_id in itertools.islice(clients.ids, 0, None, 7):
                resp = clients.request("GET", f"/v1/jobs/{task_id}/outputs/video")
                assert resp.status_code == 200 and len(resp.content) > 1000, task_id
    finally:
        httpd.shutdown()

    # Each was started again within 10 s of its death (the store within 60 s).
    assert all(down <= (60 if name == "store" else 10) for name, down, _ in restarts), restarts
    print("\nkilled, down for, back after:", ", ".join(f"{n} {d:.0f}+{u:.1f} s" for n, d, u in restarts),
          f"\n{len(clients.ids)} jobs completed")
    finished = collections.Counter()
    for log_file in (tmp_path / "stack" / "logs").glob("*-0.log"):
        for match in re.finditer(r"job (\S+) finished", log_file.read_text(errors="replace")):
            finished[match.group(1)] += 1
    reused = set()
    for log_file in (tmp_path / "stack" / "logs").glob("gateway*.log"):
        reused |= set(re.findall(r"task (\S+): reusing the render of an earlier attempt",
                                 log_file.read_text(errors="replace")))
    # A replica killed after publishing a video but before logging it leaves a render that the
    # retry reuses (the gateway says so) instead of rendering again.
    assert set(finished) | reused >= set(clients.ids), "a job completed without a model service rendering it"
    twice = {k: v for k, v in finished.items() if v > 1}
    assert not twice, f"rendered to completion more than once: {twice}"
