"""Start and cancel tasks: the steps every API takes, whatever shape its answers have.

A router builds the task record (its kind's parameters already validated), calls `start`
and answers in its own shape; a full queue raises QueueFull after the record is removed
again, so a refused request leaves nothing behind.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from libs.logs import REQUEST_ID
from libs.tasks import TaskRecord, TaskStatus
from services.gateway.context import Gateway
from services.gateway.queues import QueueFull

# How long a client should wait before trying again when a queue is full.
QUEUE_RETRY_AFTER = "30"

__all__ = ["QUEUE_RETRY_AFTER", "QueueFull", "cancel", "start"]


async def start(gw: Gateway, record: TaskRecord) -> int:
    """Store the task and queue it; its 0-based place among the waiting tasks. Raises QueueFull."""
    if record.request_id is None and REQUEST_ID.get() != "-":
        record.request_id = REQUEST_ID.get()
    await run_in_threadpool(gw.tasks.create, record)
    try:
        return gw.dispatcher.submit(record)
    except QueueFull:
        await run_in_threadpool(gw.tasks.delete, record.id)
        raise


def cancel(gw: Gateway, task_id: str) -> TaskRecord:
    """Mark the task CANCELLED and stop its work wherever it runs; a finished task stays as it is."""

    def mutate(rec: TaskRecord) -> bool | None:
        if rec.finished:
            return False
        rec.status = TaskStatus.CANCELLED
        rec.message = "Cancelled by the client"
        rec.error = "cancelled by the client"
        rec.error_code = "cancelled"
        return None

    rec = gw.tasks.update(task_id, mutate)
    # The gateway holding it stops it at once; another gateway notices within a second.
    gw.dispatcher.cancel(task_id)
    return rec
