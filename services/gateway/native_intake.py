"""Take a `/v1/jobs` create request in: its body (files or JSON), its kind and parameters, its inputs.

Parameters are validated by the kind's own model (kinds/); inputs given as files are checked
and stored now, URL inputs downloaded now through the media service (redub's when it runs).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import secrets
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import grpc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from libs.grpcutil.errors import error_code_of
from libs.tasks import TaskRecord, TaskStatus
from services.gateway import auth, idempotency
from services.gateway.context import Gateway
from services.gateway.faults import http_status
from services.gateway.intake import (
    IntakeError,
    check_face,
    check_image,
    file_digest,
    parse_params,
    probe,
    store_input,
    uploaded_form,
)
from services.gateway.keys import ref, task_key
from services.gateway.kinds import NATIVE
from services.gateway.kinds.face import named_face
from services.gateway.native import NATIVE_API, Native
from services.gateway.uploads import FilePart
from services.gateway.validation import http_url
from services.gateway.webhook_events import parse_events, parse_metadata
from services.gateway.webhooks import WebhookRefused
from talkserve.media.v1 import media_pb2

MAX_JSON_BYTES = 64 * 1024
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
# The documented systems' names work too (dicetalk for emotion, ...): the task kinds' names.
ALIASES = {kind.name: name for name, kind in NATIVE.items()}
_MEDIA_KIND = {"image": media_pb2.MEDIA_KIND_IMAGE, "audio": media_pb2.MEDIA_KIND_AUDIO,
               "video": media_pb2.MEDIA_KIND_VIDEO}


@contextlib.asynccontextmanager
async def request_body(request: Request, gw: Gateway) -> AsyncIterator[tuple[dict[str, Any], dict[str, FilePart]]]:
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
            raise auth.native_error(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
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
        raise auth.native_error(exc.status, code, exc.message, exc.detail) from exc


async def _fetch(gw: Gateway, url: str, key: str, name: str) -> None:
    """Have the media service download a URL input now (its address rules and size limits apply)."""
    limit = {"image": gw.settings.image_max_bytes, "audio": gw.settings.audio_max_bytes,
             "video": gw.settings.video_max_bytes}[name]
    request = media_pb2.FetchUrlRequest(url=url, destination=ref(key), expect=_MEDIA_KIND[name], max_bytes=limit)
    try:
        await run_in_threadpool(gw.clients.media.fetch_url, request, 600)
    except grpc.RpcError as err:
        if http_status(err) == 400:
            raise auth.native_error(400, error_code_of(err), f"{name}_url: {err.details()}") from err
        raise auth.native_error(503, "media_unavailable", f"the media service is unavailable ({err.code().name})",
                                headers={"Retry-After": "10"}) from err


async def _check_fetched_image(gw: Gateway, key: str, formats: tuple[str, ...], face: tuple) -> None:
    with tempfile.TemporaryDirectory(prefix="talkserve-image-") as tmp:
        path = pathlib.Path(tmp) / "image"
        await run_in_threadpool(gw.store.get_file, key, path)
        await run_in_threadpool(check_image, FilePart(field="image_url", filename="", content_type="", path=path),
                                formats, gw.settings.image_max_pixels)
        await check_face(gw, path, *face)


async def plan(gw: Gateway, native: Native, task_id: str, values: dict[str, Any],
               files: dict[str, FilePart]) -> tuple[TaskRecord, str]:
    """Validate a create request and store its inputs; returns the record to create and a body hash."""
    values = {k: v for k, v in values.items() if v not in (None, "")}
    name = str(values.pop("kind", "") or "")
    if not name:
        raise auth.native_error(422, "missing_kind", f"'kind' is required: one of {', '.join(NATIVE)}")
    job_kind = NATIVE.get(ALIASES.get(name, name))
    if job_kind is None or job_kind.native is None:
        raise auth.native_error(422, "unknown_kind", f"unknown kind {name!r}; choose one of {', '.join(NATIVE)}")
    kind = job_kind.native
    webhook_url = values.pop("webhook_url", None)
    events, metadata = values.pop("webhook_events", None), values.pop("metadata", None)
    try:
        metadata = parse_metadata(metadata) if metadata is not None else None
        events = parse_events(events) if events is not None else None
    except ValueError as exc:
        raise auth.native_error(422, "invalid_parameter", str(exc)) from None
    if events is not None and webhook_url is None:
        raise auth.native_error(422, "invalid_parameter", "webhook_events needs a webhook_url to send them to")
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
                                ", webhook_url, webhook_events, metadata")
    if kind.fetch_when_run:
        values.update({f"{f}_url": src for f, src in sources.items() if isinstance(src, str)})
    try:
        params = parse_params(job_kind.params, values, range_status=422)
        if job_kind.check is not None:
            job_kind.check(params, gw.settings)
    except IntakeError as exc:
        every = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
                          for e in exc.detail or [])  # type: ignore[attr-defined]
        raise auth.native_error(422, "invalid_parameter", every or exc.message, exc.detail) from exc
    except ValueError as exc:
        raise auth.native_error(422, "invalid_parameter", str(exc)) from exc
    # The body hash is of the request as sent: a retry of a request without a seed is the same request.
    as_sent = job_kind.dump(params)
    if getattr(params, "seed", 0) is None:
        params.seed = secrets.randbelow(2**31)
    if webhook_url is not None:
        try:
            await run_in_threadpool(native.webhooks.check, str(webhook_url))
        except WebhookRefused as exc:
            raise auth.native_error(422, "invalid_webhook_url", f"webhook_url: {exc.message}") from exc
    inputs, digests = await _store_inputs(gw, task_id, sources, kind.fetch_when_run, named_face(params))
    record = TaskRecord(id=task_id, kind=job_kind.name, api=NATIVE_API, status=TaskStatus.PENDING,
                        message="Waiting in queue", params=job_kind.dump(params), inputs=inputs,
                        key_id=auth.current_key_id(), webhook_url=webhook_url, webhook_events=events,
                        metadata=metadata)
    return record, idempotency.body_hash(NATIVE_API, kind.name, as_sent, digests, webhook_url, events, metadata)


async def _store_inputs(gw: Gateway, task_id: str, sources: dict[str, FilePart | str], fetch_when_run: bool,
                        face: tuple = (None, None)) -> tuple[dict[str, str], dict[str, str]]:
    """Check and store the file inputs, download the URL ones (unless the runner will); (inputs, digests).

    A portrait's face is checked too (`face`: the face_index and face_box the request names)."""
    inputs: dict[str, str] = {}
    digests: dict[str, str] = {}
    try:
        for field, src in sources.items():
            key = task_key(task_id, "inputs", field)
            if isinstance(src, FilePart):
                if field == "image":
                    await run_in_threadpool(check_image, src, IMAGE_FORMATS, gw.settings.image_max_pixels)
                    await check_face(gw, src.path, *face)
                digests[field] = await run_in_threadpool(file_digest, src)
                inputs[field] = await store_input(gw, task_id, field, src)
                if field != "image":
                    await probe(gw, key, _MEDIA_KIND[field], f"{field} file {src.filename or field}")
            elif fetch_when_run:
                digests[field] = "url:" + src
            else:
                try:
                    http_url(src)
                except ValueError as exc:
                    raise auth.native_error(422, "invalid_input", f"{field}_url {exc}") from exc
                await _fetch(gw, src, key, field)
                inputs[field] = key
                digests[field] = "url:" + src
                if field == "image":
                    await _check_fetched_image(gw, key, IMAGE_FORMATS, face)
    except IntakeError as exc:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id))
        code = "media_unavailable" if exc.status == 503 else exc.reason if exc.status == 422 else "invalid_input"
        raise auth.native_error(exc.status, code, exc.message, exc.detail, headers=exc.headers) from exc
    except BaseException:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id))
        raise
    return inputs, digests
