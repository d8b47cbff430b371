"""EchOfU's tasks as its clients see them: submitted, waited for, failed, reported."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from libs.tasks import TaskExists, TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth, lifecycle
from services.gateway import echofu_store as echofu
from services.gateway.context import Gateway
from services.gateway.echofu_http import TRUE, fail, local_time, ok
from services.gateway.errors import ApiError
from services.gateway.faults import task_http_status

KINDS = {"person_train": "model_training", "person_generate": "video_generation", "chat": "chat_system"}
STATES = {TaskStatus.PENDING: "pending", TaskStatus.QUEUED: "pending", TaskStatus.PROCESSING: "processing",
          TaskStatus.COMPLETED: "completed", TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "cancelled"}


async def submit(gw: Gateway, record: TaskRecord) -> None:
    """Start the task; a full queue or a clash of ids is answered in the document's shape."""
    try:
        await lifecycle.start(gw, record)
    except TaskExists:
        raise fail(500, "任务 ID 冲突，请重试") from None
    except lifecycle.QueueFull as exc:
        raise ApiError(503, {"status": "error", "message": f"任务队列已满，请稍后重试 ({exc})"},
                       {"Retry-After": lifecycle.QUEUE_RETRY_AFTER}) from exc


async def wait(gw: Gateway, task_id: str) -> TaskRecord:
    """Poll the record until the task ends (the event loop stays free meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + gw.settings.echofu_wait_seconds
    delay = 0.2
    while True:
        meta = await run_in_threadpool(gw.tasks.peek, task_id)
        if meta.finished:
            rec, _ = await run_in_threadpool(gw.tasks.get, task_id)
            return rec
        if loop.time() > deadline:
            raise fail(500, f"任务仍在运行，请用 /api/task-status/{task_id} 查询", task_id=task_id)
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 1.5)


def failed(rec: TaskRecord, what: str) -> ApiError:
    """The answer of a blocking endpoint whose task failed: 400 when its inputs were at fault."""
    message = rec.error or rec.message or "未知错误"
    return fail(task_http_status(rec.error_code), f"{what}失败: {message}", task_id=rec.id,
                error_code=rec.error_code)


def async_requested(request: Request, fields: dict[str, str]) -> bool:
    return (request.query_params.get("async") or fields.get("async") or "").lower() in TRUE


def task_status_body(gw: Gateway, task_id: str) -> dict[str, Any]:
    """A task's state in the document's shape (GET /api/task-status/<id>)."""
    try:
        rec, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise fail(404, f"任务不存在: {task_id}") from None
    if rec.api != echofu.API or not auth.visible(rec):
        raise fail(404, f"任务不存在: {task_id}")
    body = ok(task_id=rec.id, type=KINDS.get(rec.kind, rec.kind), state=STATES[rec.status],
               progress=round(rec.progress, 4), progress_percent=round(rec.progress * 100, 1),
               message=rec.message, engine=rec.engine, created_at=local_time(rec.created_at),
               updated_at=local_time(rec.updated_at))
    if rec.status == TaskStatus.PENDING:
        position = gw.dispatcher.position(rec.id, rec.kind)
        if position is not None:
            body["queue_position"] = position
    for name in ("model_path", "video_path"):
        if name in rec.params:
            body[name] = rec.params[name]
    if rec.status == TaskStatus.COMPLETED:
        body["result"] = rec.result or {}
    if rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        body["error"] = rec.error or rec.message
        body["error_code"] = rec.error_code
    return body
