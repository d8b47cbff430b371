"""What the EchOfU kinds share: the person model a task uses, the voice it speaks in, and the
steps on a voice replica (speech synthesis, re-dubbing the person's video).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, TypeVar

import grpc
from pydantic import BaseModel

from libs.tasks import TaskRecord, TaskStatus
from services.gateway.echofu_store import Space
from services.gateway.faults import failure
from services.gateway.keys import ref, task_key
from services.gateway.pipeline import Pipeline, Run
from services.gateway.rpc import VoiceClient
from talkserve.common.v1 import common_pb2
from talkserve.media.v1 import media_pb2
from talkserve.voice.v1 import voice_pb2

VOICE_SERVICE = "voice"
# How long a unary call on a voice replica (speech, recognition) may take.
VOICE_CALL_SECONDS = 300.0

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class PersonModel(BaseModel):
    """The person model a task trains or uses."""

    model_type: str
    model_id: str
    model_prefix: str  # its key prefix in the owner's space
    model_path: str  # its documented path, models/<type>/<id>


class Voice(BaseModel):
    """The voice a text is spoken in: a speaker's profile, the person model's own, or espeak-ng's."""

    pitch_semitones: Optional[float] = None
    profile: Optional[dict[str, Any]] = None  # a VoiceProfile's fields
    voice_source: Optional[str] = None  # speaker:<id>, ref_audio:<path>, person_model or default


def voice_call(run: Run, rpc: Callable[[Req, float], Resp], request: Req) -> Resp:
    """A unary call on the task's voice replica; its failure is classified (faults.failure)."""
    try:
        return rpc(request, VOICE_CALL_SECONDS)
    except grpc.RpcError as err:
        raise failure(err, f"voice replica {run.replica.target}", run.replica.serving) from err


def synthesize(run: Run, text: str, voice: Voice, dest: str) -> voice_pb2.SynthesizeResponse:
    """Speak `text` in the task's voice into `dest`."""
    req = voice_pb2.SynthesizeRequest(text=text, language=voice_pb2.LANGUAGE_UNSPECIFIED,
                                      pitch_semitones=float(voice.pitch_semitones or 0.0), output=ref(dest))
    if voice.profile:
        req.profile.CopyFrom(voice_pb2.VoiceProfile(**voice.profile))
    return voice_call(run, run.client(VoiceClient).synthesize, req)


def render_person(pipeline: Pipeline, run: Run, model: PersonModel, video_path: str, audio_key: str,
                  lo: float, hi: float) -> tuple[str, common_pb2.VideoResult]:
    """Normalise the speech, re-dub the person model with it, add the sound: the finished MP4's key."""
    tid = run.record.id
    wav = task_key(tid, "work", "audio.wav")
    pipeline.normalise(run, audio_key, wav)
    silent = task_key(tid, "work", "video.mp4")
    result = pipeline.render(run, run.client(VoiceClient).generate_person_video, voice_pb2.GeneratePersonVideoRequest(
        job_id=tid, model_prefix=model.model_prefix, audio=ref(wav), output=ref(silent)),
        lo, hi, pipeline.reporter(tid))
    pipeline.set(tid, hi, "Adding audio...")
    out = Space.of(run.record.key_id).static_key(video_path)
    pipeline.media(run, pipeline.clients.media.mux,
                   media_pb2.MuxRequest(video=ref(silent), audio=ref(audio_key), destination=ref(out)))
    return out, result


def finish(pipeline: Pipeline, tid: str, message: str, outputs: dict, engine: str, result: dict) -> TaskRecord:
    return pipeline.set(tid, 1.0, message, status=TaskStatus.COMPLETED, outputs=outputs, engine=engine,
                        result=result)
