"""Bad input gets a 4xx in the shape of the API it was sent to, and costs the gateway no memory.

The gateway runs as a process of its own (against the real services and store), so its
resident memory is measured alone: each request below once answered 500, or took the
gateway's memory up by hundreds of MB.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import psutil
import pytest
import requests
from PIL import Image

from services.stack import ROOT, free_port, store_env, wait_http_ready
from tests import servers

MB = 1024 * 1024
GROWTH_LIMIT = 50 * MB


@pytest.fixture(scope="module")
def gateway_process(seaweed, tmp_path_factory):
    """(base URL, psutil.Process) of a gateway process with default settings."""
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket) as back:
        port = free_port()
        env = {**os.environ, **store_env(bucket), "TALKSERVE_GATEWAY_PORTS": json.dumps([port]),
               "TALKSERVE_GATEWAY_MEDIA_TARGET": back.media_target,
               **{f"TALKSERVE_GATEWAY_{kind.upper()}_TARGETS": json.dumps(targets)
                  for kind, targets in back.targets.items()}}
        log = open(tmp_path_factory.mktemp("gateway") / "gateway.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ready(url, 60, proc)
            yield url, psutil.Process(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def _rss(process: psutil.Process) -> int:
    return process.memory_info().rss


def _grows_little(process, send) -> requests.Response:
    """Send a request; assert the gateway's memory grew by less than GROWTH_LIMIT meanwhile."""
    before = _rss(process)
    resp = send()
    growth = _rss(process) - before
    assert growth < GROWTH_LIMIT, f"the gateway grew by {growth / MB:.0f} MB"
    return resp


def _deep(depth: int) -> bytes:
    return b'{"kind": ' + b"[" * depth + b"]" * depth + b"}"


def test_form_body_to_sync_is_422_in_fastapi_shape(gateway_process):
    url, proc = gateway_process
    resp = _grows_little(proc, lambda: requests.post(
        f"{url}/sync", data={"video_url": "http://example.com/v.mp4", "audio_url": "http://example.com/a.wav"},
        timeout=30))
    assert resp.status_code == 422 and isinstance(resp.json()["detail"], list), resp.text


def test_json_nested_30000_deep_is_400_in_each_apis_shape(gateway_process):
    url, proc = gateway_process
    body, headers = _deep(30_000), {"Content-Type": "application/json"}
    native = _grows_little(proc, lambda: requests.post(f"{url}/v1/jobs", data=body, headers=headers, timeout=30))
    assert native.status_code == 400 and native.json()["error"]["code"] == "too_deep", native.text
    sync = requests.post(f"{url}/sync", data=body, headers=headers, timeout=30)
    assert sync.status_code == 400 and "detail" in sync.json(), sync.text
    echofu = requests.post(f"{url}/video_generation", data=body, headers=headers, timeout=30)
    assert echofu.status_code == 400 and echofu.json()["status"] == "error", echofu.text
    # Nesting within the limit is parsed as usual (here: an unknown kind).
    shallow = requests.post(f"{url}/v1/jobs", data=_deep(20), headers=headers, timeout=30)
    assert shallow.status_code == 422, shallow.text


def test_crafted_cursors_are_400_invalid_cursor(gateway_process):
    url, proc = gateway_process

    def cursor(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    for crafted in (cursor(["2025-01-01T00:00:00", "x"]),  # a naive time: compared with aware ones it raised
                    cursor(["2025-01-01T00:00:00+00:00", 5]), cursor({"a": 1}), cursor("[[[[[[[[[["), "!!!"):
        resp = _grows_little(proc, lambda: requests.get(f"{url}/v1/jobs", params={"cursor": crafted}, timeout=30))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_cursor", (crafted, resp.text)
    # A cursor the API handed out still works.
    assert requests.get(f"{url}/v1/jobs", params={"cursor": cursor(["2025-01-01T00:00:00+00:00", "x"])},
                        timeout=30).status_code == 200


def test_a_seed_of_false_is_refused(gateway_process):
    url, _ = gateway_process
    sync = requests.post(f"{url}/sync", timeout=30, json={
        "video_url": "http://127.0.0.1:9/v.mp4", "audio_url": "http://127.0.0.1:9/a.wav", "seed": False})
    assert sync.status_code == 422 and sync.json()["detail"][0]["loc"][-1] == "seed", sync.text
    native = requests.post(f"{url}/v1/jobs", timeout=30, json={
        "kind": "redub", "video_url": "http://127.0.0.1:9/v.mp4", "audio_url": "http://127.0.0.1:9/a.wav",
        "seed": False})
    assert native.status_code == 422 and native.json()["error"]["code"] == "invalid_parameter", native.text


def test_a_small_png_of_8900x8900_pixels_is_refused_before_decoding(gateway_process, speech, tmp_path):
    url, proc = gateway_process
    image = io.BytesIO()
    Image.new("RGB", (8900, 8900), (200, 180, 160)).save(image, format="PNG", optimize=True)
    assert len(image.getvalue()) < 400_000  # far below the 10 MB byte limit: only pixels can stop it

    def send():
        return requests.post(f"{url}/api/v1/synthesis/start", timeout=60, data={"emotion": "happy"},
                             files={"image": ("big.png", image.getvalue(), "image/png"),
                                    "audio": ("speech.wav", speech.read_bytes(), "audio/wav")})

    for _ in range(4):
        resp = _grows_little(proc, send)
        assert resp.status_code == 400 and "8900x8900" in resp.json()["error"], resp.text
    native = _grows_little(proc, lambda: requests.post(
        f"{url}/v1/jobs", timeout=60, data={"kind": "emotion", "emotion": "happy"},
        files={"image": ("big.png", image.getvalue(), "image/png"),
               "audio": ("speech.wav", speech.read_bytes(), "audio/wav")}))
    assert native.status_code == 400 and native.json()["error"]["code"] == "invalid_input", native.text


def test_a_200_mb_json_body_is_413_in_each_apis_shape(gateway_process):
    url, proc = gateway_process
    big = b'{"video_url": "' + b"a" * (200 * MB) + b'"}'
    headers = {"Content-Type": "application/json"}
    # With a Content-Length the size is known at once; chunked, it is counted as it arrives.
    sync = _grows_little(proc, lambda: requests.post(f"{url}/sync", data=big, headers=headers, timeout=120))
    assert sync.status_code == 413 and "detail" in sync.json(), sync.text[:200]

    def chunks():
        for start in range(0, len(big), 4 * MB):
            yield big[start:start + 4 * MB]

    for path in ("/video_generation", "/audio_clone", "/model_training", "/chat_system"):
        resp = _grows_little(proc, lambda: requests.post(f"{url}{path}", data=chunks(), headers=headers,
                                                         timeout=120))
        assert resp.status_code == 413 and resp.json()["status"] == "error", (path, resp.text[:200])
    native = _grows_little(proc, lambda: requests.post(f"{url}/v1/jobs", data=chunks(), headers=headers,
                                                       timeout=120))
    assert native.status_code == 413 and native.json()["error"]["code"] == "too_large", native.text[:200]
    # Urlencoded forms are read whole too: the same limit.
    form = _grows_little(proc, lambda: requests.post(
        f"{url}/audio_clone", data=b"generate_text=" + b"a" * (200 * MB),
        headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=120))
    assert form.status_code == 413 and form.json()["status"] == "error", form.text[:200]
    assert requests.get(f"{url}/livez", timeout=10).status_code == 200
