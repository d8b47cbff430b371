"""talkserve's own API for jobs of every kind (`/v1/jobs`): read and cancel."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway.context import GatewayDep
from services.gateway.errors import fastapi_error

router = APIRouter(prefix="/v1/jobs", tags=["Jobs"])


class Job(BaseModel):
    """A job as talkserve's own API shows it."""

    id: str
    kind: str
    api: str
    status: TaskStatus
    progress: float
    message: str
    engine: Optional[str]
    error: Optional[str]
    error_code: Optional[str]
    outputs: list[str]
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, rec: TaskRecord) -> "Job":
        return cls(id=rec.id, kind=rec.kind, api=rec.api, status=rec.status, progress=round(rec.progress, 4),
                   message=rec.message, engine=rec.engine, error=rec.error, error_code=rec.error_code,
                   outputs=sorted(rec.outputs), created_at=rec.created_at.isoformat(),
                   updated_at=rec.updated_at.isoformat())


def _record(gw, job_id: str) -> TaskRecord:
    try:
        return gw.tasks.get(job_id)[0]
    except TaskNotFound:
        raise fastapi_error(404, "Job not found")


@router.get("/{job_id}", response_model=Job)
def get_job(job_id: str, gw: GatewayDep) -> Job:
    """A job of any kind, whichever API created it."""
    return Job.of(_record(gw, job_id))


def cancel_task(gw, task_id: str) -> TaskRecord:
    """Mark the task CANCELLED and stop its work wherever it runs; a finished task stays as it is."""

    def mutate(rec: TaskRecord):
        if rec.finished:
            return False
        rec.status = TaskStatus.CANCELLED
        rec.message = "Cancelled by the client"
        rec.error = "cancelled by the client"
        rec.error_code = "cancelled"

    rec = gw.tasks.update(task_id, mutate)
    # The gateway holding it stops it at once; another gateway notices within a second.
    gw.dispatcher.cancel(task_id)
    return rec


@router.post("/{job_id}/cancel", response_model=Job)
async def cancel_job(job_id: str, gw: GatewayDep) -> Job:
    """Cancel a waiting or running job; the model service stops between two frames."""
    if (rec := await run_in_threadpool(_record, gw, job_id)).finished:
        raise fastapi_error(409, f"Job already {rec.status.value.lower()}")
    return Job.of(await run_in_threadpool(cancel_task, gw, job_id))
