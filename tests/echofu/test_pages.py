"""The EchOfU web pages' own requests, replayed exactly against the real stack.

Each test follows one template of 3uyuan1ee/TFG_ui (EchOfU/templates/*.html): the requests its
script makes, in order, with its field names and encodings (`new FormData(form)` is multipart
with every named field, empty ones too), and what it then does with the answer (the URL it
plays, the field it reads). Models of the pages' types (SyncTalk, ER_NeRF) are built and
rendered by talkface's person model, and say so.
"""

from __future__ import annotations

import io
import time
import wave

import av
import numpy as np
import pytest
import requests

from libs.speech import profile as voice_profile
from libs.speech.espeak import synthesize, wav_bytes
from tests.echofu.recordings import CHAT_QUESTION, record

REF_TEXT = "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow."


def form_data(*fields: tuple[str, str]) -> list[tuple[str, tuple[None, str]]]:
    """Text fields as a browser's FormData sends them: multipart parts without a file name."""
    return [(name, (None, value)) for name, value in fields]


def page_url(path: str) -> str:
    """What a page does with a returned path before it plays it: `static/x` -> `/static/x`."""
    return path if path.startswith(("http", "/")) else "/" + path.removeprefix("./")


def _wait_training(base: str, task_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{base}/api/train-status/{task_id}", timeout=10).json()
        if body["state"] in ("completed", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"training {task_id} did not finish")


def _media(content: bytes) -> dict:
    """What a player finds in a file: its container, streams, a decoded frame and sound."""
    with av.open(io.BytesIO(content)) as c:
        info = {"format": c.format.name, "video": len(c.streams.video), "audio": len(c.streams.audio)}
        if c.streams.video:
            frame = next(c.decode(video=0))
            info["size"] = (frame.width, frame.height)
            info["duration"] = float(c.duration or 0) / av.time_base
    if info["audio"]:
        with av.open(io.BytesIO(content)) as c:
            info["samples"] = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
            info["rate"] = c.streams.audio[0].rate
    return info


def _wav_f0(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav)) as w:
        return voice_profile.extract_profile(np.frombuffer(w.readframes(w.getnframes()), "<i2"),
                                             w.getframerate()).f0_median_hz


def _f0(samples: np.ndarray, rate: int) -> float:
    pcm = samples.astype(np.float64)
    if np.abs(pcm).max() <= 1.0:  # float planes: scale to int16 range
        pcm = pcm * 32767
    return voice_profile.extract_profile(pcm.astype(np.int16), rate).f0_median_hz


@pytest.fixture(scope="module")
def base(echofu):
    return echofu[0]


@pytest.fixture(scope="module")
def ref_voice(base):
    """audio_clone.html's upload: the file input's file as `audio` (a high espeak-ng voice)."""
    assert requests.get(f"{base}/api/reference-audios", timeout=10).json()["status"] == "success"
    wav = wav_bytes(synthesize(REF_TEXT, voice="en-us+f3", pitch=70))
    r = requests.post(f"{base}/api/upload-reference-audio", files={"audio": ("my voice.wav", wav, "audio/wav")},
                      timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    listed = requests.get(f"{base}/api/reference-audios", timeout=10).json()
    option = next(f["relative_path"] for f in listed["files"] if f["filename"] == r.json()["filename"])
    return {"path": option, "wav": wav}


def _train_from_page(base: str, video_path, choice: str) -> dict:
    """model_training.html: upload the video, pick it from the refreshed list, submit the form."""
    assert requests.get(f"{base}/api/training-videos", timeout=10).json()["status"] == "success"
    with open(video_path, "rb") as fh:
        up = requests.post(f"{base}/api/upload-training-video",
                           files={"video": (video_path.name, fh, "video/mp4")}, timeout=120).json()
    assert up["status"] == "success", up
    listed = requests.get(f"{base}/api/training-videos", timeout=10).json()
    assert up["relative_path"] in [f["relative_path"] for f in listed["files"]]
    # new FormData(trainingForm): the select, the chosen video, GPU, the epoch slider, the text box.
    r = requests.post(f"{base}/model_training", files=form_data(
        ("model_choice", choice), ("ref_video", up["relative_path"]), ("gpu_choice", "GPU0"), ("epoch", "100"),
        ("custom_params", "")), timeout=60)
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["status"] == "success" and started["message"] == "模型训练开始"
    return {"video": up["relative_path"], "started": started, "status": _wait_training(base, started["task_id"])}


@pytest.fixture(scope="module")
def er_nerf_model(base, training_video):
    trained = _train_from_page(base, training_video, "ER_NeRF")
    assert trained["status"]["state"] == "completed", trained["status"]
    return trained["status"]["model_path"]


def test_model_training_page(base, training_video, er_nerf_model):
    # Both choices the page offers train; each model is listed under the type the other pages filter by.
    synctalk = _train_from_page(base, training_video, "SyncTalk")
    status = synctalk["status"]
    assert status["state"] == "completed" and status["engine"] == "talkface-person-1", status
    assert status["model_path"] == f"models/SyncTalk/{synctalk['started']['task_id']}"
    assert er_nerf_model.startswith("models/ER-NeRF/train_")

    models = requests.get(f"{base}/api/available-models", timeout=10).json()["models"]
    by_type = {m["type"]: m for m in models}
    assert by_type["ER-NeRF"]["path"] == er_nerf_model and by_type["SyncTalk"]["path"] == status["model_path"]
    for m in by_type.values():
        assert m["engine"] == "talkface-person-1" and "talkface-person-1" in m["description"]
    details = requests.get(f"{base}/api/model-details/ER-NeRF/{er_nerf_model.rsplit('/', 1)[1]}", timeout=10).json()
    assert details["status"] == "success" and details["model_details"]["type"] == "ER-NeRF"
    # The text box's one-parameter-a-line form is read too.
    r = requests.post(f"{base}/model_training", files=form_data(
        ("model_choice", "ER_NeRF"), ("ref_video", synctalk["video"]),
        ("gpu_choice", "GPU0"), ("epoch", "100"), ("custom_params", "base_seconds=5\nmax_seconds=oops")))
    assert r.status_code == 400 and "max_seconds" in r.json()["message"]


def test_video_generation_page(base, er_nerf_model, ref_voice):
    # On load: the voices, the models, then the models of the selected type (ER-NeRF is selected).
    voices = requests.get(f"{base}/api/reference-audios", timeout=10).json()
    assert ref_voice["path"] in [f["relative_path"] for f in voices["files"]]
    models = requests.get(f"{base}/api/available-models", timeout=10).json()["models"]
    options = [m["path"] for m in models if m["type"] == "ER-NeRF"]
    assert options == [er_nerf_model]

    # The reference audio, no text: the person says the recording.
    r = requests.post(f"{base}/video_generation", files=form_data(
        ("model_name", "ER-NeRF"), ("model_param", options[0]), ("ref_audio", ref_voice["path"]),
        ("gpu_choice", "GPU0"), ("target_text", ""), ("pitch", "0"), ("pitch_quality", "balanced")), timeout=300)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["status"] == "success" and result["video_path"] and result["engine"] == "talkface-person-1"
    played = requests.get(f"{base}{page_url(result['video_path'])}", timeout=60)
    assert played.status_code == 200 and played.headers["content-type"] == "video/mp4"
    media = _media(played.content)
    assert media["video"] == 1 and media["audio"] == 1 and media["size"] == (256, 256)
    assert abs(media["duration"] - synthesize(REF_TEXT, voice="en-us+f3", pitch=70).duration_s) < 0.3

    # A text with the reference audio selected: spoken in the reference's (high) voice.
    r = requests.post(f"{base}/video_generation", files=form_data(
        ("model_name", "ER-NeRF"), ("model_param", options[0]), ("ref_audio", ref_voice["path"]),
        ("gpu_choice", "GPU0"), ("target_text", "I would like a cup of tea, please."), ("pitch", "0"),
        ("pitch_quality", "balanced")), timeout=300)
    assert r.status_code == 200, r.text
    spoken = _media(requests.get(f"{base}{page_url(r.json()['video_path'])}", timeout=60).content)
    assert spoken["video"] == 1 and spoken["audio"] == 1
    reference = _wav_f0(ref_voice["wav"])
    assert abs(_f0(spoken["samples"], spoken["rate"]) - reference) / reference < 0.2


def test_chat_system_page(base, er_nerf_model, ref_voice, chat_server, tmp_path):
    models = requests.get(f"{base}/api/available-models", timeout=10).json()["models"]
    assert er_nerf_model in [m["path"] for m in models]
    assert requests.get(f"{base}/api/reference-audios", timeout=10).json()["status"] == "success"
    # The recorder's WebM/Opus in a Blob typed audio/wav, appended as 'input.wav'.
    recording = record(tmp_path / "input.wav", "webm-opus", CHAT_QUESTION).read_bytes()
    saved = requests.post(f"{base}/save_audio", files={"audio": ("input.wav", recording, "audio/wav")}, timeout=60)
    assert saved.status_code == 200 and saved.json()["status"] == "success", saved.text
    # generateVideo(): the selects' values, and the API choice.
    r = requests.post(f"{base}/chat_system", files=form_data(
        ("model_name", "ER-NeRF"), ("model_param", er_nerf_model), ("ref_audio", ref_voice["path"]),
        ("api_choice", "glm-4-plus")), timeout=600)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["status"] == "success" and result["engine"] == "talkface-person-1"
    assert chat_server.requests[-1]["messages"][-1]["content"] == result["question"]
    # chatVideo.src = result.video_path: a URL on the page's own server, a real MP4 with sound.
    assert result["video_path"].startswith("/static/videos/res_videos/")
    played = requests.get(f"{base}{result['video_path']}", timeout=60)
    assert played.status_code == 200 and played.headers["content-type"] == "video/mp4"
    media = _media(played.content)
    assert "mp4" in media["format"] and media["video"] == 1 and media["audio"] == 1
    assert media["size"] == (256, 256) and media["duration"] > 1.0
    assert np.abs(media["samples"]).max() > 0.01  # sound, not silence
    # Spoken in the selected reference voice (upstream clones the answer's voice from ref_audio).
    assert result["voice_source"] == f"ref_audio:{ref_voice['path']}"
    reference = _wav_f0(ref_voice["wav"])
    assert abs(_f0(media["samples"], media["rate"]) - reference) / reference < 0.2


def test_audio_clone_page(base, ref_voice):
    # "加载原音频": <audio src="/static/voices/ref_voices/<file>"> plays the uploaded recording.
    preview = requests.get(f"{base}/{ref_voice['path']}", timeout=30)
    assert preview.status_code == 200 and preview.headers["content-type"] == "audio/wav"
    assert preview.content == ref_voice["wav"]
    assert requests.get(f"{base}/static/voices/ref_voices/nobody.wav", timeout=10).status_code == 404

    # "开始语音克隆": ref_audio_path, generate_text and the optional output_filename, as FormData.
    r = requests.post(f"{base}/audio_clone", files=form_data(
        ("ref_audio_path", ref_voice["path"]), ("generate_text", "Good morning, this is my cloned voice."),
        ("output_filename", "morning")), timeout=120)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["status"] == "success" and isinstance(result["generation_time"], float)
    assert result["cloned_audio_path"] == "static/voices/res_voices/morning.wav"
    played = requests.get(f"{base}/{result['cloned_audio_path']}", timeout=30)
    assert played.status_code == 200 and played.headers["content-type"] == "audio/wav"
    media = _media(played.content)
    reference = _wav_f0(ref_voice["wav"])
    assert abs(_f0(media["samples"], media["rate"]) - reference) / reference < 0.2

    # Without a text the page's request is a clone of the reference (a speaker profile).
    r = requests.post(f"{base}/audio_clone", files=form_data(("ref_audio_path", ref_voice["path"])), timeout=120)
    assert r.status_code == 200 and r.json()["message"] == "说话人特征提取完成，可以用于后续音频生成", r.text
    # audio-manager.js: the list it fills its selects with (not its built-in fallback list).
    listed = requests.get(f"{base}/api/cloned-audios", timeout=10).json()
    assert listed["status"] == "success" and listed["audios"]
    assert all({"id", "name", "created_at"} <= set(a) for a in listed["audios"])
