"""LatentSync: an existing video gets new speech, lip-synced (`latentsync-api.md`).

Inputs may be URLs, which the media service downloads (with its address rules and size
limits) when the task runs; a retry reuses what was downloaded.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

from libs.tasks import TaskStatus
from services.gateway.keys import ref, task_key
from services.gateway.kinds.base import JobKind, NativeKind
from services.gateway.pipeline import NORMALISE, Pipeline, Run
from services.gateway.rpc import LatentSyncClient
from services.gateway.settings import GatewaySettings
from services.gateway.validation import Float, HttpUrl, Int
from talkserve.latentsync.v1 import latentsync_pb2
from talkserve.media.v1 import media_pb2


class SyncRequest(BaseModel):
    """Body of POST /sync."""

    video_url: HttpUrl = Field(max_length=4096, description="http(s) URL of the video to lip-sync")
    audio_url: HttpUrl = Field(max_length=4096, description="http(s) URL of the new speech")
    inference_ckpt_path: Optional[str] = Field(None, max_length=512,
                                               description="name of a checkpoint the server is configured with")
    inference_steps: Int = Field(20, ge=1, le=100, description="diffusion steps (recorded)")
    guidance_scale: Float = Field(1.0, ge=0.0, le=20.0, description="guidance scale (recorded)")
    seed: Optional[Int] = Field(None, ge=0, le=2**31 - 1, description="random seed; default: random")

    model_config = {"json_schema_extra": {"examples": [{
        "video_url": "https://example.com/video.mp4", "audio_url": "https://example.com/audio.wav"}]}}


class RedubParams(SyncRequest):
    """LatentSync's /sync fields; the URLs are optional here because files may be uploaded instead."""

    # Optional where /sync requires them: mypy sees a narrower type overridden, pydantic a new field.
    video_url: Optional[HttpUrl] = Field(None, max_length=4096,  # type: ignore[assignment]
                                         description="http(s) URL of the video to re-dub")
    audio_url: Optional[HttpUrl] = Field(None, max_length=4096,  # type: ignore[assignment]
                                         description="http(s) URL of the new speech")


def check_checkpoint(p: RedubParams, settings: GatewaySettings) -> None:
    """A checkpoint is named among those the server offers, never a path of the client's choosing."""
    ckpt = p.inference_ckpt_path
    if ckpt and ckpt not in settings.latentsync_checkpoints:
        raise ValueError(f"unknown inference_ckpt_path {ckpt!r}; this server offers {settings.latentsync_checkpoints}")


def sync_request(p: RedubParams, job_id: str, video: str, audio: str, output: str, mask: str
                 ) -> latentsync_pb2.SyncRequest:
    """The parameters as the latentsync service's request."""
    return latentsync_pb2.SyncRequest(
        job_id=job_id, video=ref(video), audio=ref(audio), output=ref(output), mask_output=ref(mask),
        inference_ckpt_path=p.inference_ckpt_path or "", inference_steps=p.inference_steps,
        guidance_scale=p.guidance_scale, seed=p.seed or 0,
    )


def fetch_inputs(pipeline: Pipeline, run: Run, p: RedubParams) -> dict[str, str]:
    """Download the task's URL inputs into the store (once; a retry reuses them)."""
    rec = run.record
    inputs = dict(rec.inputs)
    urls = {"video": (p.video_url, media_pb2.MEDIA_KIND_VIDEO), "audio": (p.audio_url, media_pb2.MEDIA_KIND_AUDIO)}
    for name, (url, kind) in urls.items():
        if name in inputs:
            continue
        key = task_key(rec.id, "inputs", name)
        pipeline.set(rec.id, 0.01, f"Downloading {name}...", status=TaskStatus.PROCESSING)
        pipeline.media(run, pipeline.clients.media.fetch_url, media_pb2.FetchUrlRequest(
            url=url or "", destination=ref(key), expect=kind))
        inputs[name] = key
        pipeline.set(rec.id, None, None, inputs=dict(inputs))
    return inputs


def run(pipeline: Pipeline, run: Run, p: RedubParams) -> None:
    """Fetch the inputs, normalise the speech, re-dub on a latentsync replica, add the sound."""
    rec = run.record
    tid = rec.id
    rec.inputs = fetch_inputs(pipeline, run, p)
    pipeline.set(tid, 0.02, "Preparing audio...", status=TaskStatus.PROCESSING)
    wav = task_key(tid, "work", "audio.wav")
    pipeline.normalise(run, rec.inputs["audio"], wav)
    silent, mask = task_key(tid, "work", "video.mp4"), task_key(tid, "outputs", "mask.mp4")
    pipeline.set(tid, NORMALISE, "Lip-syncing video...")
    out = task_key(tid, "outputs", "result.mp4")
    result = pipeline.render_and_mux(
        run, run.client(LatentSyncClient).sync, sync_request(p, tid, rec.inputs["video"], wav, silent, mask),
        rec.inputs["audio"], "", silent, out, pipeline.reporter(tid))
    pipeline.complete(tid, {"video": out, "mask": mask}, result)


KIND = JobKind(
    name="latentsync", service="latentsync", params=RedubParams, run=run, check=check_checkpoint,
    native=NativeKind("redub", "A video gets new speech, lip-synced (LatentSync parameters).",
                      ("video", "audio"), RedubParams, fetch_when_run=True),
)
