"""The EchOfU platform API (`echofu-platform-api.md`): uploads, lists, person models, speech, chat, status.

Answers keep the document's shapes: `{"status": "success", ...}` or `{"status": "error",
"message": ...}` with its HTTP codes, and paths in its `static/...` / `models/...` form, each
naming an object under `echofu/` in the store. Results say which engine made them. Long
work runs as tasks on voice replicas: /model_training answers at once with a task id, the
generation and chat endpoints wait for theirs (or answer at once with `async=1`), and
`/api/task-status/<id>` (`/api/train-status/<id>` for training) reports progress.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import posixpath
import re
import secrets
import unicodedata
import urllib.parse
from datetime import datetime, timezone

import grpc
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from libs.store.client import NotFound, StoreUnavailable
from libs.tasks import TaskNotFound, TaskRecord, TaskStatus, TaskExists
from services.gateway import auth
from services.gateway import echofu_jobs as J
from services.gateway.context import Gateway, GatewayDep
from services.gateway.dispatcher import QueueFull
from services.gateway.errors import STORE_RETRY_AFTER, ApiError
from services.gateway.faults import Fault, classify
from services.gateway.intake import IntakeError, probe, uploaded_form
from services.gateway.keys import ref, task_key
from services.gateway.limits import streams_uploads
from services.gateway.openapi import statuses
from talkserve.media.v1 import media_pb2
from talkserve.voice.v1 import voice_pb2

log = logging.getLogger(__name__)

router = APIRouter(tags=["EchOfU"])

AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".flac", ".ogg")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm")
MB = 1024 * 1024
_KINDS = {"person_train": "model_training", "person_generate": "video_generation", "chat": "chat_system"}
_STATES = {TaskStatus.PENDING: "pending", TaskStatus.QUEUED: "pending", TaskStatus.PROCESSING: "processing",
           TaskStatus.COMPLETED: "completed", TaskStatus.FAILED: "failed", TaskStatus.CANCELLED: "cancelled"}
_RESULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_HISTORY_TYPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TRUE = {"1", "true", "yes", "on"}
_round_robin = itertools.count()


async def _space() -> J.Space:
    # async: no thread hop; the caller is known from the API key middleware.
    return J.Space.of(auth.current_key_id())


# The caller's own EchOfU files: every path a client sends or receives is relative to it.
SpaceDep = Annotated[J.Space, Depends(_space)]


# -- answers -------------------------------------------------------------------------------------


def _ok(**body) -> dict:
    return {"status": "success", **body}


def _fail(status: int, message: str, **extra) -> ApiError:
    return ApiError(status, {"status": "error", "message": message, **extra})


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _form_doc(*names: str, files: tuple[str, ...] = (), multipart: bool = False) -> dict:
    """`openapi_extra` documenting a form body: text fields (all optional, as the document has
    them) or one required file field."""
    text = {"type": "string", "maxLength": 4096}
    if files:
        schema = {"type": "object", "required": list(files),
                  "properties": {f: {"type": "string", "format": "binary"} for f in files}}
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
    schema = {"type": "object", "properties": {name: dict(text) for name in names}}
    content = {"application/x-www-form-urlencoded": {"schema": schema}}
    if multipart:
        content["multipart/form-data"] = {"schema": schema}
    return {"requestBody": {"required": False, "content": content}}


_FILE_RESPONSES = {
    200: {"description": "the file", "content": {"video/mp4": {}, "audio/wav": {}}},
    206: {"description": "the requested byte range (Range: bytes=a-b)", "content": {"video/mp4": {}, "audio/wav": {}}},
    **statuses(404, 416, s400="the path is not allowed (.., absolute, backslash)"),
}


# -- forms and paths -----------------------------------------------------------------------------


async def _fields(request: Request) -> dict[str, str]:
    """Text fields of a urlencoded or multipart form (files in it are ignored)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            async with uploaded_form(request, {}, default_limit=MB) as form:
                return {k: v[-1] for k, v in form.fields.items()}
        except IntakeError as exc:
            raise _fail(400, f"表单无法解析: {exc.message}") from exc
    if ctype.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        return {k: str(v) for k, v in form.items()}
    if ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as exc:
            raise _fail(400, "JSON 无法解析") from exc
        if isinstance(body, dict):
            return {k: "" if v is None else str(v) for k, v in body.items()}
    return {}


def safe_filename(name: str, default_stem: str) -> str:
    """An ASCII file name of letters, digits, '.', '-' and '_' that keeps the extension."""
    name = posixpath.basename((name or "").replace("\\", "/"))
    stem, ext = posixpath.splitext(name)
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("._-")[:80]
    ext = re.sub(r"[^a-z0-9]", "", ext.lower())[:8]
    stem = stem or f"{default_stem}_{datetime.now().strftime('%Y%m%d_%H%M%S')}"
    return f"{stem}.{ext}" if ext else stem


def _relative(path: str, allowed: tuple[str, ...], default_folder: str) -> str:
    """A client's file path (relative, absolute or a bare name) as a documented `static/...` path.

    Only the part from the last `static/` on is used: it names an object in the store, never
    a file of this machine. Anything with `..` or outside `allowed` is refused.
    """
    text = (path or "").strip().replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any("\x00" in p for p in parts):
        raise _fail(400, f"非法路径: {path}")
    if "static" in parts:
        i = len(parts) - 1 - parts[::-1].index("static")
        rel = "/".join(parts[i:])
    elif len(parts) == 1:
        rel = default_folder + parts[0]
    else:
        rel = "/".join(parts)
    if not rel.startswith(allowed):
        raise _fail(400, f"路径不在允许的目录中: {path}（允许: {', '.join(allowed)}）")
    return rel


def _number(fields: dict, name: str, lo: float, hi: float, default: float | None, integer: bool = False):
    raw = (fields.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise _fail(400, f"{name} 必须是{'整数' if integer else '数字'}: {raw}") from None
    if not lo <= value <= hi:
        raise _fail(400, f"{name} 必须在 {lo:g} 到 {hi:g} 之间")
    return value


def _model_type(name: str) -> str | None:
    for t in J.MODEL_TYPES:
        if t.lower() == (name or "").strip().lower():
            return t
    return None


# -- store helpers -------------------------------------------------------------------------------


def _file_info(gw: Gateway, key: str, relative: str) -> dict:
    info = gw.store.stat(key)
    created = info.metadata.get("created")
    created_time = created if created else _time(info.last_modified)
    filename = relative.rsplit("/", 1)[-1]
    return {
        "filename": filename, "size": info.size, "size_mb": round(info.size / MB, 2),
        "created_time": created_time, "modified_time": _time(info.last_modified),
        "file_type": filename.rsplit(".", 1)[-1].upper() if "." in filename else "",
        "relative_path": relative,
    }


def _list_folder(gw: Gateway, space: J.Space, folder: str, extensions: tuple[str, ...]) -> list[dict]:
    files = []
    prefix = space.static_key(folder)
    for key in gw.store.list_keys(prefix):
        name = key[len(prefix):]
        if "/" in name or not name.lower().endswith(extensions):
            continue
        try:
            files.append(_file_info(gw, key, folder + name))
        except NotFound:
            continue  # deleted meanwhile
    files.sort(key=lambda f: f["modified_time"], reverse=True)
    return files


def _free_name(gw: Gateway, space: J.Space, folder: str, filename: str) -> str:
    """`filename`, or `stem_1.ext`, `stem_2.ext`, ... when taken (in the caller's space)."""
    stem, ext = posixpath.splitext(filename)
    candidate, n = filename, 0
    while gw.store.exists(space.static_key(folder + candidate)):
        n += 1
        candidate = f"{stem}_{n}{ext}" if n < 50 else f"{stem}_{secrets.token_hex(4)}{ext}"
    return candidate


async def _upload(request: Request, gw: Gateway, space: J.Space, field: str, extensions: tuple[str, ...],
                  limit: int, folder: str, kind: int, what: str) -> dict:
    """Stream one file in, check its name and content, store it under `folder`."""
    try:
        async with uploaded_form(request, {field: limit}, default_limit=limit) as form:
            part = form.file(field)
            if part is None or not part.filename:
                raise _fail(400, f"没有上传文件（字段名应为 {field}）")
            ext = posixpath.splitext(part.filename)[1].lower()
            if ext not in extensions:
                raise _fail(400, f"不支持的文件格式 {ext or '(无扩展名)'}，支持: {', '.join(extensions)}")
            if part.size == 0:
                raise _fail(400, "文件为空")
            staging = space.staging_key(ext)
            created = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            meta = {"original-name": urllib.parse.quote(part.filename), "created": created}
            await run_in_threadpool(gw.store.put_file, staging, str(part.path), part.content_type or None, meta)
    except IntakeError as exc:
        if exc.status == 413:
            raise _fail(400, f"文件过大，最大 {limit // MB}MB") from exc
        raise _fail(400, exc.message) from exc
    try:
        await probe(gw, staging, kind, what)
        filename = await run_in_threadpool(_free_name, gw, space, folder, safe_filename(part.filename, what))
        await run_in_threadpool(gw.store.copy, staging, space.static_key(folder + filename))
    except IntakeError as exc:
        if exc.status == 503:
            raise ApiError(503, {"status": "error", "message": f"媒体服务暂不可用: {exc.message}"}, exc.headers) from exc
        raise _fail(400 if exc.status < 500 else 500, f"文件无法解码: {exc.message}") from exc
    finally:
        await run_in_threadpool(gw.store.delete, staging)
    return {"filename": filename, "relative_path": folder + filename, "original_name": part.filename}


def _voice_call(gw: Gateway, method: str, request, timeout: float = 120.0):
    """A unary VoiceService call on the next voice replica that answers."""
    replicas = gw.clients.replicas.get(J.VOICE_KIND) or []
    if not replicas:
        raise _fail(503, "没有配置语音服务 (TALKSERVE_GATEWAY_VOICE_TARGETS)")
    start = next(_round_robin)
    last = None
    for i in range(len(replicas)):
        replica = replicas[(start + i) % len(replicas)]
        try:
            return getattr(replica.model, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.NOT_FOUND):
                raise _fail(400, err.details() or err.code().name) from err
            last = err
    raise ApiError(503, {"status": "error", "message": f"语音服务暂不可用: {last.code().name if last else 'unknown'}"},
                   {"Retry-After": "10"})


def _profile_dict(msg: voice_pb2.VoiceProfile) -> dict:
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        out[f.name] = value if isinstance(value, (int, float, str, bool)) else list(value)
    return out


def _speaker(gw: Gateway, space: J.Space, speaker_id: str) -> dict:
    if not J.valid_id(speaker_id):
        raise _fail(400, f"非法的说话人 ID: {speaker_id}")
    try:
        return json.loads(gw.store.get_bytes(space.speaker_key(speaker_id)))
    except NotFound:
        raise _fail(404, f"说话人特征不存在: {speaker_id}（请先用 /audio_clone 提取）") from None


def _model_from_param(gw: Gateway, space: J.Space, model_name: str, model_param: str) -> tuple[str, str]:
    """(type, id) of an existing, usable person model named by `models/<type>/<id>`."""
    param = (model_param or "").strip().replace("\\", "/").rstrip("/")
    wanted = _model_type(model_name) if model_name else None
    if model_name and wanted is None:
        raise _fail(400, f"不支持的模型类型: {model_name}（支持: {', '.join(J.MODEL_TYPES)}）")
    if not param:
        if wanted in J.UNAVAILABLE_TYPES:
            raise _fail(400, f"{wanted} 不可用: {J.UNAVAILABLE_TYPES[wanted]}")
        latest = _latest_model(gw, space)
        if latest is None:
            raise _fail(400, "缺少 model_param，且没有已训练的模型：请先调用 /model_training")
        return J.BUILTIN_TYPE, latest
    parts = [p for p in param.split("/") if p]
    if ".." in parts or "models" not in parts:
        raise _fail(400, f"model_param 应为 models/<类型>/<模型名>: {model_param}")
    i = len(parts) - 1 - parts[::-1].index("models")
    if len(parts) - i != 3:
        raise _fail(400, f"model_param 应为 models/<类型>/<模型名>: {model_param}")
    mtype, mid = _model_type(parts[i + 1]), parts[i + 2]
    if mtype is None:
        raise _fail(400, f"不支持的模型类型: {parts[i + 1]}（支持: {', '.join(J.MODEL_TYPES)}）")
    if mtype in J.UNAVAILABLE_TYPES:
        raise _fail(400, f"{mtype} 不可用: {J.UNAVAILABLE_TYPES[mtype]}")
    if not J.valid_id(mid) or not gw.store.exists(space.model_prefix(mtype, mid) + "model.json"):
        raise _fail(404, f"模型不存在: {J.model_path(mtype, mid)}")
    return mtype, mid


def _latest_model(gw: Gateway, space: J.Space) -> str | None:
    models = [m for m in _list_models(gw, space) if m["type"] == J.BUILTIN_TYPE]
    return max(models, key=lambda m: m["created_time"])["name"] if models else None


def _list_models(gw: Gateway, space: J.Space) -> list[dict]:
    out = []
    for mtype in J.MODEL_TYPES:
        prefix = space.models_prefix(mtype)
        groups: dict[str, list[str]] = {}
        for key in gw.store.list_keys(prefix):
            rest = key[len(prefix):]
            if "/" in rest:
                groups.setdefault(rest.split("/", 1)[0], []).append(key)
        for mid, keys in sorted(groups.items()):
            marker = prefix + mid + "/model.json"
            if mtype == J.BUILTIN_TYPE and marker not in keys:
                continue  # still being written
            try:
                info = gw.store.stat(marker if marker in keys else keys[0])
                meta = json.loads(gw.store.get_bytes(marker)) if marker in keys else {}
            except (NotFound, ValueError):
                continue
            out.append({
                "name": mid, "type": mtype, "path": J.model_path(mtype, mid), "model_files_count": len(keys),
                "created_time": meta.get("created_at") or _time(info.last_modified),
                "description": f"{mtype} 模型 - 包含 {len(keys)} 个模型文件",
                "engine": meta.get("engine"), "available": mtype not in J.UNAVAILABLE_TYPES,
            })
    out.sort(key=lambda m: m["created_time"], reverse=True)
    return out


# -- tasks ---------------------------------------------------------------------------------------


async def _submit(gw: Gateway, record: TaskRecord) -> None:
    try:
        await run_in_threadpool(gw.tasks.create, record)
    except TaskExists:
        raise _fail(500, "任务 ID 冲突，请重试") from None
    try:
        gw.dispatcher.submit(record)
    except QueueFull as exc:
        await run_in_threadpool(gw.tasks.delete, record.id)
        raise ApiError(503, {"status": "error", "message": f"任务队列已满，请稍后重试 ({exc})"},
                       {"Retry-After": "30"}) from exc


async def _wait(gw: Gateway, task_id: str) -> TaskRecord:
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
            raise _fail(500, f"任务仍在运行，请用 /api/task-status/{task_id} 查询", task_id=task_id)
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 1.5)


def _failed(rec: TaskRecord, what: str) -> ApiError:
    message = rec.error or rec.message or "未知错误"
    client_fault = rec.error_code in ("bad_audio", "bad_video", "no_face", "invalid_request", "no_speech",
                                      "input_missing", "llm_rejected")
    return _fail(400 if client_fault else 500, f"{what}失败: {message}", task_id=rec.id,
                 error_code=rec.error_code)


def _async_requested(request: Request, fields: dict) -> bool:
    return (request.query_params.get("async") or fields.get("async") or "").lower() in _TRUE


def _task_status(gw: Gateway, task_id: str) -> dict:
    try:
        rec, _ = gw.tasks.get(task_id)
    except TaskNotFound:
        raise _fail(404, f"任务不存在: {task_id}") from None
    if rec.api != J.API or not auth.visible(rec):
        raise _fail(404, f"任务不存在: {task_id}")
    body = _ok(task_id=rec.id, type=_KINDS.get(rec.kind, rec.kind), state=_STATES[rec.status],
               progress=round(rec.progress, 4), progress_percent=round(rec.progress * 100, 1),
               message=rec.message, engine=rec.engine, created_at=_time(rec.created_at),
               updated_at=_time(rec.updated_at))
    if rec.status == TaskStatus.PENDING:
        position = gw.dispatcher.position(rec.id, rec.kind)
        if position is not None:
            body["queue_position"] = position
    for name in ("model_path", "video_path"):
        if name in rec.params:
            body[name] = rec.params[name]
    if rec.status == TaskStatus.COMPLETED:
        body["result"] = getattr(rec, "result", None) or {}
    if rec.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        body["error"] = rec.error or rec.message
        body["error_code"] = rec.error_code
    return body


# -- 1-4: uploads and lists ----------------------------------------------------------------------


async def _upload_documented(request: Request, gw: Gateway, space: J.Space, field: str, extensions,
                             max_bytes: int, folder: str, kind: int, failed: str, done: str) -> JSONResponse:
    """An upload endpoint's answer, with its documented message prefix on a server error."""
    try:
        stored = await _upload(request, gw, space, field, extensions, max_bytes, folder, kind, field)
    except ApiError as exc:
        if exc.status >= 500:
            exc.body["message"] = failed + exc.body["message"]
        raise
    return _ok(message=done, **stored)


def _listing(gw: Gateway, space: J.Space, folder: str, extensions) -> JSONResponse:
    """A folder listing in the documented shape; on failure the lists are there, empty."""
    try:
        files = _list_folder(gw, space, folder, extensions)
    except StoreUnavailable:
        return JSONResponse({"status": "error", "message": "存储暂不可用，请稍后重试", "files": [], "total_count": 0},
                            503, headers={"Retry-After": STORE_RETRY_AFTER})
    except Exception as exc:  # noqa: BLE001 - the documented error shape carries empty lists
        log.exception("listing %s failed", folder)
        return JSONResponse({"status": "error", "message": str(exc), "files": [], "total_count": 0}, 500)
    return _ok(files=files, total_count=len(files))


@router.post("/api/upload-reference-audio", responses=statuses(400, 500, 503), openapi_extra=_form_doc(files=("audio",)))
@streams_uploads
async def upload_reference_audio(request: Request, gw: GatewayDep, space: SpaceDep):
    """Upload a reference recording (wav, mp3, m4a, flac, ogg) to static/voices/ref_voices/."""
    return await _upload_documented(request, gw, space, "audio", AUDIO_EXTENSIONS, gw.settings.audio_max_bytes,
                                    J.REF_VOICES, media_pb2.MEDIA_KIND_AUDIO, "音频上传失败: ", "音频上传成功")


@router.get("/api/reference-audios", responses=statuses(500))
def reference_audios(gw: GatewayDep, space: SpaceDep):
    """Reference recordings, newest first."""
    return _listing(gw, space, J.REF_VOICES, AUDIO_EXTENSIONS)


@router.post("/api/upload-training-video", responses=statuses(400, 500, 503), openapi_extra=_form_doc(files=("video",)))
@streams_uploads
async def upload_training_video(request: Request, gw: GatewayDep, space: SpaceDep):
    """Upload a training video (mp4, avi, mov, mkv, flv, webm; at most 200 MB) to static/videos/ref_videos/."""
    return await _upload_documented(request, gw, space, "video", VIDEO_EXTENSIONS, gw.settings.echofu_video_max_bytes,
                                    J.REF_VIDEOS, media_pb2.MEDIA_KIND_VIDEO, "视频上传失败: ", "视频上传成功")


@router.get("/api/training-videos", responses=statuses(500))
def training_videos(gw: GatewayDep, space: SpaceDep):
    """Training videos, newest first."""
    return _listing(gw, space, J.REF_VIDEOS, VIDEO_EXTENSIONS)


# -- 5-7: models and speakers --------------------------------------------------------------------


@router.get("/api/available-models")
def available_models(gw: GatewayDep, space: SpaceDep):
    """Person models in the store, and which model types this server can train and run."""
    models = _list_models(gw, space)
    types = [{"type": J.BUILTIN_TYPE, "available": True, "engine": "talkface-person-1",
              "description": "Video Rewrite 口型图集：从人物视频中索引真实口型，按新语音的口型重配视频"}]
    types += [{"type": t, "available": False, "reason": reason} for t, reason in J.UNAVAILABLE_TYPES.items()]
    return _ok(models=models, total_count=len(models), model_types=types)


@router.get("/api/model-details/{model_type}/{model_name}",
            responses=statuses(404, s400="unknown model type or malformed model name"))
def model_details(model_type: str, model_name: str, gw: GatewayDep, space: SpaceDep):
    """Files of one model (or of a whole model type with `root`)."""
    mtype = _model_type(model_type)
    if mtype is None:
        raise _fail(400, f"不支持的模型类型: {model_type}（支持: {', '.join(J.MODEL_TYPES)}）")
    if model_name == "root":
        prefix, path = space.models_prefix(mtype), f"models/{mtype}"
    elif J.valid_id(model_name):
        prefix, path = space.model_prefix(mtype, model_name), J.model_path(mtype, model_name)
    else:
        raise _fail(400, f"非法的模型名: {model_name}")
    files = []
    for key in gw.store.list_keys(prefix):
        try:
            files.append(_file_info(gw, key, path + "/" + key[len(prefix):]))
        except NotFound:
            continue
    if not files:
        raise _fail(404, f"模型目录不存在: {path}")
    total = sum(f["size"] for f in files)
    return _ok(model_details={
        "name": model_name, "type": mtype, "path": path, "total_files": len(files),
        "total_size_mb": round(total / MB, 2), "created_time": min(f["created_time"] for f in files),
        "modified_time": max(f["modified_time"] for f in files), "files": files,
        "available": mtype not in J.UNAVAILABLE_TYPES,
    })


@router.get("/api/cloned-audios")
def cloned_audios(gw: GatewayDep, space: SpaceDep):
    """Speakers whose voice profile was extracted by /audio_clone."""
    audios = []
    for key in gw.store.list_keys(space.speakers_prefix):
        try:
            spk = json.loads(gw.store.get_bytes(key))
        except (NotFound, ValueError):
            continue
        profile = spk.get("profile") or {}
        audios.append({"id": spk.get("id"), "name": spk.get("name"), "created_at": spk.get("created_at"),
                       "reference_audio": spk.get("reference_audio"), "status": "已提取特征",
                       "engine": spk.get("engine"), "f0_median_hz": profile.get("f0_median_hz"),
                       "syllables_per_second": profile.get("syllables_per_second")})
    audios.sort(key=lambda a: a.get("created_at") or "", reverse=True)
    return _ok(audios=audios, total_count=len(audios))


# -- 8: the chat's recording ---------------------------------------------------------------------


@router.post("/save_audio", responses=statuses(400, 500, 503), openapi_extra=_form_doc(files=("audio",)))
@streams_uploads
async def save_audio(request: Request, gw: GatewayDep, space: SpaceDep):
    """Save the browser's recording (any common audio format) as the chat's input.wav (16 kHz mono)."""
    limit = gw.settings.audio_max_bytes
    staging = space.staging_key()
    try:
        async with uploaded_form(request, {"audio": limit}, default_limit=limit) as form:
            part = form.file("audio")
            if part is None or part.size == 0:
                raise _fail(400, "没有上传音频（字段名应为 audio）")
            await run_in_threadpool(gw.store.put_file, staging, str(part.path), part.content_type or None)
    except IntakeError as exc:
        raise _fail(400, f"文件过大，最大 {limit // MB}MB" if exc.status == 413 else exc.message) from exc
    try:
        await run_in_threadpool(gw.clients.media.NormalizeAudio, media_pb2.NormalizeAudioRequest(
            source=ref(staging), destination=ref(space.input_wav), max_seconds=300), timeout=120,
            wait_for_ready=True)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise _fail(400, f"音频无法解码: {err.details()}") from err
        if classify(err) is Fault.OUTAGE:
            raise ApiError(503, {"status": "error", "message": f"音频保存失败: 媒体服务暂不可用 ({err.code().name})"},
                           {"Retry-After": "10"}) from err
        raise _fail(500, f"音频保存失败: {err.code().name}") from err
    finally:
        await run_in_threadpool(gw.store.delete, staging)
    return _ok(message="音频保存成功", path=J.INPUT_WAV_DOCUMENTED)


# -- 9-10: person models -------------------------------------------------------------------------


def _voice_params(gw: Gateway, space: J.Space, fields: dict, model: tuple[str, str] | None) -> dict:
    """The voice a text is spoken in: a speaker's profile, else the person model's own voice."""
    params: dict = {"pitch_semitones": _number(fields, "pitch", -12, 12, 0.0)}
    speaker_id = (fields.get("speaker_id") or "").strip()
    if speaker_id:
        params["profile"] = _speaker(gw, space, speaker_id)["profile"]
        params["voice_source"] = f"speaker:{speaker_id}"
    elif model is not None:
        try:
            params["profile"] = json.loads(gw.store.get_bytes(space.model_prefix(*model) + "voice_profile.json"))
            params["voice_source"] = "person_model"
        except (NotFound, ValueError):
            params["voice_source"] = "default"
    return params


@router.post("/video_generation", responses=statuses(400, 404, 500, 503), openapi_extra=_form_doc(
    "model_name", "model_param", "ref_audio", "gpu_choice", "target_text", "speaker_id", "pitch", "async",
    multipart=True))
async def video_generation(request: Request, gw: GatewayDep, space: SpaceDep):
    """Make the person of a model say a reference audio or a text (spoken by espeak-ng first)."""
    fields = await _fields(request)
    model = await run_in_threadpool(_model_from_param, gw, space, fields.get("model_name", ""),
                                    fields.get("model_param", ""))
    text = (fields.get("target_text") or "").strip()
    params = {"model_type": model[0], "model_id": model[1], "model_prefix": space.model_prefix(*model),
              "model_path": J.model_path(*model), "gpu_choice": fields.get("gpu_choice", ""),
              "speaker_id": fields.get("speaker_id", ""), "model_name": fields.get("model_name", "")}
    inputs = {}
    if text:
        if len(text) > 2000:
            raise _fail(400, "target_text 过长（最多 2000 字）")
        params["target_text"] = text
        params.update(await run_in_threadpool(_voice_params, gw, space, fields, model))
    elif (fields.get("ref_audio") or "").strip():
        rel = _relative(fields["ref_audio"], (J.REF_VOICES, J.RES_VOICES, "static/audios/"), J.REF_VOICES)
        if not await run_in_threadpool(gw.store.exists, space.static_key(rel)):
            raise _fail(404, f"参考音频不存在: {rel}")
        params["ref_audio"] = rel
        inputs["audio"] = space.static_key(rel)
    else:
        raise _fail(400, "需要 ref_audio 或 target_text")
    task_id = J.new_id("gen")
    params["video_path"] = f"{J.RES_VIDEOS}{model[1]}_{task_id}.mp4"
    record = TaskRecord(id=task_id, kind="person_generate", api=J.API, status=TaskStatus.PENDING,
                        message="Task queued", params=params, inputs=inputs, key_id=auth.current_key_id())
    await _submit(gw, record)
    if _async_requested(request, fields):
        return _ok(message="视频生成任务已提交", task_id=task_id, video_path=params["video_path"],
                   status_url=f"/api/task-status/{task_id}")
    rec = await _wait(gw, task_id)
    if rec.status != TaskStatus.COMPLETED:
        raise _failed(rec, "视频生成")
    return _ok(video_path=params["video_path"], message="视频生成成功", task_id=task_id, engine=rec.engine,
               result=getattr(rec, "result", None) or {})


def _custom_params(text: str) -> tuple[dict, dict]:
    """`k=v,k=v` -> (all of it, the part the built-in engine uses)."""
    given: dict = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _fail(400, f"custom_params 格式应为 key=value,key=value: {item}")
        given[key.strip()] = value.strip()
    used = {}
    limits = {"max_seconds": (1, 3600, False), "base_seconds": (1, 60, False), "max_atlas_entries": (10, 5000, True)}
    for key, (lo, hi, integer) in limits.items():
        if key in given:
            used[key] = _number(given, key, lo, hi, None, integer)
    return given, used


@router.post("/model_training", responses=statuses(400, 404, 503), openapi_extra=_form_doc(
    "model_choice", "ref_video", "gpu_choice", "epoch", "custom_params"))
async def model_training(request: Request, gw: GatewayDep, space: SpaceDep):
    """Start building a person model from a training video; answers at once with the task id."""
    fields = await _fields(request)
    choice = (fields.get("model_choice") or "").strip()
    mtype = _model_type(choice) if choice else J.BUILTIN_TYPE
    if mtype is None:
        raise _fail(400, f"不支持的模型类型: {choice}（支持: {', '.join(J.MODEL_TYPES)}）")
    if mtype in J.UNAVAILABLE_TYPES:
        raise _fail(400, f"{mtype} 不可用: {J.UNAVAILABLE_TYPES[mtype]}")
    if not (fields.get("ref_video") or "").strip():
        raise _fail(400, "缺少 ref_video")
    rel = _relative(fields["ref_video"], (J.REF_VIDEOS,), J.REF_VIDEOS)
    if not await run_in_threadpool(gw.store.exists, space.static_key(rel)):
        raise _fail(404, f"训练视频不存在: {rel}")
    epoch = _number(fields, "epoch", 1, 1_000_000, None, integer=True)
    given, used = _custom_params(fields.get("custom_params", ""))
    task_id = J.new_id("train")
    params = {"model_type": mtype, "model_id": task_id, "model_prefix": space.model_prefix(mtype, task_id),
              "model_path": J.model_path(mtype, task_id), "ref_video": rel, "epoch": epoch,
              "gpu_choice": fields.get("gpu_choice", ""), "custom_params": given, "engine_params": used}
    record = TaskRecord(id=task_id, kind="person_train", api=J.API, status=TaskStatus.PENDING,
                        message="Task queued", params=params, inputs={"video": space.static_key(rel)},
                        key_id=auth.current_key_id())
    await _submit(gw, record)
    return _ok(message="模型训练开始", task_id=task_id, model_path=params["model_path"], engine="talkface-person-1",
               status_url=f"/api/train-status/{task_id}")


@router.get("/api/train-status/{task_id}", responses=statuses(404))
def train_status(task_id: str, gw: GatewayDep):
    """State, progress (0-1) and message of a training task; `result` once the model is built."""
    return _task_status(gw, task_id)


@router.get("/api/task-status/{task_id}", responses=statuses(404))
def task_status(task_id: str, gw: GatewayDep):
    """State, progress (0-1) and message of any EchOfU task (training, generation, chat)."""
    return _task_status(gw, task_id)


# -- 11: voice profiles and speech ---------------------------------------------------------------


@router.post("/audio_clone", responses=statuses(400, 404, 503), openapi_extra=_form_doc(
    "original_audio_path", "audio_id", "target_audio_id", "gen_audio_id", "generate_text", "pitch"))
async def audio_clone(request: Request, gw: GatewayDep, space: SpaceDep):
    """Extract a speaker's voice profile (clone mode) or speak a text with one (generate mode)."""
    fields = await _fields(request)
    text = (fields.get("generate_text") or "").strip()
    if text:
        return await _generate_speech(gw, space, fields, text)
    source = (fields.get("original_audio_path") or "").strip()
    if not source:
        raise _fail(400, "需要 original_audio_path（克隆模式）或 generate_text（生成模式）")
    rel = _relative(source, (J.REF_VOICES, J.RES_VOICES, "static/audios/"), J.REF_VOICES)
    if not await run_in_threadpool(gw.store.exists, space.static_key(rel)):
        raise _fail(404, f"参考音频不存在: {rel}")
    speaker_id = (fields.get("target_audio_id") or "").strip() or safe_filename(rel.rsplit("/", 1)[-1], "spk").rsplit(".", 1)[0]
    if not J.valid_id(speaker_id):
        raise _fail(400, f"非法的 target_audio_id: {speaker_id}（只允许字母、数字、- 和 _）")
    reply = await run_in_threadpool(_voice_call, gw, "ExtractProfile",
                                    voice_pb2.ExtractProfileRequest(audio=ref(space.static_key(rel))))
    profile = _profile_dict(reply.profile)
    speaker = {"id": speaker_id, "name": speaker_id, "created_at": J.now_text(), "reference_audio": rel,
               "status": "已提取特征", "engine": reply.engine, "profile": profile}
    await run_in_threadpool(gw.store.put_bytes, space.speaker_key(speaker_id),
                            json.dumps(speaker, ensure_ascii=False).encode(), "application/json")
    await run_in_threadpool(J.append_history, gw.store, space, "audio_clone", {
        "time": speaker["created_at"], "mode": "clone", "speaker_id": speaker_id, "reference_audio": rel,
        "engine": reply.engine})
    return _ok(message="说话人特征提取完成，可以用于后续音频生成", speaker_id=speaker_id, engine=reply.engine,
               profile={k: profile[k] for k in ("f0_median_hz", "f0_p10_hz", "f0_p90_hz", "syllables_per_second",
                                                "spectral_tilt_db_per_octave")})


async def _generate_speech(gw: Gateway, space: J.Space, fields: dict, text: str) -> dict:
    if len(text) > 2000:
        raise _fail(400, "generate_text 过长（最多 2000 字）")
    speaker_id = (fields.get("audio_id") or "").strip()
    request = voice_pb2.SynthesizeRequest(text=text, pitch_semitones=_number(fields, "pitch", -12, 12, 0.0))
    if speaker_id:
        spk = await run_in_threadpool(_speaker, gw, space, speaker_id)
        request.profile.CopyFrom(voice_pb2.VoiceProfile(**spk["profile"]))
    name = (fields.get("gen_audio_id") or "").strip()
    stem = safe_filename(name, "tts").rsplit(".", 1)[0] if name else f"{speaker_id or 'tts'}_{J.new_id('gen')}"
    filename = await run_in_threadpool(_free_name, gw, space, J.RES_VOICES, f"{stem}.wav")
    rel = J.RES_VOICES + filename
    request.output.CopyFrom(ref(space.static_key(rel)))
    reply = await run_in_threadpool(_voice_call, gw, "Synthesize", request)
    await run_in_threadpool(J.append_history, gw.store, space, "audio_clone", {
        "time": J.now_text(), "mode": "generate", "speaker_id": speaker_id or None, "text": text,
        "cloned_audio_path": rel, "engine": reply.engine, "voice": reply.settings.voice})
    return _ok(message="音频生成成功", cloned_audio_path=rel, engine=reply.engine,
               duration_seconds=round(reply.duration_seconds, 3),
               settings={"voice": reply.settings.voice, "pitch": reply.settings.pitch,
                         "rate_wpm": reply.settings.rate_wpm, "eq_db": list(reply.settings.eq_db)})


# -- 12: chat ------------------------------------------------------------------------------------


@router.post("/chat_system", responses=statuses(400, 404, 500, s503="no chat model is configured, the queue is "
                                                                       "full or a service is unavailable"),
             openapi_extra=_form_doc("model_name", "model_param", "voice_clone", "api_choice", "speaker_id", "pitch",
                                     "async"))
async def chat_system(request: Request, gw: GatewayDep, space: SpaceDep):
    """Recognise the saved question, ask the chat model, and answer with a talking video."""
    s = gw.settings
    if not s.llm_base_url or not s.llm_model:
        raise _fail(503, "未配置对话模型：请设置 TALKSERVE_GATEWAY_LLM_BASE_URL（OpenAI 兼容接口，例如 "
                         "https://api.openai.com/v1）、TALKSERVE_GATEWAY_LLM_MODEL 和 TALKSERVE_GATEWAY_LLM_API_KEY")
    fields = await _fields(request)
    if not await run_in_threadpool(gw.store.exists, space.input_wav):
        raise _fail(400, "没有找到录音：请先调用 /save_audio 上传问题录音")
    model = await run_in_threadpool(_model_from_param, gw, space, fields.get("model_name", ""),
                                    fields.get("model_param", ""))
    voice_fields = dict(fields)
    clone = (fields.get("voice_clone") or "").strip()
    if not voice_fields.get("speaker_id") and clone and clone.lower() not in _TRUE | {"0", "false", "no", "off"}:
        voice_fields["speaker_id"] = clone  # a speaker id given in voice_clone
    task_id = J.new_id("chat")
    params = {"model_type": model[0], "model_id": model[1], "model_prefix": space.model_prefix(*model),
              "model_path": J.model_path(*model), "api_choice": fields.get("api_choice", ""),
              "voice_clone": clone, "video_path": f"{J.RES_VIDEOS}chat_{task_id}.mp4",
              **await run_in_threadpool(_voice_params, gw, space, voice_fields, model)}
    # The task keeps its own copy: a new recording must not change a question being answered.
    question = task_key(task_id, "inputs", "question.wav")
    await run_in_threadpool(gw.store.copy, space.input_wav, question)
    record = TaskRecord(id=task_id, kind="chat", api=J.API, status=TaskStatus.PENDING, message="Task queued",
                        params=params, inputs={"question": question}, key_id=auth.current_key_id())
    await _submit(gw, record)
    if _async_requested(request, fields):
        return _ok(message="对话任务已提交", task_id=task_id, status_url=f"/api/task-status/{task_id}")
    rec = await _wait(gw, task_id)
    if rec.status != TaskStatus.COMPLETED:
        raise _failed(rec, "对话生成")
    result = getattr(rec, "result", None) or {}
    return _ok(response="/" + params["video_path"], message="对话生成成功", task_id=task_id, engine=rec.engine,
               question=result.get("question"), asr_engine=result.get("asr_engine"), answer=result.get("answer"),
               tts_voice=result.get("tts_voice"), tts_rate_wpm=result.get("tts_rate_wpm"))


# -- 13-15: status, history, files ---------------------------------------------------------------


def _gpus() -> list[dict]:
    """Load, memory (MiB) and temperature of each NVIDIA GPU through NVML; [] without one."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    gpus = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                load = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                load = None
            try:
                temp = int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError:
                temp = None
            model = pynvml.nvmlDeviceGetName(handle)
            gpus.append({"name": f"GPU{i}", "load": load, "memory_used": round(mem.used / MB),
                         "memory_total": round(mem.total / MB), "temperature": temp,
                         "model": model.decode() if isinstance(model, bytes) else model})
    except pynvml.NVMLError as exc:
        log.warning("NVML query failed: %s", exc)
    finally:
        pynvml.nvmlShutdown()
    return gpus


def system_status() -> dict:
    """CPU, memory and disk of this gateway host, and its GPUs."""
    import psutil

    memory = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(interval=0.2),
        "memory_percent": memory.percent,
        "memory_used": memory.used,
        "memory_total": memory.total,
        "disk_percent": psutil.disk_usage("/").percent,
        "gpus": _gpus(),
        "timestamp": datetime.now().isoformat(timespec="seconds"),
    }


@router.get("/api/status")
async def status():
    """CPU, memory and disk use of the server, and its GPUs (NVML) when it has any."""
    return await run_in_threadpool(system_status)


@router.get("/api/history/{history_type}", responses=statuses(s400="malformed history type"))
def history(history_type: str, gw: GatewayDep, space: SpaceDep):
    """The history list of one kind (video_generation, model_training, audio_clone, chat_system); [] when none."""
    if not _HISTORY_TYPE.match(history_type):
        raise _fail(400, f"非法的历史类型: {history_type}")
    return J.read_history(gw.store, space, history_type)


def _stream(gw: Gateway, key: str, media_type: str, request: Request, missing: str):
    """Stream an object, honouring a single `Range: bytes=a-b` (video players seek with it)."""
    try:
        info = gw.store.stat(key)
    except NotFound:
        raise _fail(404, missing) from None
    size = info.size
    headers = {"Accept-Ranges": "bytes"}
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", "").strip())
    if match and (match.group(1) or match.group(2)) and size > 0:
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        else:
            start, end = max(0, size - int(match.group(2))), size - 1
        if start >= size or start > end:
            return JSONResponse({"status": "error", "message": "请求的范围无效"}, 416,
                                headers={"Content-Range": f"bytes */{size}"})
        length = end - start + 1
        stream = gw.store.iter_object(key, offset=start, length=length)
        headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(length)})
        return StreamingResponse(stream, 206, media_type=media_type, headers=headers)
    headers["Content-Length"] = str(size)
    return StreamingResponse(gw.store.iter_object(key), media_type=media_type, headers=headers)


def _result_path(path: str, folders: dict[str, str], default: str | None) -> str:
    """A result's documented path from a request path; only flat names in talkserve's result folders."""
    if "\\" in path or "\x00" in path or path.startswith("/") or ".." in path.split("/"):
        raise _fail(400, "非法路径")
    folder, _, name = path.rpartition("/")
    folder = folder + "/" if folder else ""
    if not folder and default is not None:
        folder = default
    if folder not in folders or not _RESULT_NAME.match(name):
        raise _fail(404, "文件不存在")
    return folder + name


@router.get("/video/{filename:path}", responses=_FILE_RESPONSES)
def video(filename: str, request: Request, gw: GatewayDep, space: SpaceDep):
    """A generated video: `/video/<name>.mp4` or `/video/static/videos/res_videos/<name>.mp4`."""
    try:
        rel = _result_path(filename, {J.RES_VIDEOS: "video/mp4"}, J.RES_VIDEOS)
    except ApiError as exc:
        if exc.status == 404:
            exc.body["message"] = "视频文件不存在"
        raise
    return _stream(gw, space.static_key(rel), "video/mp4", request, "视频文件不存在")


@router.get("/static/{path:path}", responses=_FILE_RESPONSES)
def static(path: str, request: Request, gw: GatewayDep, space: SpaceDep):
    """Results under static/videos/res_videos/ and static/voices/res_voices/ (nothing else is served)."""
    folders = {J.RES_VIDEOS[len("static/"):]: "video/mp4", J.RES_VOICES[len("static/"):]: "audio/wav"}
    rel = _result_path(path, folders, None)
    return _stream(gw, space.static_key("static/" + rel), folders[rel.rsplit("/", 1)[0] + "/"], request, "文件不存在")
