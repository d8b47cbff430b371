"""The EchoMimic APIs (`echomimic-fastapi.md`, `echomimic-multi-audio-api.md`).

Errors keep the shape of a plain FastAPI server, `{"detail": ...}`, and status values are
lower case, as the EchoMimic wrapper answered.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth, idempotency
from services.gateway.context import GatewayDep
from services.gateway.dispatcher import QueueFull
from services.gateway.errors import fastapi_error
from services.gateway.intake import IntakeError, accept_upload
from services.gateway.limits import streams_uploads
from services.gateway.openapi import statuses
from services.gateway.responses import stream_result
from services.gateway.validation import Float, Int

router = APIRouter(tags=["EchoMimic"])

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
MAX_AUDIO_FILES = 32


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
    def _overlap_below_context(self):
        if self.context_overlap >= self.context_frames:
            raise ValueError("context_overlap must be smaller than context_frames")
        return self


class MultiParams(EchoMimicParams):
    """The form fields of POST /generate_multi_videos."""

    combine_videos: bool = Field(False, description="also join the clips into one video")


class CreateResponse(BaseModel):
    task_id: str
    status: Literal["pending"]


def _form_schema(files: dict, model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": list(files), "properties": {**files, **model.model_json_schema()["properties"]},
    }}}}}


_BINARY = {"type": "string", "format": "binary"}
_SINGLE = _form_schema({"reference_image": _BINARY | {"description": "the portrait"},
                        "audio_file": _BINARY | {"description": "the speech"}}, EchoMimicParams)
_MULTI = _form_schema({"reference_image": _BINARY | {"description": "the portrait"},
                       "audio_files": {"type": "array", "items": _BINARY, "description": "one clip per file"}},
                      MultiParams)

STATUS = {TaskStatus.PENDING: "pending", TaskStatus.PROCESSING: "processing", TaskStatus.COMPLETED: "completed",
          TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "failed"}


async def _create(request: Request, gw, kind: str, audio_field: str, model: type[BaseModel], max_files: int):
    try:
        accepted = await accept_upload(request, gw, "reference_image", audio_field, model, IMAGE_FORMATS,
                                       max_audio_files=max_files, range_status=422)
    except IntakeError as exc:
        raise fastapi_error(exc.status, exc.detail if exc.status == 422 and exc.detail else exc.message,
                            headers=exc.headers)
    params = accepted.params.model_dump()
    if kind == "echomimic_multi":
        params["segments"] = sum(1 for name in accepted.inputs if name.startswith("audio_"))

    async def create() -> dict:
        record = TaskRecord(id=accepted.task_id, kind=kind, api="echomimic", status=TaskStatus.PENDING,
                            message="Task created", params=params, inputs=accepted.inputs,
                            key_id=auth.current_key_id())
        await run_in_threadpool(gw.tasks.create, record)
        try:
            gw.dispatcher.submit(record)
        except QueueFull as exc:
            await run_in_threadpool(gw.tasks.delete, record.id)
            raise fastapi_error(503, str(exc), headers={"Retry-After": "30"})
        return {"task_id": record.id, "status": "pending"}

    async def discard() -> None:
        await run_in_threadpool(gw.store.delete_prefix, f"tasks/{accepted.task_id}/")

    digest = idempotency.body_hash(kind, params, accepted.sha256)
    return CreateResponse(**await idempotency.once(
        request, gw, auth.scoped("echomimic"), digest, accepted.task_id, create,
        lambda status, message, headers=None: fastapi_error(status, message, headers=headers), discard))


@router.post("/generate_video", response_model=CreateResponse, openapi_extra=_SINGLE,
             responses=statuses(400, 409, 413, 503))
@streams_uploads
async def generate_video(request: Request, gw: GatewayDep) -> CreateResponse:
    """Upload a reference image and an audio file and start generating one video."""
    return await _create(request, gw, "echomimic", "audio_file", EchoMimicParams, 1)


@router.post("/generate_multi_videos", response_model=CreateResponse, openapi_extra=_MULTI,
             responses=statuses(400, 409, 413, 503))
@streams_uploads
async def generate_multi_videos(request: Request, gw: GatewayDep) -> CreateResponse:
    """Upload a reference image and several audio files: one clip each, optionally joined."""
    return await _create(request, gw, "echomimic_multi", "audio_files", MultiParams, MAX_AUDIO_FILES)


def video_path(task_id: str, name: str) -> str:
    """The `output/videos/...` path the EchoMimic wrapper reported for a result."""
    return f"output/videos/{task_id}_{name}.mp4"


def echomimic_status(rec: TaskRecord) -> dict:
    """GET /task/{id} in the EchoMimic shape (single or multi-audio)."""
    body = {"task_id": rec.id, "status": STATUS[rec.status]}
    done = rec.status == TaskStatus.COMPLETED
    if rec.kind == "echomimic_multi":
        n = rec.params["segments"]
        body["output_files"] = [video_path(rec.id, f"segment_{i}") for i in range(n)
                                if f"segment_{i}" in rec.outputs]
        body["combined_output_file"] = video_path(rec.id, "combined") if "combined" in rec.outputs else None
    else:
        body["output_file"] = video_path(rec.id, "with_audio") if done else None
    body["error"] = rec.error if rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) else None
    body["progress"] = round(rec.progress, 4)
    body["engine"] = rec.engine
    return body


_NOT_READY = statuses(404, s400="the video is not ready yet, or the task failed")


def _completed_output(gw, task_id: str, output: str, kinds: tuple[str, ...]) -> str:
    try:
        rec, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise fastapi_error(404, "Task not found")
    if rec.api != "echomimic" or rec.kind not in kinds or not auth.visible(rec):
        raise fastapi_error(404, "Task not found")
    if output in rec.outputs:
        return rec.outputs[output]
    if rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise fastapi_error(400, f"Task failed: {rec.error}")
    if rec.status == TaskStatus.COMPLETED:
        raise fastapi_error(404, "This task has no such video")
    raise fastapi_error(400, "Video not ready yet")


@router.get("/download/{task_id}", responses={200: {"content": {"video/mp4": {}}}, **_NOT_READY})
def download(task_id: str, gw: GatewayDep):
    """Download the generated video."""
    key = _completed_output(gw, task_id, "video", ("echomimic",))
    return stream_result(gw, key, f"{task_id}_with_audio.mp4")


@router.get("/download_segment/{task_id}/{segment_id}", responses={200: {"content": {"video/mp4": {}}}, **_NOT_READY})
def download_segment(task_id: str, segment_id: int, gw: GatewayDep):
    """Download one clip of a multi-audio task (segment ids start at 0)."""
    key = _completed_output(gw, task_id, f"segment_{segment_id}", ("echomimic_multi",))
    return stream_result(gw, key, f"{task_id}_segment_{segment_id}.mp4")


@router.get("/download_combined/{task_id}", responses={200: {"content": {"video/mp4": {}}}, **_NOT_READY})
def download_combined(task_id: str, gw: GatewayDep):
    """Download the joined video of a multi-audio task created with combine_videos=true."""
    key = _completed_output(gw, task_id, "combined", ("echomimic_multi",))
    return stream_result(gw, key, f"{task_id}_combined.mp4")
