"""talkserve's own API (`/v1`): create, list, read and cancel jobs of every kind, follow them live.

Three kinds of job, each with the semantics of one of the documented systems:

- `portrait`: a portrait and speech become a talking video (EchoMimic's parameters);
- `emotion`: the same with one of eight emotions (DICE-Talk's parameters);
- `redub`: an existing video gets new speech, lip-synced (LatentSync's parameters).

Inputs come as uploaded files (multipart/form-data) or as URLs (`image_url`, `audio_url`,
`video_url`; a JSON body works for URL-only jobs). Parameters are validated by the very
models of the documented APIs. Results are expiring presigned links in `outputs`; live
progress is a Server-Sent Events stream; a `webhook_url` receives the final state.
Every job body names the engine that made it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import mimetypes
import pathlib
import secrets
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, AsyncIterator, Literal, Optional

import grpc
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from libs.grpcutil.errors import error_code_of
from libs.store.client import NotFound, ObjectStore
from libs.store.settings import StoreSettings
from libs.tasks import TaskNotFound, TaskRecord, TaskStatus, utcnow
from libs.tasks import task_key as record_key
from services.gateway import auth, events, idempotency
from services.gateway.context import Gateway, GatewayDep
from services.gateway.dispatcher import QueueFull
from services.gateway.intake import IntakeError, check_image, parse_params, probe, store_input, uploaded_form
from services.gateway.keys import ref, task_key
from services.gateway.limits import streams_uploads
from services.gateway.openapi import statuses
from services.gateway.responses import stream_result
from services.gateway.routers.dicetalk import SynthesisParams
from services.gateway.routers.echomimic import IMAGE_FORMATS, EchoMimicParams
from services.gateway.routers.latentsync import SyncRequest
from services.gateway.uploads import FilePart
from services.gateway.validation import HttpUrl, http_url
from services.gateway.webhooks import WebhookRefused, Webhooks
from talkserve.media.v1 import media_pb2

router = APIRouter(prefix="/v1", tags=["Jobs"])

MAX_JSON_BYTES = 64 * 1024
MAX_PAGE = 100
NATIVE_API = "native"


class RedubParams(SyncRequest):
    """LatentSync's /sync fields; the URLs are optional here because files may be uploaded instead."""

    video_url: Optional[HttpUrl] = Field(None, max_length=4096, description="http(s) URL of the video to re-dub")
    audio_url: Optional[HttpUrl] = Field(None, max_length=4096, description="http(s) URL of the new speech")


@dataclass(frozen=True)
class Kind:
    """One kind of job of the native API and the task kind that runs it."""

    name: str
    task_kind: str
    summary: str
    params: type[BaseModel]
    inputs: tuple[str, ...]
    # redub's URL inputs are fetched by the pipeline when the job runs; the others at creation,
    # so a bad portrait or an unreachable URL is reported at once.
    fetch_when_run: bool = False


KINDS = {
    "portrait": Kind("portrait", "echomimic", "A portrait and speech become a talking video (EchoMimic parameters).",
                     EchoMimicParams, ("image", "audio")),
    "emotion": Kind("emotion", "dicetalk", "A portrait speaks with one of eight emotions (DICE-Talk parameters).",
                    SynthesisParams, ("image", "audio")),
    "redub": Kind("redub", "latentsync", "A video gets new speech, lip-synced (LatentSync parameters).",
                  RedubParams, ("video", "audio"), fetch_when_run=True),
}
# The documented systems' names work too.
ALIASES = {"echomimic": "portrait", "dicetalk": "emotion", "latentsync": "redub"}
NATIVE_NAME = {k.task_kind: k.name for k in KINDS.values()}
_MEDIA_KIND = {"image": media_pb2.MEDIA_KIND_IMAGE, "audio": media_pb2.MEDIA_KIND_AUDIO,
               "video": media_pb2.MEDIA_KIND_VIDEO}


# -- response models (they are the OpenAPI documentation) ---------------------------------------


class JobOutput(BaseModel):
    """One result file."""

    url: str = Field(description="presigned link: GET it to play or fetch the file (no API key needed)")
    download_url: str = Field(description="presigned link that downloads the file as an attachment")
    content_type: str
    expires_at: str = Field(description="when both links stop working (ISO 8601, UTC)")


class WebhookState(BaseModel):
    """How the delivery of the job's final state to its `webhook_url` went."""

    id: str = Field(description="the `webhook-id` header, the same on every retry")
    state: Literal["sending", "delivered", "failed"]
    attempts: int
    last_status: Optional[int] = None
    last_error: Optional[str] = None


class Job(BaseModel):
    """A job as talkserve's own API shows it, whichever API created it."""

    id: str
    kind: str = Field(description="portrait, emotion or redub (or the task kind of other APIs' jobs)")
    task_kind: str = Field(description="the task kind that runs it: echomimic, dicetalk, latentsync, ...")
    api: str = Field(description="the API that created it: native, dicetalk, echomimic or latentsync")
    status: TaskStatus
    progress: float = Field(description="0.0 to 1.0")
    message: str
    stage: Optional[str] = Field(None, description="queued, analysing, rendering, uploading, ... while running")
    done: Optional[int] = Field(None, description="units of the stage done (frames while rendering)")
    total: Optional[int] = Field(None, description="units of the stage in all")
    eta_seconds: Optional[float] = Field(None, description="estimated seconds until rendering ends")
    queue_position: Optional[int] = Field(None, description="0-based place in the queue while waiting")
    engine: Optional[str] = Field(description="the engine that made the result, e.g. talkface-1")
    params: dict[str, Any]
    inputs: list[str]
    outputs: dict[str, JobOutput] = Field(description="result files by name (video, mask, segment_0, ...)")
    result: dict[str, Any] = Field(description="what the engine reported: frames, fps, width, height, duration")
    error: Optional[str]
    error_code: Optional[str]
    webhook_url: Optional[str] = None
    webhook: Optional[WebhookState] = None
    created_at: str
    updated_at: str
    started_at: Optional[str] = None
    links: dict[str, str]

    model_config = {"json_schema_extra": {"examples": [{
        "id": "5b0f7e1c-3f3a-4d36-9a59-1f3c2a9d1e0b", "kind": "emotion", "task_kind": "dicetalk", "api": "native",
        "status": "COMPLETED", "progress": 1.0, "message": "Video generated successfully", "stage": None,
        "done": None, "total": None, "eta_seconds": None, "queue_position": None, "engine": "talkface-1",
        "params": {"emotion": "happy", "fps": 24, "min_resolution": 256}, "inputs": ["image", "audio"],
        "outputs": {"video": {"url": "http://127.0.0.1:8333/talkserve/tasks/5b0f.../outputs/result.mp4?X-Amz-...",
                              "download_url": "http://127.0.0.1:8333/talkserve/tasks/...&response-content-disposition=...",
                              "content_type": "video/mp4", "expires_at": "2025-01-01T13:00:00Z"}},
        "result": {"frames": 96, "fps": 24.0, "width": 256, "height": 256, "duration_seconds": 4.0},
        "error": None, "error_code": None, "webhook_url": None, "webhook": None,
        "created_at": "2025-01-01T12:00:00Z", "updated_at": "2025-01-01T12:00:09Z",
        "started_at": "2025-01-01T12:00:00Z",
        "links": {"self": "/v1/jobs/5b0f...", "events": "/v1/jobs/5b0f.../events", "cancel": "/v1/jobs/5b0f.../cancel"},
    }]}}


class JobList(BaseModel):
    """One page of the caller's jobs, newest first."""

    data: list[Job]
    has_more: bool
    next_cursor: Optional[str] = Field(description="pass as `cursor` for the next page; null on the last")


class WebhookSecret(BaseModel):
    """The secret that signs the webhooks of the caller's jobs."""

    secret: str = Field(description="whsec_<base64>; verify with any Standard Webhooks library")
    scheme: str = "Standard Webhooks v1 (HMAC-SHA256 over '{webhook-id}.{webhook-timestamp}.{body}')"


class KindInfo(BaseModel):
    summary: str
    inputs: list[str]
    params: dict[str, Any] = Field(description="JSON schema of the kind's parameters")


class Info(BaseModel):
    """What this server offers: version, whether keys are needed, the kinds of job and their parameters."""

    version: str
    api_keys_required: bool
    kinds: dict[str, KindInfo]
    limits: dict[str, int]


# -- the native parts of a gateway: result links, job listing, webhooks --------------------------


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


class JobIndex:
    """Which key made each task, and when: facts that never change, read once per task with a HEAD."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self._known: dict[str, tuple[datetime, str | None]] = {}
        self._lock = threading.Lock()

    def _facts(self, task_id: str) -> tuple[datetime, str | None] | None:
        try:
            meta = self.gw.store.stat(record_key(task_id)).metadata
        except NotFound:
            return None
        if "created-at" in meta:
            return datetime.fromisoformat(meta["created-at"].replace("Z", "+00:00")), meta.get("key-id") or None
        try:  # a record written before these metadata existed
            rec, _ = self.gw.tasks.get(task_id)
        except TaskNotFound:
            return None
        return rec.created_at, rec.key_id

    def of_key(self, key_id: str | None) -> list[tuple[datetime, str]]:
        """(created_at, id) of every task of one key, newest first."""
        ids = self.gw.tasks.list_ids()
        with self._lock:
            unknown = [i for i in ids if i not in self._known]
        if unknown:
            with ThreadPoolExecutor(max_workers=8) as pool:
                found = dict(zip(unknown, pool.map(self._facts, unknown)))
        else:
            found = {}
        with self._lock:
            self._known.update({i: f for i, f in found.items() if f is not None})
            present = set(ids)
            self._known = {i: f for i, f in self._known.items() if i in present}
            mine = [(created, i) for i, (created, kid) in self._known.items() if kid == key_id]
        return sorted(mine, reverse=True)


class Native:
    """The long-lived parts of the native API, made when the gateway starts."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.index = JobIndex(gw)
        self.presigner = _presigner(gw)
        self.webhooks = Webhooks(gw.settings, gw.tasks, gw.store, render=self.view)
        gw.dispatcher.finish_hooks.append(self.webhooks.notify)

    def close(self) -> None:
        self.webhooks.close()

    def output(self, rec: TaskRecord, name: str, key: str) -> dict:
        expires = timedelta(seconds=self.gw.settings.result_link_seconds)
        filename = f"{rec.id}_{name}{pathlib.PurePosixPath(key).suffix}"
        ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return {
            "url": self.presigner.presign_get(key, expires, {"response-content-type": ctype}),
            "download_url": self.presigner.presign_get(key, expires, {
                "response-content-type": ctype,
                "response-content-disposition": f'attachment; filename="{filename}"'}),
            "content_type": ctype,
            "expires_at": _iso(utcnow() + expires),
        }

    def view(self, rec: TaskRecord) -> dict:
        """The job body: state, live detail, presigned result links, webhook delivery."""
        detail = rec.progress_detail or {}
        position = self.gw.dispatcher.position(rec.id, rec.kind) if rec.status == TaskStatus.PENDING else None
        running = not rec.finished
        base = f"/v1/jobs/{rec.id}"
        return {
            "id": rec.id, "kind": NATIVE_NAME.get(rec.kind, rec.kind), "task_kind": rec.kind, "api": rec.api,
            "status": rec.status.value, "progress": round(rec.progress, 4), "message": rec.message,
            "stage": (detail.get("stage") or ("queued" if rec.status == TaskStatus.PENDING else None)) if running
            else None,
            "done": detail.get("done") if running else None,
            "total": detail.get("total") if running else None,
            "eta_seconds": detail.get("eta_seconds") if running else None,
            "queue_position": position, "engine": rec.engine,
            "params": {k: v for k, v in rec.params.items() if k != "cache_key"},
            "inputs": sorted(rec.inputs),
            "outputs": {name: self.output(rec, name, key) for name, key in sorted(rec.outputs.items())},
            "result": rec.result, "error": rec.error, "error_code": rec.error_code,
            "webhook_url": rec.webhook_url,
            "webhook": self.webhooks.state(rec.id) if rec.webhook_url and rec.finished else None,
            "created_at": _iso(rec.created_at), "updated_at": _iso(rec.updated_at),
            "started_at": _iso(rec.started_at),
            "links": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
        }


def _presigner(gw: Gateway) -> ObjectStore:
    """The store client that signs result links: for the public endpoint when one is configured."""
    public = gw.settings.public_store_endpoint
    if not public:
        return gw.store
    settings = gw.store.settings
    return ObjectStore(StoreSettings(**{**settings.model_dump(), "secret_key": settings.secret_key,
                                        "endpoint": public}))


def start(app: FastAPI, gw: Gateway) -> Native:
    """Make the native API's parts for a starting gateway; `close()` them on shutdown."""
    app.state.native = Native(gw)
    return app.state.native


async def _native(request: Request) -> Native:
    return request.app.state.native


NativeDep = Annotated[Native, Depends(_native)]


def _not_found() -> Exception:
    return auth.native_error(404, "not_found", "Job not found")


def _record(gw, job_id: str) -> TaskRecord:
    """The caller's task; another key's task is a 404, exactly like a missing one."""
    try:
        rec = gw.tasks.get(job_id)[0]
    except TaskNotFound:
        raise _not_found()
    if not auth.visible(rec):
        raise _not_found()
    return rec


# -- create ---------------------------------------------------------------------------------------


def _create_doc() -> dict:
    binary = {"type": "string", "format": "binary"}
    url = {"type": "string", "format": "uri"}
    props: dict[str, Any] = {
        "kind": {"type": "string", "enum": list(KINDS), "description": "; ".join(
            f"{k.name}: {k.summary}" for k in KINDS.values())},
        "image": binary | {"description": "portrait (JPEG, PNG, WEBP, BMP; portrait and emotion)"},
        "image_url": url | {"description": "or the portrait's http(s) URL"},
        "audio": binary | {"description": "speech (WAV, MP3, FLAC, OGG, M4A, ...; every kind)"},
        "audio_url": url | {"description": "or the speech's http(s) URL"},
        "video": binary | {"description": "video to re-dub (MP4, MOV, WEBM, ...; redub)"},
        "video_url": url | {"description": "or the video's http(s) URL"},
        "webhook_url": url | {"description": "receives the final state, signed (Standard Webhooks)"},
    }
    for kind in KINDS.values():
        for name, schema in kind.params.model_json_schema()["properties"].items():
            if name in props and name.endswith("_url"):
                continue
            entry = props.setdefault(name, {k: v for k, v in schema.items() if k != "title"} | {"x-kinds": []})
            entry["x-kinds"].append(kind.name)
    for name, entry in props.items():
        if "x-kinds" in entry:
            entry["description"] = f"{entry.get('description', name)} (kinds: {', '.join(entry['x-kinds'])})"
    schema = {"type": "object", "required": ["kind"], "properties": props}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": schema, "encoding": {"image": {"contentType": "image/*"}}},
        "application/json": {"schema": schema, "examples": {
            "emotion from URLs": {"value": {"kind": "emotion", "image_url": "https://example.com/portrait.png",
                                            "audio_url": "https://example.com/speech.wav", "emotion": "happy",
                                            "webhook_url": "https://example.com/hooks/talkserve"}},
            "redub from URLs": {"value": {"kind": "redub", "video_url": "https://example.com/talk.mp4",
                                          "audio_url": "https://example.com/new-speech.wav"}},
        }},
    }}}


@contextlib.asynccontextmanager
async def _request_body(request: Request, gw: Gateway) -> AsyncIterator[tuple[dict[str, Any], dict[str, FilePart]]]:
    """(fields, files) of a multipart or JSON body; uploaded files live until the block ends."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_JSON_BYTES:
                raise auth.native_error(413, "too_large", f"a JSON body may have at most {MAX_JSON_BYTES} bytes")
        try:
            data = json.loads(raw or b"null")
        except ValueError as exc:
            raise auth.native_error(400, "invalid_json", f"the body is not valid JSON: {exc}")
        if not isinstance(data, dict):
            raise auth.native_error(400, "invalid_json", "the JSON body must be an object")
        yield data, {}
        return
    if ctype != "multipart/form-data":
        raise auth.native_error(415, "unsupported_media_type",
                                "send multipart/form-data (files) or application/json (URLs only)")
    s = gw.settings
    limits = {"image": s.image_max_bytes, "audio": s.audio_max_bytes, "video": s.video_max_bytes}
    try:
        async with uploaded_form(request, limits, default_limit=s.audio_max_bytes) as form:
            files = {}
            for name, parts in form.files.items():
                if len(parts) > 1:
                    raise auth.native_error(400, "invalid_input", f"send one file in '{name}', not {len(parts)}")
                files[name] = parts[0]
            yield {name: values[-1] for name, values in form.fields.items()}, files
    except IntakeError as exc:
        code = {413: "too_large", 422: "invalid_body"}.get(exc.status, "invalid_input")
        raise auth.native_error(exc.status, code, exc.message, exc.detail)


async def _fetch(gw: Gateway, url: str, key: str, name: str) -> None:
    """Have the media service download a URL input now (its address rules and size limits apply)."""
    limit = {"image": gw.settings.image_max_bytes, "audio": gw.settings.audio_max_bytes,
             "video": gw.settings.video_max_bytes}[name]
    request = media_pb2.FetchUrlRequest(url=url, destination=ref(key), expect=_MEDIA_KIND[name], max_bytes=limit)
    try:
        await run_in_threadpool(gw.clients.media.FetchUrl, request, timeout=600)
    except grpc.RpcError as err:
        if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
            raise auth.native_error(400, error_code_of(err), f"{name}_url: {err.details()}")
        raise auth.native_error(503, "media_unavailable", f"the media service is unavailable ({err.code().name})",
                                headers={"Retry-After": "10"})


async def _check_fetched_image(gw: Gateway, key: str, formats: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="talkserve-image-") as tmp:
        path = pathlib.Path(tmp) / "image"
        await run_in_threadpool(gw.store.get_file, key, path)
        await run_in_threadpool(check_image, FilePart(field="image_url", filename="", content_type="", path=path),
                                formats, gw.settings.image_max_pixels)


def _digest(part: FilePart) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(part.path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def _plan(gw: Gateway, native: Native, task_id: str, values: dict[str, Any],
                files: dict[str, FilePart]) -> tuple[TaskRecord, str]:
    """Validate a create request and store its inputs; returns the record to create and a body hash."""
    values = {k: v for k, v in values.items() if v not in (None, "")}
    name = str(values.pop("kind", "") or "")
    if not name:
        raise auth.native_error(422, "missing_kind", f"'kind' is required: one of {', '.join(KINDS)}")
    kind = KINDS.get(ALIASES.get(name, name))
    if kind is None:
        raise auth.native_error(422, "unknown_kind", f"unknown kind {name!r}; choose one of {', '.join(KINDS)}")
    webhook_url = values.pop("webhook_url", None)
    sources: dict[str, FilePart | str] = {}
    for field in kind.inputs:
        part, url = files.pop(field, None), values.pop(f"{field}_url", None)
        if part is not None and url is not None:
            raise auth.native_error(422, "invalid_input", f"give {field} as a file or as {field}_url, not both")
        if part is None and url is None:
            raise auth.native_error(422, "missing_input",
                                    f"{kind.name} needs {field}: upload a file in '{field}' or give '{field}_url'")
        sources[field] = part if part is not None else str(url)
    allowed = set(kind.params.model_fields) - {f"{f}_url" for f in kind.inputs}
    unknown = sorted(set(values) - allowed) + sorted(files)
    if unknown:
        raise auth.native_error(422, "unknown_field", f"{kind.name} does not take {', '.join(unknown)}; it takes "
                                f"{', '.join(f'{f} (or {f}_url)' for f in kind.inputs)}, {', '.join(sorted(allowed))}"
                                ", webhook_url")
    if kind.fetch_when_run:
        values.update({f"{f}_url": src for f, src in sources.items() if isinstance(src, str)})
    try:
        params = parse_params(kind.params, values, range_status=422).model_dump()
    except IntakeError as exc:
        every = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.detail or [])
        raise auth.native_error(422, "invalid_parameter", every or exc.message, exc.detail)
    if kind.name == "redub":
        ckpt = params.get("inference_ckpt_path")
        if ckpt and ckpt not in gw.settings.latentsync_checkpoints:
            raise auth.native_error(422, "invalid_parameter", f"unknown inference_ckpt_path {ckpt!r}; this server "
                                    f"offers {gw.settings.latentsync_checkpoints}")
    # The body hash is of the request as sent: a retry of a request without a seed is the same request.
    as_sent = dict(params)
    if "seed" in params and params["seed"] is None:
        params["seed"] = secrets.randbelow(2**31)
    if webhook_url is not None:
        try:
            await run_in_threadpool(native.webhooks.check, str(webhook_url))
        except WebhookRefused as exc:
            raise auth.native_error(422, "invalid_webhook_url", f"webhook_url: {exc.message}")
    inputs: dict[str, str] = {}
    digests: dict[str, str] = {}
    try:
        for field, src in sources.items():
            key = task_key(task_id, "inputs", field)
            if isinstance(src, FilePart):
                if field == "image":
                    await run_in_threadpool(check_image, src, IMAGE_FORMATS, gw.settings.image_max_pixels)
                digests[field] = await run_in_threadpool(_digest, src)
                inputs[field] = await store_input(gw, task_id, field, src)
                if field != "image":
                    await probe(gw, key, _MEDIA_KIND[field], f"{field} file {src.filename or field}")
            elif kind.fetch_when_run:
                digests[field] = "url:" + src
            else:
                try:
                    http_url(src)
                except ValueError as exc:
                    raise auth.native_error(422, "invalid_input", f"{field}_url {exc}")
                await _fetch(gw, src, key, field)
                inputs[field] = key
                digests[field] = "url:" + src
                if field == "image":
                    await _check_fetched_image(gw, key, IMAGE_FORMATS)
    except IntakeError as exc:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id) + "/")
        code = "media_unavailable" if exc.status == 503 else "invalid_input"
        raise auth.native_error(exc.status, code, exc.message, exc.detail, headers=exc.headers)
    except BaseException:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id) + "/")
        raise
    record = TaskRecord(id=task_id, kind=kind.task_kind, api=NATIVE_API, status=TaskStatus.PENDING,
                        message="Waiting in queue", params=params, inputs=inputs,
                        key_id=auth.current_key_id(), webhook_url=webhook_url)
    return record, idempotency.body_hash(NATIVE_API, kind.name, as_sent, digests, webhook_url)


@router.post(
    "/jobs", status_code=201, response_model=Job, openapi_extra=_create_doc(),
    responses=statuses(400, 409, 413, 415, s422="a field is missing, unknown or out of range; the message says which",
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
    `links.self`. An `Idempotency-Key` header makes a retried request return the first job.
    """
    task_id = str(uuid.uuid4())
    async with _request_body(request, gw) as (values, files):
        record, digest = await _plan(gw, native, task_id, values, files)

    async def create() -> dict:
        await run_in_threadpool(gw.tasks.create, record)
        try:
            gw.dispatcher.submit(record)
        except QueueFull as exc:
            await run_in_threadpool(gw.tasks.delete, record.id)
            raise auth.native_error(503, "queue_full", str(exc), headers={"Retry-After": "30"})
        created, _ = await run_in_threadpool(gw.tasks.get, record.id)
        return await run_in_threadpool(native.view, created)

    async def discard() -> None:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id) + "/")

    def error(status: int, message: str, headers=None):
        return auth.native_error(status, "idempotency_conflict" if status == 409 else "invalid_request", message,
                                 headers=headers)

    body = await idempotency.once(request, gw, auth.scoped(NATIVE_API), digest, task_id, create, error, discard)
    return JSONResponse(body, status_code=201, headers={"Location": f"/v1/jobs/{body['id']}"})


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
        raise auth.native_error(400, "invalid_cursor", "cursor is not one this API handed out")


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
        raise _not_found()
    if not auth.visible(rec):
        raise _not_found()
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
    rec = await run_in_threadpool(_record, native.gw, job_id)
    last = events.parse_last_event_id(last_event_id)
    if events.already_final(rec, last):
        return Response(status_code=204)
    stream = events.job_events(native.gw, rec, last, native.view, native.gw.settings.events_poll_seconds)
    return EventSourceResponse(stream, ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/jobs/{job_id}/outputs/{name}", responses={
    200: {"content": {"video/mp4": {}}}, **statuses(404, s409="the job has not completed, its outputs are not ready")})
def download_output(job_id: str, name: str, native: NativeDep):
    """Download one result file through the gateway (for clients that cannot reach the store's links)."""
    rec = _record(native.gw, job_id)
    key = rec.outputs.get(name)
    if key is None:
        if rec.status == TaskStatus.COMPLETED:
            raise auth.native_error(404, "not_found", f"this job has no output {name!r}; it has "
                                    f"{', '.join(sorted(rec.outputs)) or 'none'}")
        raise auth.native_error(409, "not_ready", f"the job is {rec.status.value.lower()}, its outputs are not ready")
    filename = f"{rec.id}_{name}{pathlib.PurePosixPath(key).suffix}"
    return stream_result(native.gw, key, filename, mimetypes.guess_type(key)[0] or "application/octet-stream")


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


@router.post("/jobs/{job_id}/cancel", response_model=Job, responses=statuses(404, s409="the job already ended"))
async def cancel_job(job_id: str, native: NativeDep) -> dict:
    """Cancel a waiting or running job; the model service stops between two frames."""
    gw = native.gw
    if (rec := await run_in_threadpool(_record, gw, job_id)).finished:
        raise auth.native_error(409, "already_finished", f"Job already {rec.status.value.lower()}")
    rec = await run_in_threadpool(cancel_task, gw, job_id)
    native.webhooks.notify(job_id)
    return await run_in_threadpool(native.view, rec)


# -- about the server -----------------------------------------------------------------------------


@router.get("/info", response_model=Info)
def info(gw: GatewayDep) -> dict:
    """Version, whether API keys are required, and the kinds of job with their parameters (no key needed)."""
    kinds = {}
    for kind in KINDS.values():
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
