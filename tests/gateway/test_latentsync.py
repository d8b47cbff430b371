"""The LatentSync API, replayed with the document's client code against URLs on a local server."""

import functools
import http.server
import threading
import time

import av
import numpy as np
import pytest
import requests
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from tests import servers


def write_portrait_video(path, seconds=2.0, fps=24, size=256):
    """A video of the astronaut portrait (a real face in every frame)."""
    frame = np.asarray(Image.fromarray(data.astronaut()).resize((size, size)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(int(seconds * fps)):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    write_portrait_video(folder / "video.mp4")
    write_wav(synthesize("Now my lips say something new."), folder / "audio.wav")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def base(seaweed):
    # The media service refuses loopback addresses unless told otherwise: the test server lives there.
    with servers.fresh_bucket(seaweed.settings) as bucket, \
            servers.backend(bucket, fetch_allow_networks=["127.0.0.1/32"]) as back, servers.gateway(back) as url:
        yield url


def _wait(base, task_id, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = requests.get(f"{base}/task/{task_id}").json()
        if data["status"] in ["completed", "failed"]:
            return data
        time.sleep(0.3)
    raise AssertionError("task did not finish")


def test_documented_flow(base, files, tmp_path):
    response = requests.post(f"{base}/sync", json={
        "video_url": f"{files}/video.mp4",
        "audio_url": f"{files}/audio.wav",
    })
    assert response.status_code == 200, response.text
    submitted = time.time()
    task_id = response.json()["task_id"]
    queue_position = response.json()["queue_position"]
    assert queue_position == 0
    assert response.json()["output_video_path"] is None and response.json()["output_mask_path"] is None
    first = requests.get(f"{base}/task/{task_id}").json()
    assert abs(first["start_time"] - submitted) < 5
    if first["status"] != "completed":
        assert first["end_time"] is None

    seen = []
    while True:
        data = requests.get(f"{base}/task/{task_id}").json()
        status = data["status"]
        progress = data["progress"] * 100
        message = data["message"]
        seen.append((status, progress, message))
        if status in ["completed", "failed"]:
            break
        time.sleep(0.2)
    assert status == "completed", seen
    assert progress == 100.0
    assert data["engine"] == "talkface-1"
    # The wrapper's fields and result layout: Unix times, /results/<id>/output.mp4 and output_mask.mp4.
    assert data["output_video_url"] == f"/results/{task_id}/output.mp4"
    assert data["output_mask_url"] == f"/results/{task_id}/output_mask.mp4"
    assert submitted - 1 <= data["start_time"] <= data["end_time"] <= time.time() + 1

    video_url = f"{base}{data['output_video_url']}"
    mask_url = f"{base}{data['output_mask_url']}" if data['output_mask_url'] else None
    assert mask_url is not None
    video = requests.get(video_url)
    mask = requests.get(mask_url)
    assert video.status_code == 200 and mask.status_code == 200
    (tmp_path / "result.mp4").write_bytes(video.content)
    (tmp_path / "mask.mp4").write_bytes(mask.content)
    with av.open(str(tmp_path / "result.mp4")) as c:
        assert c.streams.video[0].width == 256 and len(c.streams.audio) == 1
    with av.open(str(tmp_path / "mask.mp4")) as c:
        frames = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    white = np.mean([f > 127 for f in frames])
    assert 0.001 < white < 0.5, "the mask should mark the mouth region, not nothing or everything"
    # talkserve's earlier layout answers too.
    assert requests.get(f"{base}/outputs/{task_id}/video.mp4").content == video.content
    assert requests.get(f"{base}/outputs/{task_id}/mask.mp4").content == mask.content
    for path in (f"/task/{task_id[:-1]}0", f"/results/{task_id[:-1]}0/output.mp4"):
        r = requests.get(f"{base}{path}")
        assert r.status_code == 404 and r.json() == {"detail": "任务不存在"}
    assert requests.get(f"{base}/health").json() == {"status": "healthy"}


def test_queue_endpoint_lists_waiting_tasks_in_order(base, files):
    ids = [requests.post(f"{base}/sync", json={"video_url": f"{files}/video.mp4",
                                                "audio_url": f"{files}/audio.wav"}).json() for _ in range(3)]
    positions = [t["queue_position"] for t in ids]
    assert positions == sorted(positions)
    queue_data = requests.get(f"{base}/queue").json()
    assert set(queue_data) >= {"queue_length", "is_processing", "queued_tasks"}
    waiting = [t["task_id"] for t in queue_data["queued_tasks"]]
    assert waiting == [t["task_id"] for t in ids if t["task_id"] in waiting]
    assert [t["position"] for t in queue_data["queued_tasks"]] == list(range(len(waiting)))
    assert all(t["status"] == "queued" for t in queue_data["queued_tasks"])
    for t in ids:
        assert _wait(base, t["task_id"])["status"] == "completed"


# Only 127.0.0.1 is allowed in this stack (for the test web server); other loopback addresses are not.
@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/v.mp4",
                                 "http://127.0.0.2/v.mp4", "http://[::1]/v.mp4"])
def test_private_addresses_fail_with_a_clear_message(base, files, url):
    task_id = requests.post(f"{base}/sync", json={"video_url": url, "audio_url": f"{files}/audio.wav"}).json()["task_id"]
    data = _wait(base, task_id)
    assert data["status"] == "failed"
    message = data["message"].lower()
    assert "not fetched" in message or "forbidden" in message, data


def test_bad_requests(base, files):
    assert requests.post(f"{base}/sync", json={"video_url": "ftp://x/v.mp4", "audio_url": f"{files}/a.wav"}).status_code == 422
    assert requests.post(f"{base}/sync", json={"audio_url": f"{files}/a.wav"}).status_code == 422
    resp = requests.post(f"{base}/sync", json={"video_url": f"{files}/video.mp4", "audio_url": f"{files}/audio.wav",
                                               "inference_ckpt_path": "/etc/passwd"})
    assert resp.status_code == 400 and "/etc/passwd" in resp.json()["detail"]
    ok = requests.post(f"{base}/sync", json={"video_url": f"{files}/video.mp4", "audio_url": f"{files}/audio.wav",
                                             "inference_ckpt_path": "checkpoints/unet.ckpt", "inference_steps": 20,
                                             "guidance_scale": 1.0})
    assert ok.status_code == 200
    assert _wait(base, ok.json()["task_id"])["status"] == "completed"
