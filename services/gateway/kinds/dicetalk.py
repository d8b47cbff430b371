"""DICE-Talk: a portrait and speech become a video with one of eight emotions (`dicetalk-api.md`).

The example of a kind (docs/architecture.md): its parameters, their proto request, its runner.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from libs.talkface.api import EMOTIONS
from services.gateway.keys import ref
from services.gateway.kinds.base import JobKind, NativeKind
from services.gateway.kinds.face import FaceFields
from services.gateway.pipeline import Pipeline, Run
from services.gateway.rpc import DiceTalkClient
from services.gateway.validation import Float, Int
from talkserve.dicetalk.v1 import dicetalk_pb2

Emotion = Literal["contempt", "sad", "happy", "surprised", "angry", "disgusted", "fear", "neutral"]
assert set(Emotion.__args__) == set(EMOTIONS)  # type: ignore[attr-defined]


class SynthesisParams(BaseModel):
    """The form fields of POST /api/v1/synthesis/start, with the documented ranges and defaults."""

    emotion: Emotion = Field(description="one of the eight emotions")
    ref_scale: Float = Field(3.0, ge=0.0, le=10.0, description="reference scale (recorded, unused by talkface-1)")
    emo_scale: Float = Field(6.0, ge=0.0, le=10.0, description="emotion intensity")
    crop: bool = Field(False, description="crop the portrait to the face region")
    inference_steps: Int = Field(20, ge=8, le=50, description="diffusion steps (recorded, unused by talkface-1)")
    duration: Optional[Float] = Field(None, ge=0.1, le=300.0, description="video length in seconds; default: the audio's")
    fps: Int = Field(24, ge=8, le=60, description="frames per second")
    seed: Optional[Int] = Field(None, ge=0, le=2147483647, description="random seed; default: random")
    dynamic_scale: Float = Field(1.0, ge=0.1, le=3.0, description="head-motion scale")
    min_resolution: Int = Field(256, ge=128, le=2048, description="shorter side of the output in pixels")
    expand_ratio: Float = Field(0.5, ge=0.1, le=2.0, description="face-crop expansion")


class EmotionParams(SynthesisParams, FaceFields):
    """DICE-Talk's parameters and, on talkserve's own API only, which face to animate."""


def synthesize_request(p: SynthesisParams, job_id: str, image: str, audio: str, output: str
                       ) -> dicetalk_pb2.SynthesizeRequest:
    """The parameters as the dicetalk service's request (a task's seed is drawn when it is created)."""
    return dicetalk_pb2.SynthesizeRequest(
        job_id=job_id, image=ref(image), audio=ref(audio), output=ref(output),
        emotion="EMOTION_" + p.emotion.upper(),
        ref_scale=p.ref_scale, emo_scale=p.emo_scale, crop=p.crop, inference_steps=p.inference_steps,
        duration=p.duration, fps=p.fps, seed=p.seed or 0, dynamic_scale=p.dynamic_scale,
        min_resolution=p.min_resolution, expand_ratio=p.expand_ratio,
        face=p.face_choice() if isinstance(p, FaceFields) else None,
    )


def run(pipeline: Pipeline, run: Run, p: EmotionParams) -> None:
    """Normalise the speech, render on a dicetalk replica, add the sound."""
    rec = run.record
    pipeline.portrait(run, run.client(DiceTalkClient).synthesize,
                      lambda wav, out: synthesize_request(p, rec.id, rec.inputs["image"], wav, out))


KIND = JobKind(
    name="dicetalk", service="dicetalk", params=EmotionParams, run=run,
    native=NativeKind("emotion", "A portrait speaks with one of eight emotions (DICE-Talk parameters).",
                      ("image", "audio"), EmotionParams),
)
