"""The DICE-Talk REST path end to end: upload → gRPC dicetalk → media mux → downloaded MP4."""

import io
import time

import av
import numpy as np
import pytest
import requests

from libs.talkface.audio import load_audio


def _wait(url: str, task_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        body = requests.get(f"{url}/api/v1/synthesis/{task_id}/status", timeout=10).json()
        seen.append(body)
        if body["status"] in ("COMPLETED", "FAILED"):
            return body | {"seen": seen}
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish: {seen[-1]}")


def _start(url, portrait, speech, **data):
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        return requests.post(f"{url}/api/v1/synthesis/start", files={"image": img, "audio": aud},
                             data={"emotion": "happy", **data}, timeout=60)


def test_health_reports_loaded_model(stack):
    url, _ = stack
    body = requests.get(f"{url}/api/health", timeout=10).json()
    assert body == {"status": "healthy", "gpu_available": False, "model_loaded": True, "version": "1.0.0"}


def test_synthesis_end_to_end(stack, portrait, speech):
    url, _ = stack
    resp = _start(url, portrait, speech, fps="24", seed="12345", min_resolution="256")
    assert resp.status_code == 200, resp.text
    created = resp.json()
    assert created["status"] == "PENDING" and created["message"] == "Task created successfully"
    task_id = created["task_id"]

    final = _wait(url, task_id)
    assert final["status"] == "COMPLETED", final
    assert final["progress"] == 1.0
    progress = [s["progress"] for s in final["seen"]]
    assert progress == sorted(progress), "progress went backwards"
    for field in ("created_at", "updated_at"):
        time.strptime(final[field], "%Y-%m-%dT%H:%M:%S")

    dl = requests.get(f"{url}/api/v1/synthesis/{task_id}/download", timeout=60)
    assert dl.status_code == 200
    assert dl.headers["content-type"] == "video/mp4"
    assert dl.headers["content-disposition"] == 'attachment; filename="result.mp4"'

    speech_seconds = len(load_audio(str(speech))) / 16000
    with av.open(io.BytesIO(dl.content)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        v_seconds = float(v.duration * v.time_base)
        a_seconds = float(a.duration * a.time_base)
        assert min(v.width, v.height) == 256
        frames = [f.to_ndarray(format="gray").astype(np.int16) for f in container.decode(video=0)]
    assert abs(v_seconds - speech_seconds) <= 0.1, (v_seconds, speech_seconds)
    assert abs(a_seconds - speech_seconds) <= 0.1, (a_seconds, speech_seconds)
    assert len(frames) == pytest.approx(speech_seconds * 24, abs=2)
    # Share of pixels that move by more than codec noise could: the face is small in this portrait.
    changed = [(np.abs(frames[i] - frames[0]) > 30).mean() for i in range(1, len(frames))]
    assert max(changed) > 0.001, "the video is a still image"


def test_not_an_image_is_refused_in_dicetalk_shape(stack, speech, tmp_path):
    url, _ = stack
    fake = tmp_path / "portrait.jpg"
    fake.write_bytes(b"this is not a picture" * 100)
    resp = _start(url, fake, speech)
    assert resp.status_code == 400
    assert resp.json() == {"error": "Invalid image file type. Allowed types: ['image/jpeg', 'image/png']"}


def test_not_audio_is_refused_in_dicetalk_shape(stack, portrait, tmp_path):
    url, _ = stack
    fake = tmp_path / "speech.wav"
    fake.write_bytes(b"RIFF....WAVEfmt " + bytes(range(256)) * 40)
    resp = _start(url, portrait, fake)
    assert resp.status_code == 400
    body = resp.json()
    assert set(body) <= {"error", "detail"} and body["error"].startswith("Invalid audio file")


def test_oversized_image_is_413_before_reading_it_whole(stack, speech, tmp_path):
    url, _ = stack
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (11 * 1024 * 1024))
    resp = _start(url, big, speech)
    assert resp.status_code == 413
    assert "image" in resp.json()["error"]


def test_out_of_range_and_unknown_emotion_are_400(stack, portrait, speech):
    url, _ = stack
    assert _start(url, portrait, speech, fps="61").status_code == 400
    assert _start(url, portrait, speech, emotion="bored").status_code == 400
    resp = _start(url, portrait, speech, fps="many")
    assert resp.status_code == 422 and "error" in resp.json()


def test_unknown_task_is_404_in_dicetalk_shape(stack):
    url, _ = stack
    for path in ("status", "download"):
        resp = requests.get(f"{url}/api/v1/synthesis/no-such-task/{path}", timeout=10)
        assert resp.status_code == 404 and resp.json() == {"error": "Task not found"}
