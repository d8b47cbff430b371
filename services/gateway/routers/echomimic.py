"""The EchoMimic APIs (`echomimic-fastapi.md`, `echomimic-multi-audio-api.md`).

Errors keep the shape of a plain FastAPI server, `{"detail": ...}`, and status values are
lower case, as the EchoMimic wrapper answered.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth, idempotency, lifecycle
from services.gateway.context import Gateway, GatewayDep
from services.gateway.errors import fastapi_error
from services.gateway.intake import IntakeError, accept_upload
from services.gateway.keys import task_key
from services.gateway.kinds import echomimic, echomimic_multi
from services.gateway.kinds.echomimic import EchoMimicParams
from services.gateway.kinds.echomimic_multi import MultiParams, MultiTask
from services.gateway.limits import streams_uploads
from services.gateway.openapi import statuses
from services.gateway.responses import stream_result

router = APIRouter(tags=["EchoMimic"])

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
MAX_AUDIO_FILES = 32


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

async def _create(request: Request, gw: Gateway, multi: bool) -> CreateResponse:
    kind = echomimic_multi.KIND if multi else echomimic.KIND
    model = MultiParams if multi else EchoMimicParams
    try:
        accepted = await accept_upload(request, gw, "reference_image", "audio_files" if multi else "audio_file",
                                       model, IMAGE_FORMATS, max_audio_files=MAX_AUDIO_FILES if multi else 1,
                                       range_status=422)
    except IntakeError as exc:
        raise fastapi_error(exc.status, exc.detail if exc.status == 422 and exc.detail else exc.message,
                            headers=exc.headers) from exc
    if multi:
        segments = sum(1 for name in accepted.inputs if name.startswith("audio_"))
        params = echomimic_multi.KIND.dump(MultiTask(**accepted.params.model_dump(), segments=segments))
    else:
        # the documented form has no face fields: the kind's own model gives them their defaults
        params = echomimic.KIND.dump(echomimic.PortraitParams.model_validate(accepted.params.model_dump()))

    async def create() -> dict:
        record = TaskRecord(id=accepted.task_id, kind=kind.name, api="echomimic", status=TaskStatus.PENDING,
                            message="Task created", params=params, inputs=accepted.inputs,
                            key_id=auth.current_key_id())
        try:
            await lifecycle.start(gw, record)
        except lifecycle.QueueFull as exc:
            raise fastapi_error(503, str(exc), headers={"Retry-After": lifecycle.QUEUE_RETRY_AFTER}) from exc
        return {"task_id": record.id, "status": "pending"}

    async def discard() -> None:
        await run_in_threadpool(gw.store.delete_prefix, task_key(accepted.task_id))

    digest = idempotency.body_hash(kind.name, params, accepted.sha256)
    return CreateResponse(**await idempotency.once(
        request, gw, auth.scoped("echomimic"), digest, accepted.task_id, create,
        lambda status, message, headers=None: fastapi_error(status, message, headers=headers), discard))


@router.post("/generate_video", response_model=CreateResponse, openapi_extra=_SINGLE,
             responses=statuses(400, 409, 413, 503, s422="the portrait has no face talkface-1 can animate (no face, turned over 45°, mouth not on the lips); the message says which"))
@streams_uploads
async def generate_video(request: Request, gw: GatewayDep) -> CreateResponse:
    """Upload a reference image and an audio file and start generating one video."""
    return await _create(request, gw, multi=False)


@router.post("/generate_multi_videos", response_model=CreateResponse, openapi_extra=_MULTI,
             responses=statuses(400, 409, 413, 503, s422="the portrait has no face talkface-1 can animate (no face, turned over 45°, mouth not on the lips); the message says which"))
@streams_uploads
async def generate_multi_videos(request: Request, gw: GatewayDep) -> CreateResponse:
    """Upload a reference image and several audio files: one clip each, optionally joined."""
    return await _create(request, gw, multi=True)


_NOT_READY = statuses(404, s400="the video is not ready yet, or the task failed")


def _completed_output(gw: Gateway, task_id: str, output: str, kinds: tuple[str, ...]) -> str:
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
def download(task_id: str, gw: GatewayDep) -> StreamingResponse:
    """Download the generated video."""
    key = _completed_output(gw, task_id, "video", ("echomimic",))
    return stream_result(gw, key, f"{task_id}_with_audio.mp4")


@router.get("/download_segment/{task_id}/{segment_id}", responses={200: {"content": {"video/mp4": {}}}, **_NOT_READY})
def download_segment(task_id: str, segment_id: int, gw: GatewayDep) -> StreamingResponse:
    """Download one clip of a multi-audio task (segment ids start at 0)."""
    key = _completed_output(gw, task_id, f"segment_{segment_id}", ("echomimic_multi",))
    return stream_result(gw, key, f"{task_id}_segment_{segment_id}.mp4")


@router.get("/download_combined/{task_id}", responses={200: {"content": {"video/mp4": {}}}, **_NOT_READY})
def download_combined(task_id: str, gw: GatewayDep) -> StreamingResponse:
    """Download the joined video of a multi-audio task created with combine_videos=true."""
    key = _completed_output(gw, task_id, "combined", ("echomimic_multi",))
    return stream_result(gw, key, f"{task_id}_combined.mp4")
