"""talkserve's own API (`/v1`): create, list, read and cancel jobs of every kind, follow them live.

Three kinds of job, each with the semantics of one of the documented systems:

- `portrait`: a portrait and speech become a talking video (EchoMimic's parameters);
- `emotion`: the same with one of eight emotions (DICE-Talk's parameters);
- `redub`: an existing video gets new speech, lip-synced (LatentSync's parameters).

Inputs come as uploaded files (multipart/form-data) or as URLs (`image_url`, `audio_url`,
`video_url`; a JSON body works for URL-only jobs). Parameters are validated by the very
models of the documented APIs (kinds/). Results are expiring presigned links in `outputs`;
live progress is a Server-Sent Events stream; a `webhook_url` receives the final state (or the
events named in `webhook_events`), with the job's `metadata`.
Every job body names the engine that made it. This module speaks HTTP only: the job body
and webhooks are native.py's, taking a request in is native_intake.py's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskNotFound, TaskStatus
from services.gateway import auth, events, idempotency, lifecycle
from services.gateway.context import GatewayDep
from services.gateway.errors import ApiError
from services.gateway.keys import task_key
from services.gateway.kinds import NATIVE
from services.gateway.limits import streams_uploads
from services.gateway.native import NATIVE_API, Native, NativeDep, not_found, record_of
from services.gateway.native_intake import plan, request_body
from services.gateway.native_models import Info, Job, JobList, WebhookSecret
from services.gateway.openapi import statuses
from services.gateway.responses import stream_object
from services.gateway.result_links import content_type, filename
from services.gateway.webhook_events import EVENTS, MAX_METADATA_BYTES

router = APIRouter(prefix="/v1", tags=["Jobs"])

MAX_PAGE = 100


def _create_doc() -> dict:
    binary = {"type": "string", "format": "binary"}
    url = {"type": "string", "format": "uri"}
    props: dict[str, Any] = {
        "kind": {"type": "string", "enum": list(NATIVE), "description": "; ".join(
            f"{name}: {k.native.summary}" for name, k in NATIVE.items() if k.native)},
        "image": binary | {"description": "portrait (JPEG, PNG, WEBP, BMP; portrait and emotion)"},
        "image_url": url | {"description": "or the portrait's http(s) URL"},
        "audio": binary | {"description": "speech (WAV, MP3, FLAC, OGG, M4A, ...; every kind)"},
        "audio_url": url | {"description": "or the speech's http(s) URL"},
        "video": binary | {"description": "video to re-dub (MP4, MOV, WEBM, ...; redub)"},
        "video_url": url | {"description": "or the video's http(s) URL"},
        "webhook_url": url | {"description": "receives the job's events, signed (Standard Webhooks)"},
        "webhook_events": {"type": "array", "items": {"type": "string", "enum": list(EVENTS)},
                           "description": "events sent to webhook_url (default: completed, failed, cancelled; "
                                          "in a form: comma-separated)"},
        "metadata": {"type": "object", "description": f"your own JSON object (at most {MAX_METADATA_BYTES} bytes), "
                                                      "echoed on the job and in every webhook (in a form: its JSON)"},
    }
    for kind in (k.native for k in NATIVE.values() if k.native):
        for name, schema in kind.params.model_json_schema()["properties"].items():
            if name in props and name.endswith("_url"):
                continue
            entry = props.setdefault(name, {k: v for k, v in schema.items() if k != "title"} | {"x-kinds": []})
            entry["x-kinds"].append(kind.name)
    for name, entry in props.items():
        if "x-kinds" in entry:
            entry["description"] = f"{entry.get('description', name)} (kinds: {', '.join(entry['x-kinds'])})"
    schema = {"type": "object", "required": ["kind"], "properties": props}
    headers = [
        {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"}, "example": "wait=30",
         "description": "`wait=N`: hold the answer up to N seconds (at most the server's "
                        "`prefer_wait_max_seconds`) and answer the finished job if it ends by then"},
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
         "description": "a retried request with the same key and body returns the first job "
                        "(`Idempotent-Replayed: true`); another body is a 409"},
    ]
    return {"parameters": headers, "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": schema, "encoding": {"image": {"contentType": "image/*"}}},
        "application/json": {"schema": schema, "examples": {
            "emotion from URLs": {"value": {"kind": "emotion", "image_url": "https://example.com/portrait.png",
                                            "audio_url": "https://example.com/speech.wav", "emotion": "happy",
                                            "webhook_url": "https://example.com/hooks/talkserve",
                                            "webhook_events": ["start", "completed", "failed"],
                                            "metadata": {"order": "A-1042"}}},
            "redub from URLs": {"value": {"kind": "redub", "video_url": "https://example.com/talk.mp4",
                                          "audio_url": "https://example.com/new-speech.wav"}},
        }},
    }}}


@router.post(
    "/jobs", status_code=201, response_model=Job, openapi_extra=_create_doc(),
    responses=statuses(400, 409, 413, 415,
                       s422="a field is missing, unknown or out of range, or the portrait has no face talkface-1 "
                            "can animate; the message and the error code say which",
                       s503="the queue is full or the media service is unavailable; see Retry-After"),
)
@streams_uploads
async def create_job(request: Request, gw: GatewayDep, native: NativeDep) -> JSONResponse:
    """Create a job: upload files (multipart/form-data) or give URLs (either body).

    ```
    curl -F kind=emotion -F emotion=happy -F image=@portrait.png -F audio=@speech.wav \\
         http://127.0.0.1:8000/v1/jobs
    ```
    Answers 201 with the job; follow it at `links.events` (Server-Sent Events) or poll
    `links.self`. An `Idempotency-Key` header makes a retried request return the first job
    (marked `Idempotent-Replayed: true`). `Prefer: wait=N` holds the answer up to N seconds
    (at most `prefer_wait_max_seconds`, 60 by default) and answers the finished job if it ends
    by then (`Preference-Applied: wait=N`), else the job as it is then.
    """
    task_id = str(uuid.uuid4())
    async with request_body(request, gw) as (values, files):
        record, digest = await plan(gw, native, task_id, values, files)

    async def create() -> dict:
        try:
            await lifecycle.start(gw, record)
        except lifecycle.QueueFull as exc:
            raise auth.native_error(503, "queue_full", str(exc),
                                    headers={"Retry-After": lifecycle.QUEUE_RETRY_AFTER}) from exc
        created, _ = await run_in_threadpool(gw.tasks.get, record.id)
        return await run_in_threadpool(native.view, created)

    async def discard() -> None:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id))

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> ApiError:
        return auth.native_error(status, "idempotency_conflict" if status == 409 else "invalid_request", message,
                                 headers=headers)

    body = await idempotency.once(request, gw, auth.scoped(NATIVE_API), digest, task_id, create, error, discard)
    headers = {"Location": f"/v1/jobs/{body['id']}"}
    if idempotency.replayed(request):
        headers[idempotency.REPLAYED_HEADER] = "true"
    wait = prefer_wait(request.headers.get("prefer"), gw.settings.prefer_wait_max_seconds)
    if wait is not None:
        body = await _wait_for_end(native, body["id"], wait) or body
        headers["Preference-Applied"] = f"wait={wait:g}"
    return JSONResponse(body, status_code=201, headers=headers)


def prefer_wait(prefer: str | None, cap: float) -> float | None:
    """The seconds of a `Prefer: wait=N` header (RFC 7240), capped; None when not asked for.

    As RFC 7240 says, a preference the server cannot read is ignored, not refused.
    """
    if not prefer or cap <= 0:
        return None
    for part in prefer.split(","):
        name, _, value = part.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None
            return min(seconds, cap) if seconds > 0 and math.isfinite(seconds) else None
    return None


async def _wait_for_end(native: Native, job_id: str, seconds: float) -> dict | None:
    """The job once it ended, if it ends within `seconds`; else its state then."""
    gw = native.gw
    deadline = time.monotonic() + seconds
    while True:
        try:
            rec, _ = await run_in_threadpool(gw.tasks.get, job_id)
        except TaskNotFound:
            return None
        if rec.finished or time.monotonic() >= deadline:
            return await run_in_threadpool(native.view, rec)
        await asyncio.sleep(min(gw.settings.events_poll_seconds, max(0.0, deadline - time.monotonic())))


# -- read, list, follow, cancel -------------------------------------------------------------------


def _encode_cursor(created: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created.isoformat(), job_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor points after; 400 for anything `_encode_cursor` did not make."""
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(job_id, str):
            raise ValueError("not a cursor of this API")  # it only hands out aware times
        return when, job_id
    except (ValueError, TypeError, RecursionError):
        raise auth.native_error(400, "invalid_cursor", "cursor is not one this API handed out") from None


@router.get("/jobs", response_model=JobList, responses=statuses(s400="limit out of range, or a cursor this API "
                                                                      "did not hand out"))
def list_jobs(native: NativeDep, caller: auth.CallerDep,
              limit: int = Query(20, description=f"jobs per page, 1 to {MAX_PAGE}"),
              cursor: Optional[str] = Query(None, description="`next_cursor` of the previous page"),
              status: Optional[TaskStatus] = Query(None, description="only jobs in this status")) -> dict:
    """The caller's jobs of every kind and API, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise auth.native_error(400, "invalid_parameter", f"limit must be 1 to {MAX_PAGE}")
    entries = native.index.of_key(caller.key_id)
    if cursor:
        after = _decode_cursor(cursor)
        entries = [e for e in entries if e < after]
    page: list[dict] = []
    has_more = False
    last: tuple[datetime, str] | None = None
    for created, job_id in entries:
        if len(page) == limit:
            has_more = True
            break
        try:
            rec, _ = native.gw.tasks.get(job_id)
        except TaskNotFound:
            continue
        last = (created, job_id)
        if status is not None and rec.status != status:
            continue
        page.append(native.view(rec))
    return {"data": page, "has_more": has_more,
            "next_cursor": _encode_cursor(*last) if has_more and last else None}


@router.get("/jobs/{job_id}", response_model=Job, responses=statuses(404))
async def get_job(job_id: str, native: NativeDep) -> dict:
    """A job of any kind, whichever API created it, with presigned links to its results."""
    try:
        rec = await native.gw.record(job_id)
    except TaskNotFound:
        raise not_found() from None
    if not auth.visible(rec):
        raise not_found()
    if rec.outputs or rec.webhook_url:
        return await run_in_threadpool(native.view, rec)  # presigning and the webhook state may do I/O
    return native.view(rec)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse, responses={200: {
    "description": "Server-Sent Events: `progress` while the job waits or runs, then one of `completed`, "
                   "`failed`, `cancelled` (its data is the whole job), then the stream ends. Each event's "
                   "`id` grows; reconnect with `Last-Event-ID` to resume after it.",
    "content": {"text/event-stream": {"example":
        'event: progress\nid: 7\ndata: {"id": "5b0f...", "status": "PROCESSING", "progress": 0.41, '
        '"message": "Rendering frame 40/96", "stage": "rendering", "done": 40, "total": 96, '
        '"eta_seconds": 3.1, "queue_position": null}\n\n'
        'event: completed\nid: 12\ndata: {"id": "5b0f...", "status": "COMPLETED", "outputs": {...}, ...}\n\n'}}},
    204: {"description": "the client already received the final event (Last-Event-ID)"}, **statuses(404)})
async def job_events(job_id: str, native: NativeDep,
                     last_event_id: Annotated[Optional[str], Header(description="resume after this event id")] = None
                     ) -> Response:
    """Follow a job live: stage, frame i of N and ETA as they happen, then its final state."""
    rec = await run_in_threadpool(record_of, native.gw, job_id)
    last = events.parse_last_event_id(last_event_id)
    if events.already_final(rec, last):
        return Response(status_code=204)
    stream = events.job_events(native.gw, rec, last, native.view, native.gw.settings.events_poll_seconds)
    return EventSourceResponse(stream, ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/jobs/{job_id}/outputs/{name}", responses={
    200: {"content": {"video/mp4": {}}}, 206: {"description": "the requested byte range (Range: bytes=a-b)"},
    **statuses(404, 416, s409="the job has not completed, its outputs are not ready")})
def download_output(job_id: str, name: str, native: NativeDep, request: Request) -> Response:
    """Download one result file through the gateway: the stable address of a result while the job is kept
    (`outputs.*.stable_url`), unlike the expiring links."""
    rec = record_of(native.gw, job_id)
    key = rec.outputs.get(name)
    if key is None:
        if rec.status == TaskStatus.COMPLETED:
            raise auth.native_error(404, "not_found", f"this job has no output {name!r}; it has "
                                    f"{', '.join(sorted(rec.outputs)) or 'none'}")
        raise auth.native_error(409, "not_ready", f"the job is {rec.status.value.lower()}, its outputs are not ready")
    headers = {"Content-Disposition": f'attachment; filename="{filename(rec, name, key)}"'}

    def out_of_range(size: int) -> Response:
        return JSONResponse({"error": {"code": "range_not_satisfiable", "message": f"the file has {size} bytes"}},
                            416, headers={"Content-Range": f"bytes */{size}"})

    return stream_object(native.gw, key, content_type(key), request.headers.get("range"), out_of_range, headers)


@router.post("/jobs/{job_id}/cancel", response_model=Job, responses=statuses(404, s409="the job already ended"))
async def cancel_job(job_id: str, native: NativeDep) -> dict:
    """Cancel a waiting or running job; the model service stops between two frames."""
    gw = native.gw
    if (rec := await run_in_threadpool(record_of, gw, job_id)).finished:
        raise auth.native_error(409, "already_finished", f"Job already {rec.status.value.lower()}")
    rec = await run_in_threadpool(lifecycle.cancel, gw, job_id)
    native.webhooks.notify(job_id)
    return await run_in_threadpool(native.view, rec)


# -- about the server -----------------------------------------------------------------------------


@router.get("/info", response_model=Info)
def info(gw: GatewayDep) -> dict:
    """Version, whether API keys are required, and the kinds of job with their parameters (no key needed)."""
    kinds = {}
    for kind in (k.native for k in NATIVE.values() if k.native):
        schema = kind.params.model_json_schema()
        for field in kind.inputs:
            schema["properties"].pop(f"{field}_url", None)
        kinds[kind.name] = {"summary": kind.summary, "inputs": list(kind.inputs), "params": schema}
    s = gw.settings
    return {"version": s.version, "api_keys_required": s.require_api_keys, "kinds": kinds,
            "limits": {"image_max_bytes": s.image_max_bytes, "audio_max_bytes": s.audio_max_bytes,
                       "video_max_bytes": s.video_max_bytes}}


@router.get("/webhooks/secret", response_model=WebhookSecret)
def webhook_secret(native: NativeDep, caller: auth.CallerDep) -> dict:
    """The secret your jobs' webhooks are signed with (each API key has its own)."""
    return {"secret": native.webhooks.secret_for(caller.key_id)}
