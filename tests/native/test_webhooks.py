"""Webhooks against a local receiver: Standard Webhooks signatures, retries with backoff, giving up, URL rules."""

from __future__ import annotations

import json
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.native.conftest import KEYS


def _secret(url, headers=None) -> str:
    body = requests.get(f"{url}/v1/webhooks/secret", headers=headers, timeout=10).json()
    assert body["secret"].startswith("whsec_")
    return body["secret"]


def _job_state(url, job_id, headers=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if job.get("webhook") and job["webhook"]["state"] != "sending":
            return job
        time.sleep(0.1)
    raise AssertionError(f"webhook of {job_id} never settled: {job}")


def test_final_state_is_signed_and_retried_until_accepted(api, receiver, portrait, speech):
    receiver.statuses[:] = [500, 503]  # the first two attempts fail, the third is accepted
    hook = f"{receiver.url}/hooks/completed"
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        resp = requests.post(f"{api}/v1/jobs", files={"image": img, "audio": aud}, timeout=60, data={
            "kind": "emotion", "emotion": "surprised", "min_resolution": "128", "fps": "12", "webhook_url": hook})
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    attempts = receiver.wait_for(lambda reqs: any(r["path"] == "/hooks/completed" and r["answered"] == 200
                                                  for r in reqs))
    attempts = [r for r in attempts if r["path"] == "/hooks/completed"]
    assert [r["answered"] for r in attempts] == [500, 503, 200]

    # One message: the same webhook-id on every attempt; each attempt signed afresh and verifiable
    # by the reference Standard Webhooks library with the secret the API hands out.
    verifier = Webhook(_secret(api))
    assert len({r["headers"]["webhook-id"] for r in attempts}) == 1
    for r in attempts:
        payload = verifier.verify(r["body"], r["headers"])
        assert payload["type"] == "job.completed" and payload["data"]["id"] == job_id
    final = json.loads(attempts[-1]["body"])["data"]
    assert final["status"] == "COMPLETED" and final["engine"] == "talkface-1"
    assert requests.get(final["outputs"]["video"]["url"], timeout=30).status_code == 200

    # Backoff: the wait doubles (0.2 s, then 0.4 s, plus at most 0.05 s of jitter).
    gaps = [b["at"] - a["at"] for a, b in zip(attempts, attempts[1:])]
    assert 0.2 <= gaps[0] < 0.4 and 0.4 <= gaps[1] < 0.8, gaps

    # A tampered body, another key's secret or a replayed old timestamp do not verify.
    headers = attempts[-1]["headers"]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(attempts[-1]["body"].replace(b"COMPLETED", b"FAILED"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(attempts[-1]["body"], headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(attempts[-1]["body"], headers | {"webhook-timestamp": str(int(time.time()) - 3600)})

    state = _job_state(api, job_id)["webhook"]
    assert state["state"] == "delivered" and state["attempts"] == 3 and state["last_status"] == 200


def test_failed_job_webhook_gives_up_after_the_last_attempt(api, receiver, files):
    receiver.statuses[:] = [502] * 10
    hook = f"{receiver.url}/hooks/failing"
    # A video URL the media service refuses: the job fails within a second.
    resp = requests.post(f"{api}/v1/jobs", timeout=30, json={
        "kind": "redub", "video_url": "http://10.1.2.3/v.mp4", "audio_url": f"{files}/speech.wav",
        "webhook_url": hook})
    assert resp.status_code == 201, resp.text
    job = _job_state(api, resp.json()["id"])
    assert job["status"] == "FAILED"
    assert job["webhook"]["state"] == "failed" and job["webhook"]["attempts"] == 4  # webhook_max_attempts
    assert job["webhook"]["last_error"] == "the receiver answered HTTP 502"
    sent = receiver.for_path("/hooks/failing")
    assert len(sent) == 4 and {json.loads(r["body"])["type"] for r in sent} == {"job.failed"}
    receiver.statuses.clear()


def test_cancelled_job_webhook(api, receiver, portrait, speech):
    hook = f"{receiver.url}/hooks/cancelled"
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        job = requests.post(f"{api}/v1/jobs", files={"image": img, "audio": aud}, timeout=60, data={
            "kind": "emotion", "emotion": "sad", "min_resolution": "768", "fps": "60", "webhook_url": hook}).json()
    assert requests.post(f"{api}/v1/jobs/{job['id']}/cancel", timeout=30).status_code == 200
    sent = receiver.wait_for(lambda reqs: any(r["path"] == "/hooks/cancelled" for r in reqs))
    sent = [r for r in sent if r["path"] == "/hooks/cancelled"]
    payload = Webhook(_secret(api)).verify(sent[0]["body"], sent[0]["headers"])
    assert payload["type"] == "job.cancelled" and payload["data"]["status"] == "CANCELLED"
    time.sleep(0.5)
    assert len(receiver.for_path("/hooks/cancelled")) == 1, "the final state is delivered once"


def test_each_key_has_its_own_signing_secret(keyed):
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in KEYS)
    assert _secret(keyed, alice) != _secret(keyed, bob)
    assert _secret(keyed, alice) == _secret(keyed, alice)


@pytest.mark.parametrize("url, reason", [
    ("http://10.0.0.7/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[::1]:8080/hook", "loopback"),
    ("ftp://example.com/hook", "only http and https"),
    ("http://nonexistent.invalid/hook", "cannot resolve"),
])
def test_webhook_urls_follow_the_media_address_rules(api, files, url, reason):
    resp = requests.post(f"{api}/v1/jobs", timeout=30, json={
        "kind": "redub", "video_url": f"{files}/v.mp4", "audio_url": f"{files}/speech.wav", "webhook_url": url})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_webhook_url" and reason in error["message"], error
