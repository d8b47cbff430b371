"""EchOfU's person-model training (`/model_training`): a person model from a training video."""

from __future__ import annotations

import json
from typing import Optional

from libs.tasks import TaskStatus
from services.gateway.echofu_store import Space, append_history, now_text
from services.gateway.keys import ref
from services.gateway.kinds.base import JobKind
from services.gateway.kinds.person import VOICE_SERVICE, PersonModel, finish
from services.gateway.pipeline import Pipeline, Run
from services.gateway.rpc import VoiceClient
from talkserve.voice.v1 import voice_pb2


class TrainParams(PersonModel):
    """What a training task was asked for; `engine_params` is the part of `custom_params` the
    built-in engine uses."""

    ref_video: str
    epoch: Optional[int] = None
    gpu_choice: str = ""
    custom_params: dict[str, str] = {}
    engine_params: dict[str, int | float] = {}


def run(pipeline: Pipeline, run: Run, p: TrainParams) -> None:
    """Build a person model from the stored training video."""
    rec = run.record
    tid = rec.id
    pipeline.set(tid, 0.01, "Preparing the training video...", status=TaskStatus.PROCESSING)
    custom = p.engine_params
    result = pipeline.stream(run, run.client(VoiceClient).train_person_model, voice_pb2.TrainPersonModelRequest(
        job_id=tid, video=ref(rec.inputs["video"]), model_prefix=p.model_prefix,
        max_seconds=float(custom.get("max_seconds", 0)), base_seconds=float(custom.get("base_seconds", 0)),
        max_atlas_entries=int(custom.get("max_atlas_entries", 0)), epochs=int(p.epoch or 0),
    ), 0.02, 0.97, pipeline.reporter(tid), "Training...")
    # What the client asked for travels with the model (its files list shows it).
    training = {"task_id": tid, "model_type": p.model_type, "ref_video": p.ref_video,
                "epoch": p.epoch, "gpu_choice": p.gpu_choice, "custom_params": p.custom_params,
                "engine": result.engine, "created_at": now_text()}
    pipeline.store.put_bytes(p.model_prefix + "training.json", json.dumps(training, ensure_ascii=False).encode(),
                             content_type="application/json")
    summary = {"model_path": p.model_path, "frames_read": result.frames_read,
               "frames_with_face": result.frames_with_face, "atlas_entries": result.atlas_entries,
               "width": result.width, "height": result.height, "fps": result.fps,
               "has_voice_profile": result.has_voice_profile, "build_seconds": round(result.seconds, 3),
               "files": len(result.files) + 1}
    finish(pipeline, tid, "模型训练完成", {"model": p.model_prefix}, result.engine, summary)
    append_history(pipeline.store, Space.of(rec.key_id), "model_training", {
        "task_id": tid, "time": now_text(), "model_type": p.model_type, "model_path": p.model_path,
        "ref_video": p.ref_video, "epoch": p.epoch, "engine": result.engine, "status": "completed"})


KIND = JobKind(name="person_train", service=VOICE_SERVICE, params=TrainParams, run=run, sparse=True)
