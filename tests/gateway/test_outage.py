"""While the object store is down, every API answers 503 with Retry-After in its own error shape,
within seconds (not after the store client's 30 s of retries); readiness says so, liveness not."""

from __future__ import annotations

import time

import pytest
import requests

from libs.store.seaweed import SeaweedServer
from tests import servers

QUICK = 6.0  # seconds: the 2 s store window of a request, plus slack for a busy machine


@pytest.fixture(scope="module")
def own_store(tmp_path_factory):
    """A SeaweedFS of this module's own: the test stops it."""
    server = SeaweedServer(tmp_path_factory.mktemp("outage-store"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _timed(method: str, url: str, **kw) -> tuple[requests.Response, float]:
    started = time.monotonic()
    resp = requests.request(method, url, timeout=60, **kw)
    return resp, time.monotonic() - started


def test_store_outage_is_503_with_retry_after_in_each_apis_shape(own_store, portrait, speech):
    with servers.backend(own_store.settings) as back, servers.gateway(back) as url:
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["store"] is True
        services = ready.json()["services"]
        assert services["media"] == {"serving": 1, "replicas": 1}
        assert {"dicetalk", "echomimic", "latentsync", "voice"} <= set(services)

        own_store.kill()
        try:
            ready, seconds = _timed("GET", f"{url}/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "not_ready" and seconds < QUICK
            assert ready.json()["services"]["media"]["serving"] == 1  # reported, not what readiness is about
            assert requests.get(f"{url}/livez", timeout=10).json() == {"status": "alive"}
            assert requests.get(f"{url}/api/health", timeout=30).json()["status"] == "unhealthy"

            shapes = {
                f"{url}/api/v1/synthesis/some-task/status": lambda b: isinstance(b["error"], str),
                f"{url}/v1/jobs": lambda b: b["error"]["code"] == "store_unavailable",
                f"{url}/v1/jobs/some-task": lambda b: b["error"]["code"] == "store_unavailable",
                f"{url}/task/some-task": lambda b: isinstance(b["detail"], str),
                f"{url}/api/reference-audios": lambda b: b["status"] == "error" and b["files"] == [],
                f"{url}/api/task-status/some-task": lambda b: b["status"] == "error",
                f"{url}/video/some.mp4": lambda b: b["status"] == "error",
            }
            for target, shaped in shapes.items():
                resp, seconds = _timed("GET", target)
                assert resp.status_code == 503 and resp.headers["retry-after"], (target, resp.status_code, resp.text)
                assert shaped(resp.json()), (target, resp.text)
                assert seconds < QUICK, (target, seconds)
            with open(portrait, "rb") as img, open(speech, "rb") as aud:
                resp, seconds = _timed("POST", f"{url}/api/v1/synthesis/start", data={"emotion": "happy"},
                                       files={"image": img, "audio": aud})
            assert resp.status_code == 503 and isinstance(resp.json()["error"], str), resp.text
            assert resp.headers["retry-after"] and seconds < QUICK
            resp, _ = _timed("POST", f"{url}/sync", json={"video_url": "http://127.0.0.1:9/v.mp4",
                                                          "audio_url": "http://127.0.0.1:9/a.wav"})
            assert resp.status_code == 503 and isinstance(resp.json()["detail"], str), resp.text
        finally:
            own_store.start()
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        assert requests.get(f"{url}/v1/jobs", timeout=30).status_code == 200
