"""The request id travels: the HTTP request's `X-Request-ID` reaches the model service that renders
its job (a separate process logging JSON) and the media service, over gRPC metadata, and their
log lines name it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import requests

from libs.logs import REQUEST_ID
from services.stack import ROOT, free_port, store_env, wait_grpc_serving
from tests import servers
from tests.native.conftest import FAST


def test_a_model_service_log_line_names_the_request_that_caused_it(backend, portrait, speech):
    port = free_port("127.0.0.1")
    env = {**os.environ, **store_env(backend.store_settings), "TALKSERVE_DICETALK_PORT": str(port),
           "TALKSERVE_LOG_FORMAT": "json", "TALKSERVE_DICETALK_REPLICA_ID": "dicetalk-rid"}
    proc = subprocess.Popen([sys.executable, "-m", "services.dicetalk"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_grpc_serving(f"127.0.0.1:{port}", 180, proc)
        with servers.gateway(backend, dicetalk_targets=[f"127.0.0.1:{port}"], **FAST) as url:
            with open(portrait, "rb") as img, open(speech, "rb") as aud:
                resp = requests.post(f"{url}/v1/jobs", files={"image": img, "audio": aud}, timeout=120,
                                     headers={"X-Request-ID": "req-render-7", "Prefer": "wait=60"},
                                     data={"kind": "emotion", "emotion": "sad", "min_resolution": "128", "fps": "12"})
            assert resp.headers["x-request-id"] == "req-render-7"
            job = resp.json()
            assert job["status"] == "COMPLETED", job
            # a later request about the same job has its own id; the job's work keeps the first
            other = requests.get(f"{url}/v1/jobs/{job['id']}", timeout=10)
            assert other.headers["x-request-id"] != "req-render-7"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    mine = [r for r in records if r["request_id"] == "req-render-7"]
    assert any(job["id"] in r["message"] and "finished" in r["message"] for r in mine), records[-5:]
    assert all(r["service"] == "dicetalk-rid" for r in mine)
    # lines at start, before any request, carry none
    assert records[0]["request_id"] == "-"


class _Seen(logging.Handler):
    """Records (logger, message, request id) as the emitting thread sees them."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    def emit(self, record):
        self.seen.append((record.name, record.getMessage(), REQUEST_ID.get()))


def test_the_media_service_logs_with_the_request_id(api, files):
    seen = _Seen()
    logger = logging.getLogger("libs.grpcutil.interceptor")
    logger.addHandler(seen)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        # the media service refuses to fetch from a private address: it logs the refusal
        resp = requests.post(f"{api}/v1/jobs", headers={"X-Request-ID": "req-media-3"}, timeout=30, json={
            "kind": "portrait", "image_url": "http://10.0.0.9/face.png", "audio_url": f"{files}/speech.wav"})
        assert resp.status_code == 400 and resp.headers["x-request-id"] == "req-media-3"
        deadline = time.monotonic() + 5
        while not any("FetchUrl" in m for _, m, _ in seen.seen):
            assert time.monotonic() < deadline, seen.seen
            time.sleep(0.05)
    finally:
        logger.removeHandler(seen)
        logger.setLevel(old)
    assert [rid for _, m, rid in seen.seen if "FetchUrl" in m] == ["req-media-3"]
