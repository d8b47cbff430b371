"""The LatentSync API (`latentsync-api.md`): /sync with URLs, the queue, task status, results.

Inputs are URLs that the media service downloads with limits; `queue_position` is 0-based as
documented. Results are served at `output_video_url` and `output_mask_url`, in the wrapper's
`/results/<id>/output.mp4` layout (talkserve's earlier `/outputs/<id>/video.mp4` answers too).
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
from services.gateway.errors import TASK_NOT_FOUND, fastapi_error
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
    # Always null at submission, as the wrapper's were; the status has the result URLs.
    output_video_path: str | None = None
    output_mask_path: str | None = None


class QueuedTask(BaseModel):
    task_id: str
    position: int
    status: str = "queued"


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


@router.get("/health")
def health() -> dict:
    """The LatentSync wrapper's health check."""
    return {"status": "healthy"}


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


# The wrapper's layout (`/results/<id>/output.mp4`, what `output_video_url` names) and
# talkserve's earlier one (`/outputs/<id>/video.mp4`) both answer.
_RESULT_NAMES = {"output.mp4": "video", "output_mask.mp4": "mask", "video.mp4": "video", "mask.mp4": "mask"}
_RESULT_DOC = {200: {"content": {"video/mp4": {}}}, **statuses(404, s400="the task has not completed yet")}


def _result(task_id: str, name: str, gw: GatewayDep) -> StreamingResponse:
    output_name = _RESULT_NAMES.get(name)
    try:
        rec, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise fastapi_error(404, TASK_NOT_FOUND) from None
    if rec.api != "latentsync" or not auth.visible(rec):
        raise fastapi_error(404, TASK_NOT_FOUND)
    if output_name is None:
        raise fastapi_error(404, "Not Found")
    if rec.status != TaskStatus.COMPLETED:
        raise fastapi_error(400, "Task not completed yet")
    if output_name not in rec.outputs:
        raise fastapi_error(404, "Not Found")
    return stream_result(gw, rec.outputs[output_name], f"{task_id}_{name}")


@router.get("/results/{task_id}/{name}", responses=_RESULT_DOC)
def result(task_id: str, name: str, gw: GatewayDep) -> StreamingResponse:
    """Download the lip-synced video (`output.mp4`) or the mask video (`output_mask.mp4`)."""
    return _result(task_id, name, gw)


@router.get("/outputs/{task_id}/{name}", responses=_RESULT_DOC)
def output(task_id: str, name: str, gw: GatewayDep) -> StreamingResponse:
    """The same results under talkserve's earlier names (`video.mp4`, `mask.mp4`)."""
    return _result(task_id, name, gw)
