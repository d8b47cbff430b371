"""The EchoMimic APIs (`echomimic-fastapi.md`, `echomimic-multi-audio-api.md`).

Errors keep the shape of a plain FastAPI server, `{"detail": ...}`, and status values are
lower case, as the EchoMimic wrapper answered.
"""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth, idempotency, lifecycle
from services.gateway.context import Gateway, GatewayDep
from services.gateway.errors import TASK_NOT_FOUND, fastapi_error
from services.gateway.intake import IntakeError, accept_upload
from services.gateway.keys import task_key
from services.gateway.kinds import echomimic, echomimic_multi
from services.gateway.kinds.echomimic import EchoMimicParams
from services.gateway.kinds.echomimic_multi import MultiParams, MultiTask
from services.gateway.limits import streams_uploads
from services.gateway.openapi import statuses
from services.gateway.responses import stream_result
from services.gateway.status import ECHOMIMIC_STATUS

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
_VIDEO = {200: {"content": {"video/mp4": {}}}, **_NOT_READY}
# The wrapper's `output/videos/...` file names: <id>_with_audio.mp4, <id>_segment_<n>_with_audio.mp4,
# <id>_combined.mp4 (it served its output folder at /output as well).
_OUTPUT_FILE = re.compile(r"^(?P<id>[0-9A-Za-z-]{1,64})_(?:(?P<single>with_audio)|segment_(?P<segment>\d{1,4})"
                          r"_with_audio|(?P<combined>combined))\.mp4$")


def _completed_output(gw: Gateway, task_id: str, output: str, kinds: tuple[str, ...], missing: str) -> str:
    """The key of a finished task's output, or the wrapper's error for why there is none."""
    try:
        rec, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise fastapi_error(404, TASK_NOT_FOUND) from None
    if rec.api != "echomimic" or rec.kind not in kinds or not auth.visible(rec):
        raise fastapi_error(404, TASK_NOT_FOUND)
    if rec.status != TaskStatus.COMPLETED:
        if output in rec.outputs:  # a clip of a multi-audio task that is still running
            return rec.outputs[output]
        # The wrapper's words; why a task failed is in its status (`error`).
        raise fastapi_error(400, f"任务状态: {ECHOMIMIC_STATUS[rec.status]}, 不可下载")
    if output not in rec.outputs:
        raise fastapi_error(404, missing)
    return rec.outputs[output]


@router.get("/download/{task_id}", responses=_VIDEO)
def download(task_id: str, gw: GatewayDep) -> StreamingResponse:
    """Download the generated video (saved as `echomimic_<task_id>.mp4`)."""
    key = _completed_output(gw, task_id, "video", ("echomimic",), "视频文件不存在")
    return stream_result(gw, key, f"echomimic_{task_id}.mp4")


@router.get("/download_segment/{task_id}/{segment_id}", responses=_VIDEO)
def download_segment(task_id: str, segment_id: int, gw: GatewayDep) -> StreamingResponse:
    """Download one clip of a multi-audio task (segment ids start at 0)."""
    key = _completed_output(gw, task_id, f"segment_{segment_id}", ("echomimic_multi",), f"片段 {segment_id} 不存在")
    return stream_result(gw, key, f"echomimic_{task_id}_segment_{segment_id}.mp4")


@router.get("/download_combined/{task_id}", responses=_VIDEO)
def download_combined(task_id: str, gw: GatewayDep) -> StreamingResponse:
    """Download the joined video of a multi-audio task created with combine_videos=true."""
    key = _completed_output(gw, task_id, "combined", ("echomimic_multi",), "没有合并的视频文件")
    return stream_result(gw, key, f"echomimic_{task_id}_combined.mp4")


@router.get("/output/videos/{filename}", responses=_VIDEO)
def output_file(filename: str, gw: GatewayDep) -> StreamingResponse:
    """A result at the path `GET /task/{id}` names in `output_file`, `output_files` or `combined_output_file`."""
    match = _OUTPUT_FILE.match(filename)
    if match is None:
        raise fastapi_error(404, "Not Found")
    task_id = match["id"]
    if match["single"]:
        key = _completed_output(gw, task_id, "video", ("echomimic",), "视频文件不存在")
    elif match["combined"]:
        key = _completed_output(gw, task_id, "combined", ("echomimic_multi",), "没有合并的视频文件")
    else:
        n = int(match["segment"])
        key = _completed_output(gw, task_id, f"segment_{n}", ("echomimic_multi",), f"片段 {n} 不存在")
    return stream_result(gw, key, filename)
