"""Webhooks against a local receiver: Standard Webhooks signatures, retries with backoff, giving up, URL rules."""

from __future__ import annotations

import json
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
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
    if reason in ("private", "metadata", "loopback"):
        # the refusal names the setting that would allow such an address
        assert "TALKSERVE_GATEWAY_WEBHOOK_ALLOW_NETWORKS" in error["message"], error


def _create(api, portrait, speech, **fields):
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        resp = requests.post(f"{api}/v1/jobs", files={"image": img, "audio": aud}, timeout=60, data={
            "kind": "emotion", "emotion": "happy", "min_resolution": "128", "fps": "12", **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_event_filter_sends_start_progress_and_completed_in_order_with_metadata(api, receiver, portrait,
                                                                                  long_speech):
    hook = f"{receiver.url}/hooks/all-events"
    metadata = {"order": "A-1042", "customer": {"id": 7, "tags": ["vip"]}}
    job = _create(api, portrait, long_speech, webhook_url=hook, webhook_events="start,progress,completed",
                  metadata=json.dumps(metadata), min_resolution="256", fps="25")
    assert job["metadata"] == metadata and job["webhook_events"] == ["start", "progress", "completed"]
    sent = receiver.wait_for(lambda reqs: any(r["path"] == "/hooks/all-events" and b"job.completed" in r["body"]
                                              for r in reqs))
    verifier = Webhook(_secret(api))
    payloads = [verifier.verify(r["body"], r["headers"]) for r in sent if r["path"] == "/hooks/all-events"]
    types = [p["type"] for p in payloads]
    assert types[0] == "job.start" and types[-1] == "job.completed", types
    assert types.count("job.start") == 1 and types.count("job.completed") == 1
    progress = [p["data"]["progress"] for p in payloads if p["type"] == "job.progress"]
    assert progress and progress == sorted(progress) and len(set(progress)) == len(progress), progress
    assert all(p["data"]["metadata"] == metadata and p["data"]["id"] == job["id"] for p in payloads)
    assert payloads[0]["data"]["status"] == "PROCESSING"
    # one message id per message; the final state's delivery is recorded on the job
    assert len({r["headers"]["webhook-id"] for r in sent if r["path"] == "/hooks/all-events"}) == len(payloads)
    final = _job_state(api, job["id"])
    assert final["webhook"]["state"] == "delivered" and final["metadata"] == metadata


def test_a_filter_without_the_final_event_sends_only_what_it_names(api, receiver, portrait, speech):
    hook = f"{receiver.url}/hooks/start-only"
    job = _create(api, portrait, speech, webhook_url=hook, webhook_events=json.dumps(["start"]))
    receiver.wait_for(lambda reqs: any(r["path"] == "/hooks/start-only" for r in reqs))
    deadline = time.monotonic() + 60
    while requests.get(f"{api}/v1/jobs/{job['id']}", timeout=10).json()["status"] != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    sent = receiver.for_path("/hooks/start-only")
    assert [json.loads(r["body"])["type"] for r in sent] == ["job.start"]
    assert requests.get(f"{api}/v1/jobs/{job['id']}", timeout=10).json()["webhook"] is None


def test_metadata_in_a_json_body_is_echoed_and_bounded(api, receiver, files):
    hook = f"{receiver.url}/hooks/json-metadata"
    body = {"kind": "redub", "video_url": "http://10.9.7.1/v.mp4", "audio_url": f"{files}/speech.wav",
            "webhook_url": hook, "metadata": {"callback_id": "cb-1"}}
    job = requests.post(f"{api}/v1/jobs", json=body, timeout=30).json()
    assert job["metadata"] == {"callback_id": "cb-1"} and job["webhook_events"] == ["completed", "failed", "cancelled"]
    sent = receiver.wait_for(lambda reqs: any(r["path"] == "/hooks/json-metadata" for r in reqs))
    payload = json.loads([r for r in sent if r["path"] == "/hooks/json-metadata"][0]["body"])
    assert payload["type"] == "job.failed" and payload["data"]["metadata"] == {"callback_id": "cb-1"}
    listed = requests.get(f"{api}/v1/jobs", params={"limit": 100}, timeout=30).json()["data"]
    assert next(j for j in listed if j["id"] == job["id"])["metadata"] == {"callback_id": "cb-1"}

    def refused(**changes):
        resp = requests.post(f"{api}/v1/jobs", json=body | changes, timeout=30)
        assert resp.status_code == 422, resp.text
        return resp.json()["error"]

    assert "4096" in refused(metadata={"blob": "x" * 5000})["message"]
    assert "JSON object" in refused(metadata=["a", "list"])["message"]
    assert "'finished'" in refused(webhook_events=["start", "finished"])["message"]
    no_url = {k: v for k, v in body.items() if k != "webhook_url"} | {"webhook_events": ["start"]}
    resp = requests.post(f"{api}/v1/jobs", json=no_url, timeout=30)
    assert resp.status_code == 422 and "webhook_url" in resp.json()["error"]["message"]


def test_webhook_deliveries_are_counted_by_event_and_outcome(api, receiver, files):
    def delivered() -> float:
        text = requests.get(f"{api}/metrics", timeout=30).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "talkserve_webhook_deliveries_total"
                   and s.labels == {"event": "failed", "outcome": "delivered"})

    before = delivered()
    hook = f"{receiver.url}/hooks/counted"
    requests.post(f"{api}/v1/jobs", timeout=30, json={
        "kind": "redub", "video_url": "http://10.9.7.2/v.mp4", "audio_url": f"{files}/speech.wav", "webhook_url": hook})
    receiver.wait_for(lambda reqs: any(r["path"] == "/hooks/counted" for r in reqs))
    deadline = time.monotonic() + 10
    while delivered() == before:
        assert time.monotonic() < deadline, "the delivery was not counted"
        time.sleep(0.1)
    assert delivered() == before + 1
