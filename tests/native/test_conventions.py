"""The native API's HTTP conventions: `Prefer: wait`, `Idempotent-Replayed`, one error shape for
every 4xx, `X-Request-ID`, and the metrics a request leaves behind."""

from __future__ import annotations

import re
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.native.conftest import KEYS


def _emotion(url, portrait, speech, headers=None, **fields):
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        return requests.post(f"{url}/v1/jobs", files={"image": img, "audio": aud}, headers=headers, timeout=90,
                             data={"kind": "emotion", "emotion": "happy", "min_resolution": "128", "fps": "12",
                                   **fields})


def test_prefer_wait_answers_the_finished_job(api, portrait, speech):
    started = time.monotonic()
    resp = _emotion(api, portrait, speech, headers={"Prefer": "respond-async, wait=1000"})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "COMPLETED" and job["engine"] == "talkface-1", job
    assert job["outputs"]["video"]["url"]
    # 1000 s asked, the server holds at most prefer_wait_max_seconds (60 by default) and says so
    assert resp.headers["preference-applied"] == "wait=60"
    assert time.monotonic() - started < 60


def test_prefer_wait_gives_the_normal_answer_when_the_job_takes_longer(api, portrait, speech):
    started = time.monotonic()
    # 20 s of 512 px video at 60 fps: far longer than the 1 s wait
    resp = _emotion(api, portrait, speech, headers={"Prefer": "wait=1"}, min_resolution="512", fps="60",
                    duration="20")
    waited = time.monotonic() - started
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] in ("PENDING", "PROCESSING") and job["outputs"] == {}
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
    assert resp.headers["preference-applied"] == "wait=1"
    assert waited >= 1.0
    requests.post(f"{api}/v1/jobs/{job['id']}/cancel", timeout=30)


def test_without_prefer_the_answer_does_not_wait(api, files):
    resp = requests.post(f"{api}/v1/jobs", timeout=30, json={
        "kind": "redub", "video_url": "http://10.9.8.7/v.mp4", "audio_url": f"{files}/speech.wav"})
    assert resp.status_code == 201 and resp.json()["status"] == "PENDING"
    assert "preference-applied" not in resp.headers


def test_a_replayed_idempotency_key_is_marked(api, files):
    body = {"kind": "redub", "video_url": "http://10.9.9.8/v.mp4", "audio_url": f"{files}/speech.wav"}
    key = {"Idempotency-Key": f"replay-{time.time_ns()}"}
    first = requests.post(f"{api}/v1/jobs", json=body, headers=key, timeout=30)
    again = requests.post(f"{api}/v1/jobs", json=body, headers=key, timeout=30)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"


def _native_error(resp, status: int) -> dict:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), error
    assert set(error) <= {"code", "message", "detail"}, error
    return error


def test_every_4xx_of_the_native_api_has_the_one_error_shape(api, keyed, files):
    get = lambda path, **kw: requests.get(f"{api}{path}", timeout=30, **kw)  # noqa: E731
    # invalid query parameters: validated by FastAPI, answered in the native shape
    error = _native_error(get("/v1/jobs", params={"limit": "many"}), 422)
    assert error["code"] == "invalid_parameter" and "limit" in error["message"]
    error = _native_error(get("/v1/jobs", params={"status": "SLEEPING"}), 422)
    assert "status" in error["message"]
    assert _native_error(get("/v1/jobs", params={"limit": 0}), 400)["code"] == "invalid_parameter"
    assert _native_error(get("/v1/jobs", params={"cursor": "bogus"}), 400)["code"] == "invalid_cursor"
    assert _native_error(get("/v1/jobs/no-such-job"), 404)["code"] == "not_found"
    assert _native_error(get("/v1/jobs/no-such-job/events"), 404)["code"] == "not_found"
    assert _native_error(get("/v1/no-such-route"), 404)["code"] == "not_found"
    assert _native_error(requests.delete(f"{api}/v1/jobs", timeout=30), 405)["code"] == "method_not_allowed"
    assert _native_error(requests.post(f"{api}/v1/jobs", data="x", headers={"Content-Type": "text/plain"},
                                       timeout=30), 415)["code"] == "unsupported_media_type"
    assert _native_error(requests.post(f"{api}/v1/jobs", data="{", headers={"Content-Type": "application/json"},
                                       timeout=30), 400)["code"] == "invalid_json"
    assert _native_error(requests.post(f"{api}/v1/jobs", json={"kind": "emotion", "image_url": f"{files}/portrait.png",
                                                               "audio_url": f"{files}/speech.wav", "fps": "fast"},
                                       timeout=30), 422)["code"] == "invalid_parameter"
    assert _native_error(requests.post(f"{api}/v1/jobs/no-such-job/cancel", timeout=30), 404)["code"] == "not_found"
    # keys: missing and unknown
    assert _native_error(requests.get(f"{keyed}/v1/jobs", timeout=30), 401)
    assert _native_error(requests.get(f"{keyed}/v1/jobs", headers={"Authorization": "Bearer nope-0123456789"},
                                      timeout=30), 401)
    alice = {"Authorization": f"Bearer {next(iter(KEYS))}"}
    assert _native_error(requests.get(f"{keyed}/v1/jobs", params={"limit": "x"}, headers=alice, timeout=30), 422)


def test_the_documented_apis_keep_their_own_error_shapes(api):
    # DICE-Talk: {"error": "...", "detail": [...]}; EchoMimic's and LatentSync's FastAPI wrappers: {"detail": ...}
    dice = requests.get(f"{api}/api/v1/synthesis/no-such-task/status", timeout=30)
    assert dice.status_code == 404 and isinstance(dice.json()["error"], str)
    echo = requests.get(f"{api}/task/no-such-task", timeout=30)
    assert echo.status_code == 404 and set(echo.json()) == {"detail"}
    sync = requests.post(f"{api}/sync", json={}, timeout=30)
    assert sync.status_code == 422 and isinstance(sync.json()["detail"], list), sync.text


def test_request_id_is_accepted_made_and_echoed_on_every_answer(api):
    mine = requests.get(f"{api}/v1/info", headers={"X-Request-ID": "client-req-42"}, timeout=30)
    assert mine.headers["x-request-id"] == "client-req-42"
    made = requests.get(f"{api}/v1/info", timeout=30).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    # an error answer carries it too, and a value that could forge a log line is replaced
    missing = requests.get(f"{api}/v1/jobs/nope", headers={"X-Request-ID": "req-404"}, timeout=30)
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "req-404"
    forged = requests.get(f"{api}/livez", headers={"X-Request-ID": "a b\tc"}, timeout=30).headers["x-request-id"]
    assert forged != "a b\tc" and re.fullmatch(r"[0-9a-f]{32}", forged)


def _samples(url: str) -> dict:
    text = requests.get(f"{url}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_by_route_template_and_queue_wait_by_api_kind(api, portrait, speech):
    before = _samples(api)
    route = ("talkserve_http_requests_total", (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")))
    for _ in range(3):
        requests.get(f"{api}/v1/jobs/missing-{time.time_ns()}", timeout=30)
    resp = _emotion(api, portrait, speech, headers={"Prefer": "wait=60"})
    assert resp.json()["status"] == "COMPLETED"
    after = _samples(api)
    assert after[route] - before.get(route, 0) == 3
    # the raw paths never become labels
    assert not [k for k in after if k[0] == "talkserve_http_requests_total" and "missing-" in str(k)]
    latency = ("talkserve_http_request_seconds_count", (("method", "POST"), ("route", "/v1/jobs")))
    assert after[latency] > before.get(latency, 0)
    wait = ("talkserve_queue_wait_seconds_count", (("kind", "emotion"),))
    assert after[wait] > before.get(wait, 0)
    done = ("talkserve_tasks_finished_total", (("kind", "emotion"), ("reason", "ok"), ("status", "COMPLETED")))
    assert after[done] > before.get(done, 0)
    assert not [k for k in after if dict(k[1]).get("kind") == "dicetalk"], "kinds are named as the API names them"
    assert ("talkserve_queue_depth", (("service", "dicetalk"),)) in after


@pytest.mark.parametrize("header", ["wait=abc", "wait=-5", "handling=lenient"])
def test_a_preference_the_server_cannot_read_is_ignored(api, files, header):
    resp = requests.post(f"{api}/v1/jobs", timeout=30, headers={"Prefer": header}, json={
        "kind": "redub", "video_url": "http://10.9.8.6/v.mp4", "audio_url": f"{files}/speech.wav"})
    assert resp.status_code == 201 and "preference-applied" not in resp.headers
