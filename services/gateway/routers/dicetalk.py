"""The DICE-Talk API (`../shared/spec/dicetalk-api.md`): health, start, status, download."""

from __future__ import annotations

import secrets
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth, idempotency, lifecycle
from services.gateway.cache import result_cache_key, serve_from_cache
from services.gateway.context import Gateway, GatewayDep
from services.gateway.errors import ApiError, dicetalk_error
from services.gateway.intake import IntakeError, accept_upload
from services.gateway.keys import task_key
from services.gateway.kinds import dicetalk
from services.gateway.kinds.dicetalk import SynthesisParams
from services.gateway.limits import streams_uploads
from services.gateway.openapi import statuses
from services.gateway.responses import stream_result

router = APIRouter(tags=["DICE-Talk"])


class StartResponse(BaseModel):
    task_id: str
    status: str
    message: str


class StatusResponse(BaseModel):
    task_id: str
    status: str
    progress: float
    message: str
    created_at: str
    updated_at: str


class HealthResponse(BaseModel):
    status: str
    gpu_available: bool
    model_loaded: bool
    version: str


_FORM_SCHEMA = {
    "type": "object",
    "required": ["image", "audio", "emotion"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "portrait (JPG, JPEG, PNG; at most 10 MB)"},
        "audio": {"type": "string", "format": "binary", "description": "speech (WAV, MP3; at most 50 MB)"},
        **SynthesisParams.model_json_schema()["properties"],
    },
}

# DICE-Talk status values are upper case, exactly the task states talkserve keeps.
_STATUS = {TaskStatus.PENDING: "PENDING", TaskStatus.PROCESSING: "PROCESSING",
           TaskStatus.COMPLETED: "COMPLETED", TaskStatus.FAILED: "FAILED", TaskStatus.CANCELLED: "FAILED"}


def _timestamp(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(timespec="seconds")


@router.get("/api/health", response_model=HealthResponse)
def health(gw: GatewayDep) -> HealthResponse:
    """Service state (healthy: the store, the media service and a DICE-Talk replica answer) and
    whether the DICE-Talk model is loaded on a replica."""
    states = [(r.serving(), r.capacity()) for r in gw.clients.replicas["dicetalk"]]
    loaded = any(up and cap is not None and not cap.draining for up, cap in states)
    healthy = loaded and gw.clients.media.serving() and gw.store.ping()
    return HealthResponse(
        status="healthy" if healthy else "unhealthy",
        gpu_available=any(cap is not None and cap.gpu for _, cap in states),
        model_loaded=loaded,
        version=gw.settings.version,
    )


def _load(gw: Gateway, task_id: str) -> TaskRecord:
    try:
        record, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise dicetalk_error(404, "Task not found")
    if record.api != "dicetalk" or not auth.visible(record):
        raise dicetalk_error(404, "Task not found")
    return record


@router.post(
    "/api/v1/synthesis/start",
    response_model=StartResponse, responses=statuses(400, 409, 413, 503, s422="the portrait has no face talkface-1 can animate (no face, turned over 45°, mouth not on the lips); the message says which"),
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}}}},
)
@streams_uploads
async def start(request: Request, gw: GatewayDep) -> StartResponse:
    """Upload a portrait and speech and start a synthesis task."""
    try:
        accepted = await accept_upload(request, gw, "image", "audio", SynthesisParams, ("JPEG", "PNG"))
    except IntakeError as exc:
        raise _intake_error(exc) from exc
    task_id = accepted.task_id
    params = SynthesisParams.model_validate(accepted.params)
    # The cache key is of the request as sent: a request without a seed shares its result.
    cache_key = result_cache_key("dicetalk", params.model_dump(), accepted.sha256)

    async def create() -> dict:
        if params.seed is None:
            params.seed = secrets.randbelow(2**31)
        # the documented form has no face fields: the kind's own model gives them their defaults
        values = dicetalk.KIND.dump(dicetalk.EmotionParams.model_validate(params.model_dump()))
        cached = await run_in_threadpool(serve_from_cache, gw, cache_key, task_id, "dicetalk", values,
                                         accepted.inputs, auth.current_key_id())
        if cached is not None:
            return {"task_id": task_id, "status": "COMPLETED", "message": cached.message}
        record = TaskRecord(id=task_id, kind=dicetalk.KIND.name, api="dicetalk", status=TaskStatus.PENDING,
                            message="Task created successfully", params=values, cache_key=cache_key,
                            inputs=accepted.inputs, key_id=auth.current_key_id())
        try:
            await lifecycle.start(gw, record)
        except lifecycle.QueueFull as exc:
            raise dicetalk_error(503, "Task queue is full", str(exc),
                                 headers={"Retry-After": lifecycle.QUEUE_RETRY_AFTER}) from exc
        return {"task_id": task_id, "status": "PENDING", "message": "Task created successfully"}

    async def discard() -> None:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id))

    return StartResponse(**await idempotency.once(
        request, gw, auth.scoped("dicetalk"), cache_key, task_id, create,
        lambda status, message, headers=None: dicetalk_error(status, message, headers=headers), discard))


def _intake_error(exc: IntakeError) -> ApiError:
    """An intake refusal in DICE-Talk's words: its image-type and audio messages are documented."""
    if exc.reason == "bad_image":
        return dicetalk_error(400, "Invalid image file type. Allowed types: ['image/jpeg', 'image/png']")
    if exc.reason == "bad_audio":
        return dicetalk_error(400, "Invalid audio file: " + exc.message, exc.detail)
    return dicetalk_error(exc.status, exc.message, exc.detail, headers=exc.headers)


@router.get("/api/v1/synthesis/{task_id}/status", response_model=StatusResponse, responses=statuses(404))
async def status(task_id: str, gw: GatewayDep) -> JSONResponse:
    """Status and progress (0.0–1.0) of a synthesis task."""
    try:
        rec = await gw.record(task_id)
    except TaskNotFound:
        raise dicetalk_error(404, "Task not found")
    if rec.api != "dicetalk" or not auth.visible(rec):
        raise dicetalk_error(404, "Task not found")
    message = rec.message
    if rec.status == TaskStatus.PENDING:
        pos = gw.dispatcher.position(task_id, rec.kind)
        if pos is not None:
            message = f"Waiting in queue (position {pos + 1})"
    # The most polled endpoint: the body is built directly, not validated again by FastAPI.
    return JSONResponse({
        "task_id": rec.id, "status": _STATUS[rec.status], "progress": round(rec.progress, 4), "message": message,
        "created_at": _timestamp(rec.created_at), "updated_at": _timestamp(rec.updated_at)})


@router.get("/api/v1/synthesis/{task_id}/download",
            responses={200: {"content": {"video/mp4": {}}, "description": "the MP4 video"},
                       **statuses(404, s400="the task has not completed (yet)")})
def download(task_id: str, gw: GatewayDep) -> StreamingResponse:
    """Download the finished MP4."""
    rec = _load(gw, task_id)
    if rec.status != TaskStatus.COMPLETED:
        raise dicetalk_error(400, "Task not completed yet")
    return stream_result(gw, rec.outputs["video"], "result.mp4")
