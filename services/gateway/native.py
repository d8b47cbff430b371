"""The long-lived parts of talkserve's own API: the job body with presigned result links, the
job index, webhooks; made when the gateway starts, found by routes through `NativeDep`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway import auth
from services.gateway.context import Gateway
from services.gateway.errors import ApiError
from services.gateway.job_index import JobIndex
from services.gateway.kinds import api_name
from services.gateway.result_links import ResultLinks
from services.gateway.webhook_events import FINAL, wanted
from services.gateway.webhooks import Webhooks

NATIVE_API = "native"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


class Native:
    """The long-lived parts of the native API, made when the gateway starts."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.index = JobIndex(gw)
        self.links = ResultLinks(gw.settings, gw.store)
        self.webhooks = Webhooks(gw.settings, gw.tasks, gw.store, render=self.view)
        gw.dispatcher.finish_hooks.append(self.webhooks.notify)
        gw.dispatcher.pipeline.update_hooks.append(self.webhooks.updated)

    def close(self) -> None:
        self.webhooks.close()

    def output(self, rec: TaskRecord, name: str, key: str) -> dict[str, Any]:
        return self.links.output(rec, name, key)

    def view(self, rec: TaskRecord) -> dict[str, Any]:
        """The job body: state, live detail, presigned result links, webhook delivery."""
        detail = rec.progress_detail or {}
        position = self.gw.dispatcher.position(rec.id, rec.kind) if rec.status == TaskStatus.PENDING else None
        running = not rec.finished
        base = f"/v1/jobs/{rec.id}"
        return {
            "id": rec.id, "kind": api_name(rec.kind), "task_kind": rec.kind, "api": rec.api,
            "status": rec.status.value, "progress": round(rec.progress, 4), "message": rec.message,
            "stage": (detail.get("stage") or ("queued" if rec.status == TaskStatus.PENDING else None)) if running
            else None,
            "done": detail.get("done") if running else None,
            "total": detail.get("total") if running else None,
            "eta_seconds": detail.get("eta_seconds") if running else None,
            "queue_position": position, "engine": rec.engine,
            "params": {**rec.params, **({"cached": True} if rec.cached else {})},
            "inputs": sorted(rec.inputs),
            "outputs": {name: self.output(rec, name, key) for name, key in sorted(rec.outputs.items())},
            "result": rec.result, "error": rec.error, "error_code": rec.error_code,
            "metadata": rec.metadata,
            "webhook_url": rec.webhook_url,
            "webhook_events": (list(rec.webhook_events or FINAL)) if rec.webhook_url else None,
            "webhook": self.webhooks.state(rec.id) if rec.webhook_url and rec.finished and wanted(
                rec, rec.status.value.lower()) else None,
            "created_at": _iso(rec.created_at), "updated_at": _iso(rec.updated_at),
            "started_at": _iso(rec.started_at),
            "links": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
        }


def start(app: FastAPI, gw: Gateway) -> Native:
    """Make the native API's parts for a starting gateway; `close()` them on shutdown."""
    native = app.state.native = Native(gw)
    return native


async def _native(request: Request) -> Native:
    # async: no thread hop; made once at start.
    native: Native = request.app.state.native
    return native


NativeDep = Annotated[Native, Depends(_native)]


def not_found() -> ApiError:
    return auth.native_error(404, "not_found", "Job not found")


def record_of(gw: Gateway, job_id: str) -> TaskRecord:
    """The caller's task; another key's task is a 404, exactly like a missing one."""
    try:
        rec = gw.tasks.get(job_id)[0]
    except TaskNotFound:
        raise not_found() from None
    if not auth.visible(rec):
        raise not_found()
    return rec
