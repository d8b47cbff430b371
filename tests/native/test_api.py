"""talkserve's own API end to end: create from files or URLs, live events with resume, links, list, cancel."""

from __future__ import annotations

import io
import time

import av
import requests

from tests.native.conftest import events as _events, iter_events, read_events


def _create_emotion(url, portrait, speech, headers=None, **fields):
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        return requests.post(f"{url}/v1/jobs", files={"image": img, "audio": aud}, headers=headers, timeout=60,
                             data={"kind": "emotion", "emotion": "happy", "min_resolution": "128", "fps": "12",
                                   **fields})


def _wait(url, job_id, statuses=("COMPLETED", "FAILED", "CANCELLED"), headers=None, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def _video_facts(content: bytes) -> tuple[float, bool]:
    with av.open(io.BytesIO(content)) as container:
        video = container.streams.video[0]
        return float(video.duration * video.time_base), bool(container.streams.audio)


def test_emotion_job_streams_ordered_progress_resumes_and_links_play(api, portrait, long_speech):
    created = _create_emotion(api, portrait, long_speech, min_resolution="512", fps="25")
    assert created.status_code == 201, created.text
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["kind"], job["task_kind"], job["api"], job["status"]) == ("emotion", "dicetalk", "native", "PENDING")
    assert job["params"]["emotion"] == "happy" and isinstance(job["params"]["seed"], int)

    # First connection: read the first event, then drop it as a flaky network would.
    with _events(api, job["id"]) as first:
        assert first.headers["content-type"].startswith("text/event-stream")
        seen = [next(iter_events(first))]
    assert seen and all(e["event"] == "progress" for e in seen)
    dropped_at = int(seen[-1]["id"])

    # Resume: only what happened after the last event seen, ending with `completed`.
    with _events(api, job["id"], last_event_id=dropped_at) as second:
        rest = read_events(second)
    ids = [int(e["id"]) for e in seen + rest if e["id"] is not None]
    assert ids == sorted(set(ids)), f"event ids must grow: {ids}"
    assert all(int(e["id"]) > dropped_at for e in rest if e["id"] is not None)
    assert [e["event"] for e in rest][-1] == "completed"
    assert all(e["event"] == "progress" for e in rest[:-1])
    progress = [e["data"]["progress"] for e in seen + rest[:-1]]
    assert progress == sorted(progress), "progress went backwards"

    # The gRPC progress stream shows through: stage, frame i of N, an ETA.
    rendering = [e["data"] for e in seen + rest if e["data"].get("stage") == "rendering"]
    assert rendering, "no rendering event"
    assert all(0 <= d["done"] <= d["total"] and d["total"] > 0 for d in rendering)
    assert any(d["eta_seconds"] is not None for d in rendering)
    frames = [d["done"] for d in rendering]
    assert frames == sorted(frames)

    final = rest[-1]["data"]
    assert final["status"] == "COMPLETED" and final["engine"] == "talkface-1" and final["progress"] == 1.0
    assert final["stage"] is None and final["result"]["fps"] == 25

    # A client that already has the final event is told to stop (204); a fresh one gets just the end.
    with _events(api, job["id"], last_event_id=rest[-1]["id"]) as done:
        assert done.status_code == 204
    with _events(api, job["id"]) as again:
        replay = read_events(again)
    assert [e["event"] for e in replay] == ["completed"]

    # Results are expiring presigned links that need no key, plus a download through the gateway.
    video = final["outputs"]["video"]
    assert video["content_type"] == "video/mp4" and "X-Amz-Expires=3600" in video["url"]
    played = requests.get(video["url"], timeout=30)
    assert played.status_code == 200 and played.headers["content-type"] == "video/mp4"
    seconds, has_audio = _video_facts(played.content)
    assert has_audio and abs(seconds - final["result"]["duration_seconds"]) < 0.2
    attached = requests.get(video["download_url"], timeout=30)
    assert attached.headers["content-disposition"].startswith("attachment;")
    through = requests.get(f"{api}/v1/jobs/{job['id']}/outputs/video", timeout=30)
    assert through.status_code == 200 and through.content == played.content == attached.content


def test_portrait_job_from_urls_in_a_json_body(api, files):
    resp = requests.post(f"{api}/v1/jobs", json={
        "kind": "portrait", "image_url": f"{files}/portrait.png", "audio_url": f"{files}/speech.wav",
        "width": 128, "height": 128, "fps": 12}, timeout=60)
    assert resp.status_code == 201, resp.text
    job = _wait(api, resp.json()["id"])
    assert job["status"] == "COMPLETED", job
    assert (job["kind"], job["task_kind"], job["engine"]) == ("portrait", "echomimic", "talkface-1")
    assert job["inputs"] == ["audio", "image"]
    content = requests.get(job["outputs"]["video"]["url"], timeout=30).content
    with av.open(io.BytesIO(content)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (128, 128)


def test_redub_job_from_uploaded_video_and_audio(api, speech, tmp_path):
    from tests.gateway.test_latentsync import write_portrait_video

    video = tmp_path / "talk.mp4"
    write_portrait_video(video, seconds=1.5, fps=12, size=160)
    with open(video, "rb") as v, open(speech, "rb") as a:
        resp = requests.post(f"{api}/v1/jobs", data={"kind": "redub", "seed": "3"},
                             files={"video": v, "audio": a}, timeout=60)
    assert resp.status_code == 201, resp.text
    job = _wait(api, resp.json()["id"])
    assert job["status"] == "COMPLETED", job
    assert (job["kind"], job["task_kind"]) == ("redub", "latentsync")
    assert set(job["outputs"]) == {"video", "mask"}
    seconds, has_audio = _video_facts(requests.get(job["outputs"]["video"]["url"], timeout=30).content)
    assert has_audio and seconds > 1.0


def test_refusals_say_what_is_wrong(api, portrait, speech, tmp_path, files):
    def post(**kw):
        return requests.post(f"{api}/v1/jobs", timeout=60, **kw)

    def error(resp, status, code):
        assert resp.status_code == status, resp.text
        body = resp.json()["error"]
        assert body["code"] == code, body
        return body["message"]

    assert "one of portrait, emotion, redub" in error(post(json={}), 422, "missing_kind")
    assert "'singing'" in error(post(json={"kind": "singing"}), 422, "unknown_kind")
    assert "image_url" in error(post(json={"kind": "emotion", "audio_url": f"{files}/speech.wav"}), 422,
                                "missing_input")
    message = error(post(json={"kind": "emotion", "image_url": f"{files}/portrait.png",
                               "audio_url": f"{files}/speech.wav", "emotoin": "happy"}), 422, "unknown_field")
    assert "emotoin" in message and "emotion" in message
    assert "emo_scale" in error(post(json={"kind": "emotion", "image_url": f"{files}/portrait.png",
                                           "audio_url": f"{files}/speech.wav", "emo_scale": 99}), 422,
                                "invalid_parameter")
    with open(portrait, "rb") as img:
        assert "not both" in error(post(files={"image": img}, data={"kind": "portrait", "image_url": "http://x/y",
                                                                    "audio_url": "http://x/z"}), 422, "invalid_input")
    fake = tmp_path / "face.jpg"
    fake.write_bytes(b"not a picture at all" * 50)
    with open(fake, "rb") as img, open(speech, "rb") as aud:
        assert "not a readable image" in error(post(files={"image": img, "audio": aud},
                                                    data={"kind": "emotion", "emotion": "sad"}), 400, "invalid_input")
    assert error(post(json={"kind": "emotion", "image_url": f"{files}/notes.txt",
                                                      "audio_url": f"{files}/speech.wav", "emotion": "sad"}), 400,
                                           "bad_media").startswith("image_url: ")
    assert "10.0.0.1" in error(post(json={"kind": "portrait", "image_url": "http://10.0.0.1/face.png",
                                          "audio_url": f"{files}/speech.wav"}), 400, "url_forbidden_address")
    assert "multipart/form-data" in error(post(data="kind=emotion",
                                               headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    assert "webhook_url" in error(post(json={"kind": "redub", "video_url": f"{files}/v.mp4",
                                             "audio_url": f"{files}/speech.wav",
                                             "webhook_url": "http://169.254.169.254/latest"}), 422,
                                  "invalid_webhook_url")
    assert error(requests.get(f"{api}/v1/jobs/no-such-job", timeout=10), 404, "not_found") == "Job not found"


def test_list_is_newest_first_with_a_cursor_and_cancel_ends_the_stream(api, files, portrait, speech):
    # Redub jobs whose URLs are refused at fetch time: cheap to create, they fail fast.
    made = []
    for i in range(3):
        resp = requests.post(f"{api}/v1/jobs", json={"kind": "redub", "video_url": f"http://10.9.9.{i}/v.mp4",
                                                     "audio_url": f"{files}/speech.wav"}, timeout=30)
        assert resp.status_code == 201, resp.text
        made.append(resp.json()["id"])
    first = requests.get(f"{api}/v1/jobs", params={"limit": 2}, timeout=30).json()
    assert first["has_more"] and first["next_cursor"]
    second = requests.get(f"{api}/v1/jobs", params={"limit": 100, "cursor": first["next_cursor"]}, timeout=30).json()
    listed = [j["id"] for j in first["data"] + second["data"]]
    assert len(listed) == len(set(listed)), "pages overlap"
    assert [i for i in listed if i in made] == made[::-1], "newest first"
    created = [j["created_at"] for j in first["data"] + second["data"]]
    assert created == sorted(created, reverse=True)
    failed = _wait(api, made[0])
    assert failed["status"] == "FAILED" and failed["error_code"] == "url_forbidden_address"
    assert requests.get(f"{api}/v1/jobs", params={"limit": 0}, timeout=10).status_code == 400

    # 20 s at 512 px, 60 fps: still running when the cancel comes, however fast the engine is
    long_job = _create_emotion(api, portrait, speech, min_resolution="512", fps="60", duration="20").json()
    with _events(api, long_job["id"]) as stream:
        cancel = requests.post(f"{api}/v1/jobs/{long_job['id']}/cancel", timeout=30)
        assert cancel.status_code == 200 and cancel.json()["status"] == "CANCELLED"
        events = read_events(stream)
    assert events[-1]["event"] == "cancelled" and events[-1]["data"]["error_code"] == "cancelled"
    again = requests.post(f"{api}/v1/jobs/{long_job['id']}/cancel", timeout=30)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_finished"


def test_idempotency_key_returns_the_first_job(api, files):
    body = {"kind": "redub", "video_url": "http://10.9.9.9/v.mp4", "audio_url": f"{files}/speech.wav"}
    a = requests.post(f"{api}/v1/jobs", json=body, headers={"Idempotency-Key": "native-1"}, timeout=30)
    b = requests.post(f"{api}/v1/jobs", json=body, headers={"Idempotency-Key": "native-1"}, timeout=30)
    assert a.status_code == b.status_code == 201 and a.json()["id"] == b.json()["id"]
    c = requests.post(f"{api}/v1/jobs", json=body | {"seed": 5}, headers={"Idempotency-Key": "native-1"}, timeout=30)
    assert c.status_code == 409 and c.json()["error"]["code"] == "idempotency_conflict"


def test_openapi_page_documents_the_native_api(api):
    spec = requests.get(f"{api}/openapi.json", timeout=30).json()
    create = spec["paths"]["/v1/jobs"]["post"]
    assert set(create["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert create["requestBody"]["content"]["application/json"]["examples"]
    assert "curl" in create["description"]
    events = spec["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/webhooks/secret"} <= set(spec["paths"])
    assert requests.get(f"{api}/docs", timeout=10).status_code == 200
    info = requests.get(f"{api}/v1/info", timeout=10).json()
    assert set(info["kinds"]) == {"portrait", "emotion", "redub"} and info["api_keys_required"] is False
