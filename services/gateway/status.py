"""A task's status in the shape of the API that created it (GET /task/{id} answers both EchoMimic's
and LatentSync's, as their documents have it)."""

from __future__ import annotations

from typing import Any

from libs.tasks import TaskRecord, TaskStatus
from services.gateway.context import Gateway

ECHOMIMIC_STATUS = {TaskStatus.PENDING: "pending", TaskStatus.PROCESSING: "processing",
                    TaskStatus.COMPLETED: "completed", TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "failed"}
LATENTSYNC_STATUS = {TaskStatus.PENDING: "queued", TaskStatus.PROCESSING: "processing",
                     TaskStatus.COMPLETED: "completed", TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "failed"}


def video_path(task_id: str, name: str) -> str:
    """The `output/videos/...` path the EchoMimic wrapper reported for a result (served there too)."""
    return f"output/videos/{task_id}_{name}.mp4"


def latentsync_urls(task_id: str) -> tuple[str, str]:
    """Where the LatentSync wrapper served a result and its mask (`/results/<id>/...`)."""
    return f"/results/{task_id}/output.mp4", f"/results/{task_id}/output_mask.mp4"


def echomimic_status(rec: TaskRecord) -> dict[str, Any]:
    """GET /task/{id} in the EchoMimic shape (single or multi-audio)."""
    body: dict[str, Any] = {"task_id": rec.id, "status": ECHOMIMIC_STATUS[rec.status]}
    done = rec.status == TaskStatus.COMPLETED
    if rec.kind == "echomimic_multi":
        n = int(rec.params["segments"])
        body["output_files"] = [video_path(rec.id, f"segment_{i}_with_audio") for i in range(n)
                                if f"segment_{i}" in rec.outputs]
        body["combined_output_file"] = video_path(rec.id, "combined") if "combined" in rec.outputs else None
    else:
        body["output_file"] = video_path(rec.id, "with_audio") if done else None
    body["error"] = rec.error if rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED) else None
    body["progress"] = round(rec.progress, 4)
    body["engine"] = rec.engine
    return body


def latentsync_status(gw: Gateway, rec: TaskRecord) -> dict[str, Any]:
    """GET /task/{id} in the LatentSync shape: times are Unix seconds, as the wrapper's were."""
    done = rec.status == TaskStatus.COMPLETED
    video_url, mask_url = latentsync_urls(rec.id)
    position = gw.dispatcher.position(rec.id, rec.kind) if rec.status == TaskStatus.PENDING else None
    message = rec.message
    if rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        message = rec.error or rec.message
    return {
        "task_id": rec.id,
        "status": LATENTSYNC_STATUS[rec.status],
        "progress": round(rec.progress, 4),
        "message": message,
        "queue_position": position,
        "start_time": rec.created_at.timestamp(),
        "end_time": rec.updated_at.timestamp() if rec.finished else None,
        "output_video_url": video_url if done else None,
        "output_mask_url": mask_url if done and "mask" in rec.outputs else None,
        "engine": rec.engine,
        "created_at": rec.created_at.isoformat(),
        "updated_at": rec.updated_at.isoformat(),
    }
