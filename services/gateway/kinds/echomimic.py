"""EchoMimic: a reference portrait and speech become one video (`echomimic-fastapi.md`)."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from services.gateway.keys import ref
from services.gateway.kinds.base import JobKind, NativeKind
from services.gateway.kinds.face import FaceFields
from services.gateway.pipeline import Pipeline, Run
from services.gateway.rpc import EchoMimicClient
from services.gateway.validation import Float, Int
from talkserve.echomimic.v1 import echomimic_pb2


class EchoMimicParams(BaseModel):
    """The form fields of POST /generate_video, with their documented defaults.

    The documents give no ranges; these are the ranges talkserve enforces.
    """

    width: Int = Field(512, ge=64, le=2048, multiple_of=8, description="video width (multiple of 8)")
    height: Int = Field(512, ge=64, le=2048, multiple_of=8, description="video height (multiple of 8)")
    length: Int = Field(1200, ge=1, le=36000, description="maximum number of frames")
    seed: Int = Field(420, ge=0, le=2**63 - 1, description="random seed")
    facemask_dilation_ratio: Float = Field(0.1, ge=0.0, le=1.0, description="face-mask dilation (recorded)")
    facecrop_dilation_ratio: Float = Field(0.5, ge=0.0, le=2.0, description="how far the frame reaches around the face")
    context_frames: Int = Field(12, ge=1, le=64, description="diffusion context frames (recorded)")
    context_overlap: Int = Field(3, ge=0, le=63, description="context overlap frames, below context_frames (recorded)")
    cfg: Float = Field(1.0, ge=0.0, le=20.0, description="guidance scale (recorded)")
    steps: Int = Field(6, ge=1, le=100, description="diffusion steps (recorded)")
    sample_rate: Int = Field(16000, ge=8000, le=48000, description="model audio rate (recorded; audio is resampled)")
    fps: Int = Field(24, ge=1, le=60, description="frames per second")
    device: str = Field("cuda", pattern=r"^(cuda(:\d+)?|cpu)$", description="cuda, cuda:N or cpu (recorded)")

    @model_validator(mode="after")
    def _overlap_below_context(self) -> EchoMimicParams:
        if self.context_overlap >= self.context_frames:
            raise ValueError("context_overlap must be smaller than context_frames")
        return self


class PortraitParams(EchoMimicParams, FaceFields):
    """EchoMimic's parameters and, on talkserve's own API only, which face to animate."""


def generate_request(p: EchoMimicParams, job_id: str, image: str, audio: str, output: str
                     ) -> echomimic_pb2.GenerateRequest:
    """The parameters as the echomimic service's request."""
    return echomimic_pb2.GenerateRequest(
        job_id=job_id, reference_image=ref(image), audio=ref(audio), output=ref(output),
        width=p.width, height=p.height, length=p.length, seed=p.seed,
        facemask_dilation_ratio=p.facemask_dilation_ratio, facecrop_dilation_ratio=p.facecrop_dilation_ratio,
        context_frames=p.context_frames, context_overlap=p.context_overlap, cfg=p.cfg, steps=p.steps,
        sample_rate=p.sample_rate, fps=p.fps, device=p.device,
        face=p.face_choice() if isinstance(p, FaceFields) else None,
    )


def run(pipeline: Pipeline, run: Run, p: PortraitParams) -> None:
    """Normalise the speech, render on an echomimic replica, add the sound."""
    rec = run.record
    pipeline.portrait(run, run.client(EchoMimicClient).generate,
                      lambda wav, out: generate_request(p, rec.id, rec.inputs["image"], wav, out))


KIND = JobKind(
    name="echomimic", service="echomimic", params=PortraitParams, run=run,
    native=NativeKind("portrait", "A portrait and speech become a talking video (EchoMimic parameters).",
                      ("image", "audio"), PortraitParams),
)
