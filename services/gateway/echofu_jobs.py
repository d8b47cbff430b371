"""The EchOfU task kinds (person-model training, person video generation, speech chat) on voice replicas.

Importing this module registers the kinds with the pipeline and the voice replicas' stub
with the gateway's clients. It also owns where EchOfU's files live in the store: each owner
has a space (`Space`), and the documented `static/...` and `models/...` paths map one to
one onto keys in the caller's space.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import grpc
import httpx

from libs.store.client import AlreadyExists, NotFound, PreconditionFailed
from libs.tasks import TaskRecord, TaskStatus
from services.gateway.keys import ref, task_key
from services.gateway.pipeline import Pipeline, Retryable, Run, TaskFailed, failure, register_kind
from talkserve.media.v1 import media_pb2
from talkserve.voice.v1 import voice_pb2

log = logging.getLogger(__name__)

VOICE_KIND = "voice"
API = "echofu"
ROOT = "echofu/"
INPUT_WAV_DOCUMENTED = "EchOfU/static/audios/input.wav"
REF_VOICES = "static/voices/ref_voices/"
RES_VOICES = "static/voices/res_voices/"
REF_VIDEOS = "static/videos/ref_videos/"
RES_VIDEOS = "static/videos/res_videos/"
# The built-in person-model type; the two upstream ones are listed with why they are missing.
BUILTIN_TYPE = "talkface-person"
UNAVAILABLE_TYPES = {
    "ER-NeRF": "ER-NeRF needs its upstream code (PyTorch, CUDA extensions, a face-parsing model and "
               "DeepSpeech/HuBERT audio features) and hours of GPU training per person; this server ships "
               "none of it. Use the built-in talkface-person type.",
    "SyncTalk": "SyncTalk needs its upstream code and checkpoints (tri-plane NeRF, its audio-visual "
                "encoder, face-parsing and 3DMM fitting models) and a CUDA GPU; this server ships none "
                "of it. Use the built-in talkface-person type.",
}
MODEL_TYPES = (BUILTIN_TYPE, *UNAVAILABLE_TYPES)
HISTORY_LIMIT = 500
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


# -- store layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """One owner's EchOfU files: uploads, person models, voices, speakers, videos, history.

    Every key has a space of its own under `echofu/keys/<key id>/`, so a key can neither see
    nor name, nor overwrite by reusing an id, what another key made; without keys (the local
    default) every caller shares the anonymous space, `echofu/` itself. The documented
    `static/...` and `models/...` paths clients send and receive are relative to the caller's
    space.
    """

    root: str

    @classmethod
    def of(cls, key_id: str | None) -> "Space":
        """The space of an API key's id (None: anonymous callers)."""
        return cls(ROOT if key_id is None else f"{ROOT}keys/{key_id}/")

    def static_key(self, relative: str) -> str:
        """`static/...` (as documented) -> its object key."""
        return self.root + relative

    def models_prefix(self, model_type: str) -> str:
        return f"{self.root}models/{model_type}/"

    def model_prefix(self, model_type: str, model_id: str) -> str:
        return f"{self.models_prefix(model_type)}{model_id}/"

    @property
    def speakers_prefix(self) -> str:
        return f"{self.root}speakers/"

    def speaker_key(self, speaker_id: str) -> str:
        return f"{self.speakers_prefix}{speaker_id}.json"

    def history_key(self, history_type: str) -> str:
        return f"{self.root}history/{history_type}.json"

    @property
    def input_wav(self) -> str:
        """The chat's recording, `static/audios/input.wav` (one per space: the last one wins)."""
        return self.static_key("static/audios/input.wav")

    def staging_key(self, suffix: str = "") -> str:
        """A fresh key for an upload being checked."""
        return f"{self.root}uploads/{secrets.token_hex(8)}{suffix}"


def model_path(model_type: str, model_id: str) -> str:
    """The documented form of a model's path."""
    return f"models/{model_type}/{model_id}"


def valid_id(value: str) -> bool:
    return bool(_ID.match(value or ""))


def new_id(prefix: str) -> str:
    """`prefix_YYYYMMDD_HHMMSS_xxxxxx`: the documented form, unique by its random tail."""
    return f"{prefix}_{datetime.now().strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"


def append_history(store, space: Space, history_type: str, entry: dict) -> None:
    """Add an entry to the space's `history/<type>.json` with compare-and-swap, keeping the newest
    HISTORY_LIMIT."""
    key = space.history_key(history_type)
    for _ in range(20):
        try:
            body, _, etag = store.read_json(key)
        except NotFound:
            try:
                store.create_json(key, {"revision": 1, "entries": [entry]}, {})
                return
            except AlreadyExists:
                continue
        entries = (body.get("entries") or [])[-(HISTORY_LIMIT - 1):] + [entry]
        try:
            store.replace_json(key, {"revision": int(body.get("revision", 0)) + 1, "entries": entries}, {}, etag)
            return
        except PreconditionFailed:
            time.sleep(0.05)
    log.warning("could not record %s history entry after 20 tries", history_type)


def read_history(store, space: Space, history_type: str) -> list:
    try:
        body, _, _ = store.read_json(space.history_key(history_type))
    except NotFound:
        return []
    return body.get("entries") or []


def now_text() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


# -- steps on a voice replica ------------------------------------------------------------------

def _unary(pipeline: Pipeline, run: Run, method: str, request, timeout: float = 300.0):
    try:
        return getattr(run.replica.model, method)(request, timeout=timeout)
    except grpc.RpcError as err:
        raise failure(err, f"voice replica {run.replica.target}", run.replica.serving) from err


def _language(value: str) -> int:
    return {"en": voice_pb2.LANGUAGE_ENGLISH, "cmn": voice_pb2.LANGUAGE_MANDARIN}.get(
        value or "", voice_pb2.LANGUAGE_UNSPECIFIED)


def _synthesize(pipeline: Pipeline, run: Run, text: str, params: dict, dest: str) -> voice_pb2.SynthesizeResponse:
    req = voice_pb2.SynthesizeRequest(text=text, language=_language(params.get("language", "")),
                                      pitch_semitones=float(params.get("pitch_semitones") or 0.0),
                                      output=ref(dest))
    if params.get("profile"):
        req.profile.CopyFrom(voice_pb2.VoiceProfile(**params["profile"]))
    return _unary(pipeline, run, "Synthesize", req)


def _render_person(pipeline: Pipeline, run: Run, audio_key: str, lo: float, hi: float):
    """Normalise the speech, re-dub the person model with it, add the sound: the finished MP4's key."""
    rec = run.record
    tid, p = rec.id, rec.params
    wav = task_key(tid, "work", "audio.wav")
    pipeline.media("NormalizeAudio", media_pb2.NormalizeAudioRequest(source=ref(audio_key), destination=ref(wav)), run)
    silent = task_key(tid, "work", "video.mp4")
    result = pipeline.render(run, "GeneratePersonVideo", voice_pb2.GeneratePersonVideoRequest(
        job_id=tid, model_prefix=p["model_prefix"], audio=ref(wav), output=ref(silent)),
        lo, hi, lambda f, m: pipeline.set(tid, f, m))
    pipeline.set(tid, hi, "Adding audio...")
    out = Space.of(rec.key_id).static_key(p["video_path"])
    pipeline.media("Mux", media_pb2.MuxRequest(video=ref(silent), audio=ref(audio_key), destination=ref(out)), run)
    return out, result


def _finish(pipeline: Pipeline, tid: str, message: str, outputs: dict, engine: str, result: dict) -> TaskRecord:
    return pipeline.set(tid, 1.0, message, status=TaskStatus.COMPLETED, outputs=outputs, engine=engine,
                        result=result)


# -- task kinds ---------------------------------------------------------------------------------


def run_train(pipeline: Pipeline, run: Run) -> None:
    """Build a person model from the stored training video."""
    rec = run.record
    tid, p = rec.id, rec.params
    pipeline.set(tid, 0.01, "Preparing the training video...", status=TaskStatus.PROCESSING)
    custom = p.get("engine_params") or {}
    result = pipeline.stream(run, "TrainPersonModel", voice_pb2.TrainPersonModelRequest(
        job_id=tid, video=ref(rec.inputs["video"]), model_prefix=p["model_prefix"],
        max_seconds=float(custom.get("max_seconds", 0)), base_seconds=float(custom.get("base_seconds", 0)),
        max_atlas_entries=int(custom.get("max_atlas_entries", 0)), epochs=int(p.get("epoch") or 0),
    ), 0.02, 0.97, lambda f, m: pipeline.set(tid, f, m), "Training...")
    # What the client asked for travels with the model (its files list shows it).
    training = {"task_id": tid, "model_type": p["model_type"], "ref_video": p["ref_video"],
                "epoch": p.get("epoch"), "gpu_choice": p.get("gpu_choice"), "custom_params": p.get("custom_params"),
                "engine": result.engine, "created_at": now_text()}
    pipeline.store.put_bytes(p["model_prefix"] + "training.json", json.dumps(training, ensure_ascii=False).encode(),
                             content_type="application/json")
    summary = {"model_path": p["model_path"], "frames_read": result.frames_read,
               "frames_with_face": result.frames_with_face, "atlas_entries": result.atlas_entries,
               "width": result.width, "height": result.height, "fps": result.fps,
               "has_voice_profile": result.has_voice_profile, "build_seconds": round(result.seconds, 3),
               "files": len(result.files) + 1}
    _finish(pipeline, tid, "模型训练完成", {"model": p["model_prefix"]}, result.engine, summary)
    append_history(pipeline.store, Space.of(rec.key_id), "model_training", {
        "task_id": tid, "time": now_text(), "model_type": p["model_type"], "model_path": p["model_path"],
        "ref_video": p["ref_video"], "epoch": p.get("epoch"), "engine": result.engine, "status": "completed"})


def run_generate(pipeline: Pipeline, run: Run) -> None:
    """Speech (given, or synthesised from text) -> person video under static/videos/res_videos/."""
    rec = run.record
    tid, p = rec.id, rec.params
    pipeline.set(tid, 0.01, "Preparing audio...", status=TaskStatus.PROCESSING)
    audio = rec.inputs.get("audio")
    tts = None
    if p.get("target_text"):
        audio = task_key(tid, "outputs", "speech.wav")
        pipeline.set(tid, 0.02, "Synthesising speech...")
        tts = _synthesize(pipeline, run, p["target_text"], p, audio)
    out, result = _render_person(pipeline, run, audio, 0.08, 0.92)
    summary = {"video_path": p["video_path"], "frames": result.frames, "fps": result.fps, "width": result.width,
               "height": result.height, "duration_seconds": result.duration_seconds}
    if tts is not None:
        summary["tts_engine"] = tts.engine
        summary["tts_voice"] = tts.settings.voice
        summary["tts_rate_wpm"] = tts.settings.rate_wpm
    _finish(pipeline, tid, "视频生成成功", {"video": out, **({"speech": audio} if tts else {})}, result.engine, summary)
    append_history(pipeline.store, Space.of(rec.key_id), "video_generation", {
        "task_id": tid, "time": now_text(), "model_path": p["model_path"], "video_path": p["video_path"],
        "ref_audio": p.get("ref_audio") or None, "target_text": p.get("target_text") or None,
        "speaker_id": p.get("speaker_id") or None, "engine": result.engine, "status": "completed"})


def ask_llm(settings, question: str) -> str:
    """One answer from the configured OpenAI-compatible chat endpoint."""
    url = settings.llm_base_url.rstrip("/") + "/chat/completions"
    headers = {}
    key = settings.llm_api_key.get_secret_value()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": settings.llm_model, "messages": [
        {"role": "system", "content": settings.llm_system_prompt},
        {"role": "user", "content": question}]}
    try:
        reply = httpx.post(url, json=body, headers=headers, timeout=settings.llm_timeout_seconds)
    except httpx.HTTPError as exc:
        raise Retryable(f"chat endpoint unreachable: {type(exc).__name__}") from exc
    if reply.status_code >= 500 or reply.status_code == 429:
        raise Retryable(f"chat endpoint answered HTTP {reply.status_code}")
    if reply.status_code >= 400:
        raise TaskFailed(f"对话模型拒绝了请求 (HTTP {reply.status_code}): {reply.text[:200]}", "llm_rejected")
    try:
        answer = reply.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TaskFailed("对话模型的回答格式无法识别 (expected an OpenAI chat completion)", "llm_bad_reply") from exc
    answer = (answer or "").strip()
    if not answer:
        raise TaskFailed("对话模型返回了空回答", "llm_empty")
    return answer


def run_chat(pipeline: Pipeline, run: Run) -> None:
    """Recognise the question, ask the chat model, speak the answer, render the person saying it."""
    rec = run.record
    tid, p = rec.id, rec.params
    state = dict(getattr(rec, "result", None) or {})
    pipeline.set(tid, 0.01, "Recognising the question...", status=TaskStatus.PROCESSING)
    if "question" not in state:
        heard = _unary(pipeline, run, "Recognize", voice_pb2.RecognizeRequest(audio=ref(rec.inputs["question"])))
        if not heard.text.strip():
            raise TaskFailed(f"没有识别到语音内容，请重新录音（英语识别器 {heard.engine}）", "no_speech")
        state["question"] = heard.text
        state["asr_engine"] = heard.engine
        pipeline.set(tid, 0.05, "Asking the chat model...", result=dict(state))
    if "answer" not in state:
        # A retried task does not ask again: the answer it got is in the record.
        state["answer"] = ask_llm(pipeline.settings, state["question"])
        state["llm_model"] = pipeline.settings.llm_model
        pipeline.set(tid, 0.1, "Speaking the answer...", result=dict(state))
    speech = task_key(tid, "outputs", "answer.wav")
    tts = _synthesize(pipeline, run, state["answer"], p, speech)
    state["tts_engine"] = tts.engine
    state["tts_voice"] = tts.settings.voice
    state["tts_rate_wpm"] = tts.settings.rate_wpm
    out, result = _render_person(pipeline, run, speech, 0.15, 0.92)
    state.update({"response": "/" + p["video_path"], "video_path": p["video_path"], "frames": result.frames,
                  "duration_seconds": result.duration_seconds})
    _finish(pipeline, tid, "对话生成成功", {"video": out, "speech": speech}, result.engine, state)
    append_history(pipeline.store, Space.of(rec.key_id), "chat_system", {
        "task_id": tid, "time": now_text(), "question": state["question"], "answer": state["answer"],
        "video_path": p["video_path"], "model_path": p["model_path"], "engine": result.engine,
        "status": "completed"})


register_kind("person_train", VOICE_KIND, run_train)
register_kind("person_generate", VOICE_KIND, run_generate)
register_kind("chat", VOICE_KIND, run_chat)
