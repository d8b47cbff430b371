"""The LatentSync API (`latentsync-api.md`): /sync with URLs, the queue, task status, results.

Inputs are URLs that the media service downloads with limits; `queue_position` is 0-based as
documented. Results are served at `output_video_url` and `output_mask_url`.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth, idempotency
from services.gateway.context import GatewayDep
from services.gateway.dispatcher import QueueFull
from services.gateway.errors import fastapi_error
from services.gateway.openapi import statuses
from services.gateway.responses import stream_result
from services.gateway.validation import Float, HttpUrl, Int

router = APIRouter(tags=["LatentSync"])

STATUS = {TaskStatus.PENDING: "queued", TaskStatus.PROCESSING: "processing", TaskStatus.COMPLETED: "completed",
          TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "failed"}


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


class SyncResponse(BaseModel):
    task_id: str
    status: str
    queue_position: int
    message: str


class QueuedTask(BaseModel):
    task_id: str
    position: int


class QueueResponse(BaseModel):
    """The lip-sync queue as the caller may see it: their own task ids, everyone's counts."""

    queue_length: int = Field(description="tasks waiting, of every client")
    is_processing: bool = Field(description="whether any task is running")
    processing_tasks: list[str] = Field(description="the caller's running tasks")
    queued_tasks: list[QueuedTask] = Field(description="the caller's waiting tasks, with their place in the "
                                                       "whole queue (0-based)")
    others_processing: int = Field(0, description="running tasks of other clients (their ids are not shown)")
    others_queued: int = Field(0, description="waiting tasks of other clients (their ids are not shown)")


@router.post("/sync", response_model=SyncResponse,
             responses=statuses(409, 503, s400="unknown inference_ckpt_path, or the body is malformed"))
async def sync(body: SyncRequest, request: Request, gw: GatewayDep) -> SyncResponse:
    """Queue a lip-sync task for a video URL and an audio URL."""
    ckpt = body.inference_ckpt_path
    if ckpt and ckpt not in gw.settings.latentsync_checkpoints:
        raise fastapi_error(400, f"unknown inference_ckpt_path {ckpt!r}; this server offers "
                                 f"{gw.settings.latentsync_checkpoints}")
    params = body.model_dump()
    task_id = str(uuid.uuid4())

    async def create() -> dict:
        if params["seed"] is None:
            params["seed"] = secrets.randbelow(2**31)
        record = TaskRecord(id=task_id, kind="latentsync", api="latentsync", status=TaskStatus.PENDING,
                            message="Task queued", params=params, key_id=auth.current_key_id())
        await run_in_threadpool(gw.tasks.create, record)
        try:
            position = gw.dispatcher.submit(record)
        except QueueFull as exc:
            await run_in_threadpool(gw.tasks.delete, record.id)
            raise fastapi_error(503, str(exc), headers={"Retry-After": "30"})
        return {"task_id": task_id, "status": "queued", "queue_position": position, "message": "Task queued"}

    async def nothing_to_discard() -> None:
        return None

    return SyncResponse(**await idempotency.once(
        request, gw, auth.scoped("latentsync"), idempotency.body_hash(body.model_dump()), task_id, create,
        lambda status, message, headers=None: fastapi_error(status, message, headers=headers),
        nothing_to_discard))


def latentsync_status(gw, rec: TaskRecord) -> dict:
    """GET /task/{id} in the LatentSync shape."""
    done = rec.status == TaskStatus.COMPLETED
    position = gw.dispatcher.position(rec.id, rec.kind) if rec.status == TaskStatus.PENDING else None
    message = rec.message
    if rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        message = rec.error or rec.message
    return {
        "task_id": rec.id,
        "status": STATUS[rec.status],
        "progress": round(rec.progress, 4),
        "message": message,
        "queue_position": position,
        "output_video_url": f"/outputs/{rec.id}/video.mp4" if done else None,
        "output_mask_url": f"/outputs/{rec.id}/mask.mp4" if done and "mask" in rec.outputs else None,
        "engine": rec.engine,
        "created_at": rec.created_at.isoformat(),
        "updated_at": rec.updated_at.isoformat(),
    }


@router.get("/queue", response_model=QueueResponse)
def queue(gw: GatewayDep, caller: auth.CallerDep) -> QueueResponse:
    """The lip-sync tasks waiting and running, in order: the caller's by id, the others counted."""
    waiting, running = gw.dispatcher.snapshot("latentsync")
    mine_running = [tid for tid, kid in running if kid == caller.key_id]
    mine_waiting = [QueuedTask(task_id=tid, position=i) for i, (tid, kid) in enumerate(waiting)
                    if kid == caller.key_id]
    return QueueResponse(queue_length=len(waiting), is_processing=bool(running), processing_tasks=mine_running,
                         queued_tasks=mine_waiting, others_processing=len(running) - len(mine_running),
                         others_queued=len(waiting) - len(mine_waiting))


@router.get("/outputs/{task_id}/{name}", responses={200: {"content": {"video/mp4": {}}},
                                                   **statuses(404, s400="the task has not completed yet")})
def output(task_id: str, name: str, gw: GatewayDep):
    """Download the lip-synced video (`video.mp4`) or the mask video (`mask.mp4`)."""
    output_name = {"video.mp4": "video", "mask.mp4": "mask"}.get(name)
    try:
        rec, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise fastapi_error(404, "Task not found")
    if rec.api != "latentsync" or output_name is None or not auth.visible(rec):
        raise fastapi_error(404, "Not found")
    if rec.status != TaskStatus.COMPLETED:
        raise fastapi_error(400, "Task not completed yet")
    return stream_result(gw, rec.outputs[output_name], f"{task_id}_{name}")
