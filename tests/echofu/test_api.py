"""Every endpoint of echofu-platform-api.md against the real stack: store, media, voice replica, gateway."""

from __future__ import annotations

import io
import re
import time
import wave
from datetime import datetime

import av
import numpy as np
import psutil
import pytest
import requests

from libs.speech import profile as voice_profile
from libs.speech import whisper_asr
from libs.speech.espeak import synthesize, wav_bytes
from libs.speech.wer import normalize
from libs.talkface import analysis
from services.gateway.settings import GatewaySettings
from tests import servers
from tests.echofu.recordings import CHAT_QUESTION, CONTAINERS, record

QUESTION = "Where is the nearest train station?"


def _wav_bytes(text: str, **kw) -> bytes:
    return wav_bytes(synthesize(text, **kw))


def _poll(base: str, path: str, timeout: float = 120.0) -> tuple[dict, list]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{base}{path}").json()
        seen.append((body["state"], body["progress"], body["message"]))
        if body["state"] in ("completed", "failed", "cancelled"):
            return body, seen
        time.sleep(0.2)
    raise AssertionError(f"{path} did not finish: {seen[-3:]}")


def _streams(content: bytes) -> dict:
    with av.open(io.BytesIO(content)) as c:
        video = c.streams.video[0]
        return {"video": bool(c.streams.video), "audio": bool(c.streams.audio),
                "duration": float(c.duration or 0) / av.time_base, "width": video.codec_context.width}


@pytest.fixture(scope="module")
def base(echofu):
    return echofu[0]


@pytest.fixture(scope="module")
def ref_voice(base):
    """A reference recording of a high (female) espeak-ng voice, uploaded with a Chinese file name."""
    files = {"audio": ("参考 声音.wav", _wav_bytes(
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
        voice="en-us+f3", pitch=70), "audio/wav")}
    r = requests.post(f"{base}/api/upload-reference-audio", files=files)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def trained(base, training_video):
    """Upload the training clip and train the built-in person model on it."""
    with open(training_video, "rb") as fh:
        r = requests.post(f"{base}/api/upload-training-video", files={"video": (training_video.name, fh, "video/mp4")})
    assert r.status_code == 200, r.text
    video = r.json()
    t0 = time.monotonic()
    r = requests.post(f"{base}/model_training", data={
        "model_choice": "talkface-person", "ref_video": video["relative_path"], "gpu_choice": "GPU0", "epoch": "5",
        "custom_params": "lr=0.001,batch_size=4,base_seconds=6"})
    assert r.status_code == 200, r.text
    started = r.json()
    status, seen = _poll(base, f"/api/train-status/{started['task_id']}")
    elapsed = time.monotonic() - t0
    assert status["state"] == "completed", status
    return {"video": video, "started": started, "status": status, "seen": seen, "seconds": elapsed}


# -- 1-4 -----------------------------------------------------------------------------------------


def test_upload_reference_audio(base, ref_voice):
    assert ref_voice["status"] == "success" and ref_voice["message"] == "音频上传成功"
    assert ref_voice["original_name"] == "参考 声音.wav"
    assert re.fullmatch(r"[A-Za-z0-9_.-]+\.wav", ref_voice["filename"])
    assert ref_voice["relative_path"] == "static/voices/ref_voices/" + ref_voice["filename"]

    # The same name again gets a name of its own.
    again = requests.post(f"{base}/api/upload-reference-audio",
                          files={"audio": ("参考 声音.wav", _wav_bytes("One more take."), "audio/wav")}).json()
    assert again["filename"] != ref_voice["filename"]

    r = requests.post(f"{base}/api/upload-reference-audio", files={"audio": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 400 and r.json()["status"] == "error"
    r = requests.post(f"{base}/api/upload-reference-audio", files={"other": ("a.wav", b"x", "audio/wav")})
    assert r.status_code == 400 and r.json()["status"] == "error"
    # A .wav name is not enough: the content is decoded.
    r = requests.post(f"{base}/api/upload-reference-audio", files={"audio": ("fake.wav", b"\0" * 4096, "audio/wav")})
    assert r.status_code == 400 and r.json()["status"] == "error", r.text


def test_reference_audio_list(base, ref_voice):
    body = requests.get(f"{base}/api/reference-audios").json()
    assert body["status"] == "success" and body["total_count"] == len(body["files"]) >= 2
    entry = next(f for f in body["files"] if f["filename"] == ref_voice["filename"])
    assert set(entry) == {"filename", "size", "size_mb", "created_time", "modified_time", "file_type",
                          "relative_path"}
    assert entry["file_type"] == "WAV" and entry["size"] > 10_000
    assert entry["relative_path"] == ref_voice["relative_path"]
    datetime.strptime(entry["created_time"], "%Y-%m-%d %H:%M:%S")


def test_training_video_upload_list_and_limit(base, trained, echofu):
    video = trained["video"]
    assert video["message"] == "视频上传成功" and video["original_name"] == "grace talking.mp4"
    assert video["filename"] == "grace_talking.mp4"
    assert video["relative_path"] == "static/videos/ref_videos/grace_talking.mp4"
    body = requests.get(f"{base}/api/training-videos").json()
    assert body["status"] == "success" and body["total_count"] == 1
    assert body["files"][0]["relative_path"] == video["relative_path"] and body["files"][0]["file_type"] == "MP4"

    assert GatewaySettings().echofu_video_max_bytes == 200 * 1024 * 1024  # the documented default
    big = b"\0" * (3 * 1024 * 1024)  # this stack is configured with 2 MB
    r = requests.post(f"{base}/api/upload-training-video", files={"video": ("big.mp4", big, "video/mp4")})
    assert r.status_code == 400 and "2MB" in r.json()["message"]
    r = requests.post(f"{base}/api/upload-training-video", files={"video": ("clip.exe", b"MZ", "video/mp4")})
    assert r.status_code == 400


# -- 5, 6, 10: person models ---------------------------------------------------------------------


def test_model_training(base, trained):
    started, status = trained["started"], trained["status"]
    assert started["status"] == "success" and started["message"] == "模型训练开始"
    assert re.fullmatch(r"train_\d{8}_\d{6}_[0-9a-f]{6}", started["task_id"])
    progress = [p for _, p, _ in trained["seen"]]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert status["message"] == "模型训练完成" and status["engine"] == "talkface-person-1"
    result = status["result"]
    assert result["frames_read"] >= 80 and result["frames_with_face"] == result["frames_read"]
    assert result["atlas_entries"] >= 50 and result["has_voice_profile"] is True
    assert status["model_path"] == f"models/talkface-person/{started['task_id']}"
    print(f"\ntraining on a {result['frames_read']}-frame clip: {trained['seconds']:.2f} s end to end, "
          f"{result['build_seconds']:.2f} s in the engine")


def test_training_refuses_unknown_types_and_bad_input(base, trained):
    ref_video = trained["video"]["relative_path"]
    r = requests.post(f"{base}/model_training", data={"model_choice": "NeRFace", "ref_video": ref_video})
    assert r.status_code == 400 and "不支持的模型类型" in r.json()["message"], r.text
    r = requests.post(f"{base}/model_training", data={"ref_video": "static/videos/ref_videos/none.mp4"})
    assert r.status_code == 404
    r = requests.post(f"{base}/model_training", data={"ref_video": "../../etc/passwd"})
    assert r.status_code == 400
    r = requests.post(f"{base}/model_training", data={"ref_video": ref_video, "epoch": "many"})
    assert r.status_code == 400
    r = requests.get(f"{base}/api/train-status/train_19990101_000000_abcdef")
    assert r.status_code == 404 and r.json()["status"] == "error"


def test_available_models_and_details(base, trained):
    task_id = trained["started"]["task_id"]
    body = requests.get(f"{base}/api/available-models").json()
    assert body["status"] == "success" and body["total_count"] == 1
    model = body["models"][0]
    assert model["name"] == task_id and model["type"] == "talkface-person"
    assert model["path"] == f"models/talkface-person/{task_id}"
    assert model["model_files_count"] == 6  # model.json, atlas, base clip, track, voice profile, training.json
    assert model["description"] == "talkface-person 模型 - 包含 6 个模型文件"
    types = {t["type"]: t for t in body["model_types"]}
    assert all(t["available"] and t["engine"] == "talkface-person-1" for t in types.values())
    assert set(types) == {"talkface-person", "ER-NeRF", "SyncTalk"}
    assert "talkface's person model" in types["ER-NeRF"]["note"]

    details = requests.get(f"{base}/api/model-details/talkface-person/{task_id}").json()["model_details"]
    assert details["total_files"] == 6 and details["path"] == model["path"]
    names = {f["filename"] for f in details["files"]}
    assert {"model.json", "atlas.npz", "base.mp4", "base_track.npz", "voice_profile.json", "training.json"} == names
    assert all(f["relative_path"] == f"{model['path']}/{f['filename']}" for f in details["files"])
    assert details["total_size_mb"] == round(sum(f["size"] for f in details["files"]) / 1024 / 1024, 2)
    root = requests.get(f"{base}/api/model-details/talkface-person/root").json()
    assert root["model_details"]["total_files"] == 6

    r = requests.get(f"{base}/api/model-details/NotAModel/{task_id}")
    assert r.status_code == 400 and r.json()["status"] == "error"
    r = requests.get(f"{base}/api/model-details/SyncTalk/anything")
    assert r.status_code == 404 and r.json()["status"] == "error"
    r = requests.get(f"{base}/api/model-details/talkface-person/missing_model")
    assert r.status_code == 404


# -- 9: generation -------------------------------------------------------------------------------


def test_video_generation_from_text(base, trained):
    model_path = trained["status"]["model_path"]
    text = "Bob made a map of the moon. Open wide and say papa."
    t0 = time.monotonic()
    r = requests.post(f"{base}/video_generation", data={
        "model_name": "talkface-person", "model_param": model_path, "gpu_choice": "GPU0", "target_text": text})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["message"] == "视频生成成功" and body["engine"] == "talkface-person-1"
    assert re.fullmatch(r"static/videos/res_videos/[A-Za-z0-9_.-]+\.mp4", body["video_path"])
    assert body["result"]["tts_engine"] == "espeak-ng-profile-1"
    video = requests.get(f"{base}/video/{body['video_path']}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    info = _streams(video.content)
    assert info["video"] and info["audio"] and info["width"] == 256
    # Spoken at the person's own rate (the training clip's espeak-ng default voice is slower
    # than the klatt4 voice at its default rate), and the video lasts exactly as long.
    rate = body["result"]["tts_rate_wpm"]
    assert 110 <= rate <= 175, rate
    speech_seconds = synthesize(text, voice=body["result"]["tts_voice"], rate_wpm=rate).duration_s
    assert abs(info["duration"] - speech_seconds) < 0.3
    print(f"\ngeneration from text: {info['duration']:.2f} s of video in {elapsed:.2f} s "
          f"(RTF {elapsed / info['duration']:.2f}, end to end)")


def test_video_generation_from_audio_async(base, trained, ref_voice, tmp_path):
    model_path = trained["status"]["model_path"]
    r = requests.post(f"{base}/video_generation?async=1", data={
        "model_name": "talkface-person", "model_param": model_path, "ref_audio": ref_voice["relative_path"]})
    assert r.status_code == 200, r.text
    started = r.json()
    status, seen = _poll(base, f"/api/task-status/{started['task_id']}")
    assert status["state"] == "completed" and status["type"] == "video_generation", status
    assert status["video_path"] == started["video_path"]
    content = requests.get(f"{base}/{started['video_path']}").content
    path = tmp_path / "out.mp4"
    path.write_bytes(content)
    # The mouth follows the reference audio: opening against loudness, measured on the output alone.
    an = analysis.analyze_video(path, track=True)
    loud = analysis.audio_loudness(path, an.fps, an.n_frames)
    assert an.face_found.mean() > 0.95
    assert analysis.lip_sync_correlation(an.opening, loud) > 0.3

    part = requests.get(f"{base}/static/{started['video_path'][len('static/'):]}", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert part.headers["content-range"] == f"bytes 0-99/{len(content)}"

    r = requests.post(f"{base}/video_generation", data={"model_param": model_path})
    assert r.status_code == 400 and r.json()["status"] == "error"
    r = requests.post(f"{base}/video_generation", data={"model_param": model_path,
                                                        "ref_audio": "static/voices/ref_voices/missing.wav"})
    assert r.status_code == 404
    r = requests.post(f"{base}/video_generation", data={"model_name": "SyncTalk", "target_text": "hi"})
    assert r.status_code == 400 and "没有已训练的模型" in r.json()["message"]  # none of that type trained here
    r = requests.post(f"{base}/video_generation", data={"model_param": "models/talkface-person/nope",
                                                        "target_text": "hi"})
    assert r.status_code == 404


# -- 7, 11: voice profiles -----------------------------------------------------------------------


def test_audio_clone_both_modes(base, ref_voice, tmp_path):
    r = requests.post(f"{base}/audio_clone", data={"original_audio_path": ref_voice["relative_path"],
                                                   "target_audio_id": "alice"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["message"] == "说话人特征提取完成，可以用于后续音频生成"
    assert body["profile"]["f0_median_hz"] > 180  # a high voice

    listed = requests.get(f"{base}/api/cloned-audios").json()
    assert listed["status"] == "success" and listed["total_count"] == 1
    spk = listed["audios"][0]
    assert spk["id"] == "alice" and spk["name"] == "alice" and spk["status"] == "已提取特征"
    assert spk["reference_audio"] == ref_voice["relative_path"]

    r = requests.post(f"{base}/audio_clone", data={"audio_id": "alice", "gen_audio_id": "alice hello",
                                                   "generate_text": "I would like a cup of tea, please."})
    assert r.status_code == 200, r.text
    gen = r.json()
    assert gen["status"] == "success" and gen["message"] == "音频生成成功"
    assert gen["cloned_audio_path"] == "static/voices/res_voices/alice_hello.wav"
    wav = requests.get(f"{base}/{gen['cloned_audio_path']}")
    assert wav.status_code == 200
    path = tmp_path / "cloned.wav"
    path.write_bytes(wav.content)
    with wave.open(str(path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        rate = w.getframerate()
    measured = voice_profile.extract_profile(samples, rate)
    # The profile moved the voice to the reference's pitch (espeak-ng's default is about 105 Hz).
    assert abs(measured.f0_median_hz - body["profile"]["f0_median_hz"]) / body["profile"]["f0_median_hz"] < 0.2

    r = requests.post(f"{base}/audio_clone", data={"audio_id": "nobody", "generate_text": "hello"})
    assert r.status_code == 404
    r = requests.post(f"{base}/audio_clone", data={"generate_text": "你好，世界。"})
    assert r.status_code == 200 and r.json()["settings"]["voice"] == "cmn"
    r = requests.post(f"{base}/audio_clone", data={})
    assert r.status_code == 400


# -- 8, 12: chat ---------------------------------------------------------------------------------


def test_save_audio(base):
    r = requests.post(f"{base}/save_audio", files={"audio": ("recording.webm", _wav_bytes(QUESTION,
                                                                                         voice="en-us+klatt4"),
                                                             "audio/wav")})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success", "message": "音频保存成功", "path": "EchOfU/static/audios/input.wav"}
    r = requests.post(f"{base}/save_audio", files={"audio": ("x.wav", b"not audio at all" * 100, "audio/wav")})
    assert r.status_code == 400


@pytest.mark.parametrize("container", CONTAINERS)
def test_save_audio_takes_any_container_named_input_wav(base, container, tmp_path):
    recording = record(tmp_path / "input.wav", container)
    r = requests.post(f"{base}/save_audio", files={"audio": ("input.wav", recording.read_bytes(), "audio/wav")})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "EchOfU/static/audios/input.wav"


def test_chat_system(base, trained, chat_server, tmp_path):
    # As the chat page sends it: WebM/Opus from the browser's recorder, named input.wav.
    recording = record(tmp_path / "input.wav", "webm-opus", CHAT_QUESTION)
    r = requests.post(f"{base}/save_audio", files={"audio": ("input.wav", recording.read_bytes(), "audio/wav")})
    assert r.status_code == 200, r.text
    r = requests.post(f"{base}/chat_system", data={
        "model_name": "talkface-person", "model_param": trained["status"]["model_path"], "voice_clone": "false",
        "api_choice": "test-model"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["message"] == "对话生成成功"
    assert re.fullmatch(r"/static/videos/res_videos/chat_[A-Za-z0-9_]+\.mp4", body["response"])
    assert body["video_path"] == body["response"]  # what the chat page plays
    # The question was recognised from the recording and passed on to the chat endpoint.
    sent = chat_server.requests[-1]
    assert sent["model"] == "test-model" and chat_server.headers[-1]["Authorization"] == "Bearer sk-test"
    asked = sent["messages"][-1]["content"]
    assert asked == body["question"] and normalize(asked) == "hello there this is test forty seven".split()
    assert body["asr_engine"] == whisper_asr.ENGINE_NAME
    assert body["answer"] == f"You asked about {asked}. Walk two blocks north."
    video = requests.get(f"{base}{body['response']}")
    info = _streams(video.content)
    assert info["video"] and info["audio"]
    spoken = synthesize(body["answer"], voice=body["tts_voice"], rate_wpm=body["tts_rate_wpm"])
    assert abs(info["duration"] - spoken.duration_s) < 0.3


def test_chat_without_llm_is_503(echofu):
    _, back = echofu
    with servers.gateway(back) as url:
        r = requests.post(f"{url}/chat_system", data={"model_name": "talkface-person"})
    assert r.status_code == 503
    assert r.json()["status"] == "error" and "TALKSERVE_GATEWAY_LLM_BASE_URL" in r.json()["message"]


# -- 13-15 ---------------------------------------------------------------------------------------


def test_status_reports_real_figures(base):
    body = requests.get(f"{base}/api/status").json()
    assert set(body) >= {"cpu_percent", "memory_percent", "memory_used", "memory_total", "disk_percent", "gpus",
                         "timestamp"}
    assert body["memory_total"] == psutil.virtual_memory().total
    assert 0 < body["memory_used"] < body["memory_total"] and 0 < body["memory_percent"] < 100
    assert 0.0 <= body["cpu_percent"] <= 100.0
    assert abs(body["disk_percent"] - psutil.disk_usage("/").percent) < 1.0
    datetime.fromisoformat(body["timestamp"])
    for gpu in body["gpus"]:  # only on a machine with an NVIDIA GPU
        assert gpu["name"].startswith("GPU") and gpu["memory_total"] > 0


def test_history(base, trained):
    generated = requests.get(f"{base}/api/history/video_generation").json()
    assert isinstance(generated, list)
    training = requests.get(f"{base}/api/history/model_training").json()
    assert any(e["task_id"] == trained["started"]["task_id"] for e in training)
    assert requests.get(f"{base}/api/history/never_written").json() == []
    assert requests.get(f"{base}/api/history/bad%20type").status_code == 400


def test_video_serves_only_results(base, ref_voice):
    for path in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "static%2F..%2F..%2Fetc%2Fhosts",
                 "static/videos/res_videos/..%2F..%2Fvoices%2Fref_voices%2F" + ref_voice["filename"],
                 "..%5C..%5Cetc%5Cpasswd"):
        r = requests.get(f"{base}/video/{path}")
        assert r.status_code in (400, 404), (path, r.status_code)
        assert r.json()["status"] == "error"
    r = requests.get(f"{base}/video/nothing.mp4")
    assert r.status_code == 404 and r.json() == {"status": "error", "message": "视频文件不存在"}
    # /video/ serves results only; the chat's recording is not served at all.
    assert requests.get(f"{base}/video/{ref_voice['relative_path']}").status_code == 404
    assert requests.get(f"{base}/static/audios/input.wav").status_code == 404
    assert requests.get(f"{base}/static/videos/ref_videos/grace_talking.mp4").status_code == 404
    # Reference voices are: the pages play them at /static/voices/ref_voices/<file>.
    preview = requests.get(f"{base}/{ref_voice['relative_path']}")
    assert preview.status_code == 200 and preview.headers["content-type"] == "audio/wav"
