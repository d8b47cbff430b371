"""EchOfU's video generation (`/video_generation`): a person model says a recording or a text."""

from __future__ import annotations

from typing import Optional

from libs.tasks import TaskStatus
from services.gateway.echofu_store import Space, append_history, now_text
from services.gateway.keys import task_key
from services.gateway.kinds.base import JobKind
from services.gateway.kinds.person import (
    VOICE_SERVICE,
    PersonModel,
    Voice,
    finish,
    render_person,
    synthesize,
)
from services.gateway.pipeline import Pipeline, Run


class GenerateParams(PersonModel, Voice):
    """What a generation task was asked for: the speech as a stored recording or as a text."""

    video_path: str  # documented path of the result, static/videos/res_videos/...
    gpu_choice: str = ""
    speaker_id: str = ""
    model_name: str = ""
    target_text: Optional[str] = None
    ref_audio: Optional[str] = None


def run(pipeline: Pipeline, run: Run, p: GenerateParams) -> None:
    """Speech (given, or synthesised from text) -> person video under static/videos/res_videos/."""
    rec = run.record
    tid = rec.id
    pipeline.set(tid, 0.01, "Preparing audio...", status=TaskStatus.PROCESSING)
    audio = rec.inputs.get("audio", "")
    tts = None
    if p.target_text:
        audio = task_key(tid, "outputs", "speech.wav")
        pipeline.set(tid, 0.02, "Synthesising speech...")
        tts = synthesize(run, p.target_text, p, audio)
    out, result = render_person(pipeline, run, p, p.video_path, audio, 0.08, 0.92)
    summary = {"video_path": p.video_path, "frames": result.frames, "fps": result.fps, "width": result.width,
               "height": result.height, "duration_seconds": result.duration_seconds}
    if tts is not None:
        summary["tts_engine"] = tts.engine
        summary["tts_voice"] = tts.settings.voice
        summary["tts_rate_wpm"] = tts.settings.rate_wpm
    finish(pipeline, tid, "视频生成成功", {"video": out, **({"speech": audio} if tts else {})}, result.engine, summary)
    append_history(pipeline.store, Space.of(rec.key_id), "video_generation", {
        "task_id": tid, "time": now_text(), "model_path": p.model_path, "video_path": p.video_path,
        "ref_audio": p.ref_audio or None, "target_text": p.target_text or None,
        "speaker_id": p.speaker_id or None, "engine": result.engine, "status": "completed"})


KIND = JobKind(name="person_generate", service=VOICE_SERVICE, params=GenerateParams, run=run, sparse=True)
