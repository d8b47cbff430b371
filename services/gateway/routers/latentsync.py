"""The LatentSync API (`latentsync-api.md`): /sync with URLs, the queue, task status, results.

Inputs are URLs that the media service downloads with limits; `queue_position` is 0-based as
documented. Results are served at `output_video_url` and `output_mask_url`.
"""

from __future__ import annotations

import secrets
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth, idempotency, lifecycle
from services.gateway.context import GatewayDep
from services.gateway.errors import fastapi_error
from services.gateway.kinds import latentsync
from services.gateway.kinds.latentsync import RedubParams, SyncRequest
from services.gateway.openapi import statuses
from services.gateway.responses import stream_result

router = APIRouter(tags=["LatentSync"])


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
    params = RedubParams.model_validate(body.model_dump())
    try:
        latentsync.check_checkpoint(params, gw.settings)
    except ValueError as exc:
        raise fastapi_error(400, str(exc)) from exc
    task_id = str(uuid.uuid4())

    async def create() -> dict:
        if params.seed is None:
            params.seed = secrets.randbelow(2**31)
        record = TaskRecord(id=task_id, kind=latentsync.KIND.name, api="latentsync", status=TaskStatus.PENDING,
                            message="Task queued", params=latentsync.KIND.dump(params), key_id=auth.current_key_id())
        try:
            position = await lifecycle.start(gw, record)
        except lifecycle.QueueFull as exc:
            raise fastapi_error(503, str(exc), headers={"Retry-After": lifecycle.QUEUE_RETRY_AFTER}) from exc
        return {"task_id": task_id, "status": "queued", "queue_position": position, "message": "Task queued"}

    async def nothing_to_discard() -> None:
        return None

    return SyncResponse(**await idempotency.once(
        request, gw, auth.scoped("latentsync"), idempotency.body_hash(body.model_dump()), task_id, create,
        lambda status, message, headers=None: fastapi_error(status, message, headers=headers),
        nothing_to_discard))


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
def output(task_id: str, name: str, gw: GatewayDep) -> StreamingResponse:
    """Download the lip-synced video (`video.mp4`) or the mask video (`mask.mp4`)."""
    output_name = {"video.mp4": "video", "mask.mp4": "mask"}.get(name)
    try:
        rec, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise fastapi_error(404, "Task not found") from None
    if rec.api != "latentsync" or output_name is None or not auth.visible(rec):
        raise fastapi_error(404, "Not found")
    if rec.status != TaskStatus.COMPLETED:
        raise fastapi_error(400, "Task not completed yet")
    return stream_result(gw, rec.outputs[output_name], f"{task_id}_{name}")
