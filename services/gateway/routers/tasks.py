"""GET /task/{task_id}: documented by EchoMimic and by LatentSync, each answered in its own shape."""

from __future__ import annotations

from fastapi import APIRouter

from libs.tasks import TaskNotFound
from services.gateway import auth
from services.gateway.context import GatewayDep
from services.gateway.errors import TASK_NOT_FOUND, fastapi_error
from services.gateway.openapi import statuses
from services.gateway.status import echomimic_status, latentsync_status

router = APIRouter(tags=["EchoMimic", "LatentSync"])


@router.get("/task/{task_id}", responses=statuses(404))
async def get_task(task_id: str, gw: GatewayDep) -> dict:
    """Status of an EchoMimic or LatentSync task, in the shape of the API that created it."""
    try:
        rec = await gw.record(task_id)
    except TaskNotFound:
        raise fastapi_error(404, TASK_NOT_FOUND) from None
    if not auth.visible(rec):
        raise fastapi_error(404, TASK_NOT_FOUND)
    if rec.api == "echomimic":
        return echomimic_status(rec)
    if rec.api == "latentsync":
        return latentsync_status(gw, rec)
    raise fastapi_error(404, TASK_NOT_FOUND)
