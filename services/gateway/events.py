"""Live progress of a job as Server-Sent Events, resumable with `Last-Event-ID`.

The stream follows the task record: each event's `id` is the record's revision (it grows
with every write), so a client that reconnects with `Last-Event-ID: N` receives only what
changed after revision N. Progress comes from the model service's gRPC progress stream
(stage, frame i of N, seconds left), which the pipeline writes into the record.

Event types: `progress` (while waiting or running), then exactly one of `completed`,
`failed` or `cancelled`, after which the stream ends. A client that already received the
final event and reconnects gets 204 No Content, which tells EventSource to stop.

The record is watched with a HEAD request every `events_poll_seconds` (the revision is in
the object's metadata) and read in full only when it changed, so an idle stream costs one
cheap request per interval and works wherever the task runs, on this gateway or another.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskRecord, TaskStatus

FINAL_EVENTS = {TaskStatus.COMPLETED: "completed", TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "cancelled"}
# Tells EventSource how long to wait before reconnecting after a dropped connection.
RETRY_MS = 2000


def parse_last_event_id(value: str | None) -> int:
    """The revision a reconnecting client saw last; 0 (everything) when absent or malformed."""
    try:
        return max(0, int((value or "").strip()))
    except ValueError:
        return 0


def progress_data(rec: TaskRecord, queue_position: int | None) -> dict:
    """The payload of a `progress` event."""
    detail = rec.progress_detail or {}
    return {
        "id": rec.id,
        "status": rec.status.value,
        "progress": round(rec.progress, 4),
        "message": rec.message,
        "stage": detail.get("stage") or ("queued" if rec.status == TaskStatus.PENDING else "processing"),
        "done": detail.get("done"),
        "total": detail.get("total"),
        "eta_seconds": detail.get("eta_seconds"),
        "queue_position": queue_position,
    }


def already_final(rec: TaskRecord, last_event_id: int) -> bool:
    """True when the client's last event was this finished task's final one."""
    return rec.finished and last_event_id >= rec.revision


async def job_events(gw, rec: TaskRecord, last_event_id: int, render: Callable[[TaskRecord], dict],
                     poll: float) -> AsyncIterator[dict]:
    """Events for one job from `last_event_id` on, ending after its final event."""
    sent = last_event_id
    shown: tuple | None = None
    first = True
    while True:
        if not first:
            await asyncio.sleep(poll)
            try:
                meta = await run_in_threadpool(gw.tasks.peek, rec.id)
            except TaskNotFound:
                return  # deleted (retention) while watched
            changed = meta.revision > rec.revision
            if changed:
                try:
                    rec, _ = await run_in_threadpool(gw.tasks.get, rec.id)
                except TaskNotFound:
                    return
        first = False
        if rec.finished:
            if rec.revision > sent:
                yield {"event": FINAL_EVENTS[rec.status], "id": str(rec.revision), "retry": RETRY_MS,
                       "data": json.dumps(await run_in_threadpool(render, rec))}
            return
        position = gw.dispatcher.position(rec.id, rec.kind) if rec.status == TaskStatus.PENDING else None
        data = progress_data(rec, position)
        visible = tuple(sorted((k, json.dumps(v)) for k, v in data.items()))
        if visible == shown:
            continue
        before, shown = shown, visible
        if rec.revision > sent:
            sent = rec.revision
            yield {"event": "progress", "id": str(rec.revision), "retry": RETRY_MS, "data": json.dumps(data)}
        elif before is not None:
            # Only the queue moved: no new revision, so no id (Last-Event-ID stays right).
            yield {"event": "progress", "data": json.dumps(data)}
