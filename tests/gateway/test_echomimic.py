"""The EchoMimic APIs, replayed with the documents' own client code (only the host changed)."""

import io
import time

import av
import numpy as np
import pytest
import requests
from scipy.signal import resample_poly

from libs.speech.espeak import synthesize, write_wav


@pytest.fixture(scope="module")
def api_url(stack):
    return stack[0]


# -- the client functions of echomimic-fastapi.md, verbatim but for API_URL -------------------------

def make_client(API_URL):
    def generate_video(image_path, audio_path, params=None):
        if params is None:
            params = {}
        files = {
            'reference_image': ('image.png', open(image_path, 'rb'), 'image/png'),
            'audio_file': ('audio.wav', open(audio_path, 'rb'), 'audio/wav')
        }
        response = requests.post(f"{API_URL}/generate_video", files=files, data=params)
        return response.json()

    def get_task_status(task_id):
        response = requests.get(f"{API_URL}/task/{task_id}")
        return response.json()

    def download_video(task_id, save_path):
        response = requests.get(f"{API_URL}/download/{task_id}", stream=True)
        if response.status_code == 200:
            with open(save_path, 'wb') as f:
                for chunk in response.iter_content(chunk_size=8192):
                    f.write(chunk)
            return True
        return False

    return generate_video, get_task_status, download_video


def _poll(get_task_status, task_id, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get_task_status(task_id)
        if status["status"] in ["completed", "failed"]:
            return status
        time.sleep(0.3)
    raise AssertionError(f"{task_id} did not finish")


def _durations(data: bytes) -> tuple[float, float, int, int]:
    with av.open(io.BytesIO(data)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        return float(v.duration * v.time_base), float(a.duration * a.time_base), v.width, v.height


def test_documented_client_generates_and_downloads(api_url, portrait, speech, tmp_path):
    generate_video, get_task_status, download_video = make_client(api_url)
    result = generate_video(portrait, speech, {"width": 256, "height": 320, "steps": 6})
    assert result["status"] == "pending" and set(result) == {"task_id", "status"}
    task_id = result["task_id"]
    status = _poll(get_task_status, task_id)
    assert status["status"] == "completed", status
    assert status["output_file"] == f"output/videos/{task_id}_with_audio.mp4"
    assert status["error"] is None
    assert status["engine"] == "talkface-1"
    out = tmp_path / "output_video.mp4"
    assert download_video(task_id, out)
    v, a, w, h = _durations(out.read_bytes())
    assert (w, h) == (256, 320)
    assert abs(v - a) <= 0.1
    # Saved under the name the document's JavaScript gives it, and served where output_file says.
    download = requests.get(f"{api_url}/download/{task_id}")
    assert download.headers["content-disposition"] == f'attachment; filename="echomimic_{task_id}.mp4"'
    assert requests.get(f"{api_url}/{status['output_file']}").content == out.read_bytes()


def test_length_caps_the_frame_count(api_url, portrait, speech):
    generate_video, get_task_status, _ = make_client(api_url)
    task_id = generate_video(portrait, speech, {"width": 128, "height": 128, "length": 12, "fps": 24})["task_id"]
    assert _poll(get_task_status, task_id)["status"] == "completed"
    data = requests.get(f"{api_url}/download/{task_id}").content
    v, _, _, _ = _durations(data)
    assert v == pytest.approx(0.5, abs=0.05)


def test_multi_audio_segments_and_combined_video(api_url, portrait, tmp_path):
    # The request of echomimic-multi-audio-api.md, with its two audio files.
    for i, text in enumerate(("First part of the story.", "And here is the second part, a bit longer.")):
        write_wav(synthesize(text), tmp_path / f"audio{i + 1}.wav")
    # The second arrives at 44.1 kHz, as recorded sound does; the clips are still joined.
    second = synthesize("And here is the second part, a bit longer.")
    second.samples = resample_poly(second.samples.astype(np.float64), 2, 1).round().astype(np.int16)
    second.sample_rate *= 2
    write_wav(second, tmp_path / "audio2.wav")
    url = f"{api_url}/generate_multi_videos"
    files = []
    files.append(('reference_image', ('face.png', open(portrait, 'rb'), 'image/png')))
    files.append(('audio_files', ('audio1.wav', open(tmp_path / 'audio1.wav', 'rb'), 'audio/wav')))
    files.append(('audio_files', ('audio2.wav', open(tmp_path / 'audio2.wav', 'rb'), 'audio/wav')))
    data = {'combine_videos': 'true', 'width': '192', 'height': '192'}
    response = requests.post(url, files=files, data=data)
    for _, file_tuple in files:
        file_tuple[1].close()
    assert response.status_code == 200, response.text
    task_id = response.json()['task_id']

    _, get_task_status, _ = make_client(api_url)
    status = _poll(get_task_status, task_id)
    assert status["status"] == "completed", status
    assert status["output_files"] == [f"output/videos/{task_id}_segment_0_with_audio.mp4",
                                      f"output/videos/{task_id}_segment_1_with_audio.mp4"]
    assert status["combined_output_file"] == f"output/videos/{task_id}_combined.mp4"
    parts = [requests.get(f"{api_url}/download_segment/{task_id}/{i}") for i in range(2)]
    assert all(p.status_code == 200 for p in parts)
    assert [p.headers["content-disposition"] for p in parts] == [
        f'attachment; filename="echomimic_{task_id}_segment_{i}.mp4"' for i in range(2)]
    combined = requests.get(f"{api_url}/download_combined/{task_id}")
    assert combined.status_code == 200
    assert combined.headers["content-disposition"] == f'attachment; filename="echomimic_{task_id}_combined.mp4"'
    assert [requests.get(f"{api_url}/{path}").content for path in status["output_files"]] == [
        p.content for p in parts]
    assert requests.get(f"{api_url}/{status['combined_output_file']}").content == combined.content
    part_seconds = [_durations(p.content)[0] for p in parts]
    v, a, _, _ = _durations(combined.content)
    assert v == pytest.approx(sum(part_seconds), abs=0.1)
    assert a == pytest.approx(sum(part_seconds), abs=0.15)
    with av.open(io.BytesIO(combined.content)) as c:
        assert c.streams.audio[0].codec_context.sample_rate == 48000
    missing = requests.get(f"{api_url}/download_segment/{task_id}/2")
    assert missing.status_code == 404 and missing.json() == {"detail": "片段 2 不存在"}


def test_multi_without_combine_has_no_combined_file(api_url, portrait, speech):
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        resp = requests.post(f"{api_url}/generate_multi_videos",
                             files=[("reference_image", img), ("audio_files", aud)],
                             data={"width": "128", "height": "128"})
    task_id = resp.json()["task_id"]
    _, get_task_status, _ = make_client(api_url)
    status = _poll(get_task_status, task_id)
    assert status["status"] == "completed"
    assert status["combined_output_file"] is None and len(status["output_files"]) == 1
    missing = requests.get(f"{api_url}/download_combined/{task_id}")
    assert missing.status_code == 404 and missing.json() == {"detail": "没有合并的视频文件"}


@pytest.mark.parametrize("field,ok,bad", [
    ("width", "64", "56"), ("width", "2048", "2056"), ("height", "64", "63"), ("length", "1", "0"),
    ("facemask_dilation_ratio", "1.0", "1.01"), ("facecrop_dilation_ratio", "0.0", "-0.1"),
    ("cfg", "20", "20.5"), ("steps", "100", "101"), ("steps", "1", "0"), ("sample_rate", "8000", "7999"),
    ("fps", "60", "61"), ("device", "cpu", "tpu"), ("context_frames", "64", "65"), ("seed", "0", "-1"),
])
def test_parameter_boundaries(api_url, portrait, speech, field, ok, bad):
    def post(value):
        with open(portrait, "rb") as img, open(speech, "rb") as aud:
            return requests.post(f"{api_url}/generate_video", files={"reference_image": img, "audio_file": aud},
                                 data={field: value, "width": "64", "height": "64", "length": "2"}
                                 | ({field: value}))
    good = post(ok)
    assert good.status_code == 200, good.text
    refused = post(bad)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert any(field in str(e.get("loc", "")) or field in str(e.get("msg", "")) for e in detail), detail


def test_unknown_task_and_unready_download(api_url, portrait, speech):
    # The wrapper's words (echomimic-fastapi's server): 任务不存在, and a status that cannot be downloaded.
    for path in ("/task/nope", "/download/nope", "/download_segment/nope/0", "/download_combined/nope",
                 "/output/videos/nope_with_audio.mp4"):
        r = requests.get(f"{api_url}{path}")
        assert r.status_code == 404 and r.json() == {"detail": "任务不存在"}, path
    generate_video, get_task_status, _ = make_client(api_url)
    task_id = generate_video(portrait, speech, {"width": 512, "height": 512})["task_id"]
    early = requests.get(f"{api_url}/download/{task_id}")  # asked at once: a 512 px render takes seconds
    assert early.status_code == 400 and early.json()["detail"] in ("任务状态: pending, 不可下载",
                                                                  "任务状态: processing, 不可下载")
    assert _poll(get_task_status, task_id)["status"] == "completed"
