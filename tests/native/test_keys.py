"""API keys: required in the prod shape, each key sees only its own tasks on every API, per-key rate limits."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import requests

from libs.store.client import ObjectStore
from libs.tasks import record_key as task_key
from services.gateway.auth import key_id
from tests import servers
from tests.native.conftest import FAST, KEYS, events

ALICE_KEY, BOB_KEY = list(KEYS)
ALICE = {"Authorization": f"Bearer {ALICE_KEY}"}
BOB = {"X-API-Key": BOB_KEY}


def test_keys_are_required_except_on_public_pages(keyed):
    for path in ("/v1/jobs", "/v1/jobs/x", "/task/x", "/queue"):
        resp = requests.get(f"{keyed}{path}", timeout=10)
        assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer"), path
    assert requests.get(f"{keyed}/v1/jobs", timeout=10).json()["error"]["code"] == "missing_api_key"
    assert requests.get(f"{keyed}/api/v1/synthesis/x/status", timeout=10).json() == {
        "error": "An API key is required: send 'Authorization: Bearer <key>'."}
    assert "detail" in requests.get(f"{keyed}/task/x", timeout=10).json()
    wrong = requests.get(f"{keyed}/v1/jobs", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    for path in ("/", "/ui/app.js", "/docs", "/openapi.json", "/api/health", "/v1/info", "/livez"):
        assert requests.get(f"{keyed}{path}", timeout=10).status_code == 200, path
    assert requests.get(f"{keyed}/v1/info", timeout=10).json()["api_keys_required"] is True
    assert requests.get(f"{keyed}/v1/jobs", headers=ALICE, timeout=10).status_code == 200
    assert requests.get(f"{keyed}/v1/jobs", headers=BOB, timeout=10).status_code == 200


def test_another_keys_task_is_a_404_on_every_api(keyed, backend, files, portrait, speech):
    native = requests.post(f"{keyed}/v1/jobs", headers=ALICE, timeout=30, json={
        "kind": "redub", "video_url": "http://10.3.3.3/v.mp4", "audio_url": f"{files}/speech.wav"})
    assert native.status_code == 201, native.text
    native_id = native.json()["id"]
    sync = requests.post(f"{keyed}/sync", headers=ALICE, timeout=30,
                         json={"video_url": "http://10.3.3.4/v.mp4", "audio_url": f"{files}/speech.wav"})
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        dice = requests.post(f"{keyed}/api/v1/synthesis/start", headers=ALICE, timeout=60,
                             files={"image": img, "audio": aud}, data={"emotion": "happy", "min_resolution": "128"})
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        mimic = requests.post(f"{keyed}/generate_video", headers=ALICE, timeout=60,
                              files={"reference_image": img, "audio_file": aud}, data={"width": "128", "height": "128"})
    sync_id, dice_id, mimic_id = sync.json()["task_id"], dice.json()["task_id"], mimic.json()["task_id"]

    # Alice sees all four; Bob sees none of them, on any API, exactly as if they did not exist.
    for job_id in (native_id, sync_id, dice_id, mimic_id):
        assert requests.get(f"{keyed}/v1/jobs/{job_id}", headers=ALICE, timeout=10).status_code == 200
        bob = requests.get(f"{keyed}/v1/jobs/{job_id}", headers=BOB, timeout=10)
        assert bob.status_code == 404 and bob.json() == requests.get(
            f"{keyed}/v1/jobs/no-such-job", headers=BOB, timeout=10).json()
        assert requests.post(f"{keyed}/v1/jobs/{job_id}/cancel", headers=BOB, timeout=10).status_code == 404
        assert requests.get(f"{keyed}/v1/jobs/{job_id}/outputs/video", headers=BOB, timeout=10).status_code == 404
        with events(keyed, job_id, headers=BOB) as stream:
            assert stream.status_code == 404
    assert requests.get(f"{keyed}/task/{sync_id}", headers=BOB, timeout=10).json() == {"detail": "任务不存在"}
    assert requests.get(f"{keyed}/task/{mimic_id}", headers=BOB, timeout=10).status_code == 404
    assert requests.get(f"{keyed}/task/{mimic_id}", headers=ALICE, timeout=10).status_code == 200
    assert requests.get(f"{keyed}/api/v1/synthesis/{dice_id}/status", headers=BOB, timeout=10).json() == {
        "error": "Task not found"}
    assert requests.get(f"{keyed}/api/v1/synthesis/{dice_id}/status", headers=ALICE, timeout=10).status_code == 200
    for path in (f"/api/v1/synthesis/{dice_id}/download", f"/download/{mimic_id}", f"/outputs/{sync_id}/video.mp4"):
        assert requests.get(f"{keyed}{path}", headers=BOB, timeout=10).status_code == 404, path

    mine = {j["id"] for j in requests.get(f"{keyed}/v1/jobs?limit=100", headers=ALICE, timeout=30).json()["data"]}
    theirs = {j["id"] for j in requests.get(f"{keyed}/v1/jobs?limit=100", headers=BOB, timeout=30).json()["data"]}
    assert {native_id, sync_id, dice_id, mimic_id} <= mine and not mine & theirs

    # The record keeps the key's id, never the key itself.
    store = ObjectStore(backend.store_settings)
    raw = store.get_bytes(task_key(native_id))
    assert ALICE_KEY.encode() not in raw
    expected = "key_" + hashlib.sha256(ALICE_KEY.encode()).hexdigest()[:16]
    assert json.loads(raw)["key_id"] == key_id(ALICE_KEY) == expected
    for job_id in (dice_id, mimic_id):
        requests.post(f"{keyed}/v1/jobs/{job_id}/cancel", headers=ALICE, timeout=10)


def test_idempotency_keys_do_not_cross_api_keys(keyed, files):
    body = {"kind": "redub", "video_url": "http://10.4.4.4/v.mp4", "audio_url": f"{files}/speech.wav"}
    a = requests.post(f"{keyed}/v1/jobs", json=body, headers=ALICE | {"Idempotency-Key": "same"}, timeout=30)
    b = requests.post(f"{keyed}/v1/jobs", json=body | {"seed": 1}, headers=BOB | {"Idempotency-Key": "same"},
                      timeout=30)
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


@pytest.fixture(scope="module")
def limited(backend):
    """A gateway with tight per-key limits and a hashed key entry."""
    hashed = "sha256:" + hashlib.sha256(b"key-carol-0123456789").hexdigest()
    with servers.gateway(backend, require_api_keys=True, api_keys=[*KEYS, hashed],
                         rate_limit_per_minute=120, rate_limit_burst=10,
                         create_rate_limit_per_minute=6, create_rate_limit_burst=2, **FAST) as url:
        yield url


def test_rate_limits_answer_429_with_retry_after_per_key(limited):
    alice = ALICE
    for _ in range(10):
        assert requests.get(f"{limited}/v1/jobs?limit=1", headers=alice, timeout=10).status_code == 200
    over = requests.get(f"{limited}/v1/jobs?limit=1", headers=alice, timeout=10)
    assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
    assert over.headers["retry-after"] == "1"  # 120 a minute: one more every half second
    # Another key is not held back by Alice's traffic.
    assert requests.get(f"{limited}/v1/jobs?limit=1", headers=BOB, timeout=10).status_code == 200
    time.sleep(float(over.headers["retry-after"]))
    assert requests.get(f"{limited}/v1/jobs?limit=1", headers=alice, timeout=10).status_code == 200

    # Creating jobs has its own, stricter bucket: two at once, then one every ten seconds.
    carol = {"Authorization": "Bearer key-carol-0123456789"}  # configured only as a hash
    statuses = [requests.post(f"{limited}/v1/jobs", json={}, headers=carol, timeout=10) for _ in range(3)]
    assert [r.status_code for r in statuses] == [422, 422, 429]
    assert 9 <= int(statuses[-1].headers["retry-after"]) <= 10
    assert requests.get(f"{limited}/v1/jobs?limit=1", headers=carol, timeout=10).status_code == 200
    # The compatibility APIs count too, in their own error shape.
    dice = requests.post(f"{limited}/api/v1/synthesis/start", headers=carol, timeout=10)
    assert dice.status_code == 429 and dice.json()["error"].startswith("Too many requests")


def test_with_keys_off_nothing_changes_for_clients_that_send_headers(api):
    # A client's own Authorization header (a proxy's, say) must not turn a keyless server into a 401.
    for headers in ({"Authorization": "Bearer not-a-talkserve-key"}, {"X-API-Key": "whatever"}, {}):
        assert requests.get(f"{api}/v1/jobs?limit=1", headers=headers, timeout=10).status_code == 200
        assert requests.get(f"{api}/task/nope", headers=headers, timeout=10).json() == {"detail": "任务不存在"}
