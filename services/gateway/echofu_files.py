"""The EchOfU files in the caller's space: listings, uploads, speakers, person models, results.

Every function takes the caller's `Space`; nothing here names a file outside it.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import urllib.parse
from datetime import datetime

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from libs.store.client import NotFound
from services.gateway import echofu_store as echofu
from services.gateway import voice
from services.gateway.context import Gateway
from services.gateway.echofu_http import (
    MB,
    fail,
    local_time,
    model_type_named,
    number,
    relative_path,
    safe_filename,
)
from services.gateway.errors import ApiError
from services.gateway.intake import IntakeError, probe, uploaded_form
from services.gateway.keys import ref
from services.gateway.responses import stream_object
from services.gateway.rpc import VoiceClient
from talkserve.media.v1 import media_pb2
from talkserve.voice.v1 import voice_pb2

RESULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def file_info(gw: Gateway, key: str, relative: str) -> dict:
    info = gw.store.stat(key)
    created = info.metadata.get("created")
    created_time = created if created else local_time(info.last_modified)
    filename = relative.rsplit("/", 1)[-1]
    return {
        "filename": filename, "size": info.size, "size_mb": round(info.size / MB, 2),
        "created_time": created_time, "modified_time": local_time(info.last_modified),
        "file_type": filename.rsplit(".", 1)[-1].upper() if "." in filename else "",
        "relative_path": relative,
    }


def list_folder(gw: Gateway, space: echofu.Space, folder: str, extensions: tuple[str, ...]) -> list[dict]:
    files = []
    prefix = space.static_key(folder)
    for key in gw.store.list_keys(prefix):
        name = key[len(prefix):]
        if "/" in name or not name.lower().endswith(extensions):
            continue
        try:
            files.append(file_info(gw, key, folder + name))
        except NotFound:
            continue  # deleted meanwhile
    files.sort(key=lambda f: f["modified_time"], reverse=True)
    return files


def free_name(gw: Gateway, space: echofu.Space, folder: str, filename: str) -> str:
    """`filename`, or `stem_1.ext`, `stem_2.ext`, ... when taken (in the caller's space)."""
    stem, ext = posixpath.splitext(filename)
    candidate, n = filename, 0
    while gw.store.exists(space.static_key(folder + candidate)):
        n += 1
        candidate = f"{stem}_{n}{ext}" if n < 50 else f"{stem}_{secrets.token_hex(4)}{ext}"
    return candidate


async def upload(request: Request, gw: Gateway, space: echofu.Space, field: str, extensions: tuple[str, ...],
                  limit: int, folder: str, kind: media_pb2.MediaKind, what: str) -> dict[str, str]:
    """Stream one file in, check its name and content, store it under `folder`."""
    try:
        async with uploaded_form(request, {field: limit}, default_limit=limit) as form:
            part = form.file(field)
            if part is None or not part.filename:
                raise fail(400, f"没有上传文件（字段名应为 {field}）")
            ext = posixpath.splitext(part.filename)[1].lower()
            if ext not in extensions:
                raise fail(400, f"不支持的文件格式 {ext or '(无扩展名)'}，支持: {', '.join(extensions)}")
            if part.size == 0:
                raise fail(400, "文件为空")
            staging = space.staging_key(ext)
            created = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            meta = {"original-name": urllib.parse.quote(part.filename), "created": created}
            await run_in_threadpool(gw.store.put_file, staging, str(part.path), part.content_type or None, meta)
    except IntakeError as exc:
        if exc.status == 413:
            raise fail(400, f"文件过大，最大 {limit // MB}MB") from exc
        raise fail(400, exc.message) from exc
    try:
        await probe(gw, staging, kind, what)
        filename = await run_in_threadpool(free_name, gw, space, folder, safe_filename(part.filename, what))
        await run_in_threadpool(gw.store.copy, staging, space.static_key(folder + filename))
    except IntakeError as exc:
        if exc.status == 503:
            raise ApiError(503, {"status": "error", "message": f"媒体服务暂不可用: {exc.message}"}, exc.headers) from exc
        raise fail(400 if exc.status < 500 else 500, f"文件无法解码: {exc.message}") from exc
    finally:
        await run_in_threadpool(gw.store.delete, staging)
    return {"filename": filename, "relative_path": folder + filename, "original_name": part.filename}


def load_speaker(gw: Gateway, space: echofu.Space, speaker_id: str) -> dict:
    if not echofu.valid_id(speaker_id):
        raise fail(400, f"非法的说话人 ID: {speaker_id}")
    try:
        return json.loads(gw.store.get_bytes(space.speaker_key(speaker_id)))
    except NotFound:
        raise fail(404, f"说话人特征不存在: {speaker_id}（请先用 /audio_clone 提取）") from None


def model_from_param(gw: Gateway, space: echofu.Space, model_name: str, model_param: str) -> tuple[str, str]:
    """(type, id) of an existing person model named by `models/<type>/<id>`; without one, the
    newest model of the type `model_name` names (of any type when it names none)."""
    param = (model_param or "").strip().replace("\\", "/").rstrip("/")
    wanted = model_type_named(model_name) if model_name else None
    if model_name and wanted is None:
        raise fail(400, f"不支持的模型类型: {model_name}（支持: {', '.join(echofu.MODEL_TYPES)}）")
    if not param:
        latest = latest_model(gw, space, wanted)
        if latest is None:
            raise fail(400, "缺少 model_param，且没有已训练的模型：请先调用 /model_training")
        return latest
    parts = [p for p in param.split("/") if p]
    if ".." in parts or "models" not in parts:
        raise fail(400, f"model_param 应为 models/<类型>/<模型名>: {model_param}")
    i = len(parts) - 1 - parts[::-1].index("models")
    if len(parts) - i != 3:
        raise fail(400, f"model_param 应为 models/<类型>/<模型名>: {model_param}")
    mtype, mid = model_type_named(parts[i + 1]), parts[i + 2]
    if mtype is None:
        raise fail(400, f"不支持的模型类型: {parts[i + 1]}（支持: {', '.join(echofu.MODEL_TYPES)}）")
    if not echofu.valid_id(mid) or not gw.store.exists(space.model_prefix(mtype, mid) + "model.json"):
        raise fail(404, f"模型不存在: {echofu.model_path(mtype, mid)}（请先在训练页面训练 {mtype} 模型）")
    return mtype, mid


def latest_model(gw: Gateway, space: echofu.Space, model_type: str | None = None) -> tuple[str, str] | None:
    models = [m for m in list_models(gw, space) if model_type in (None, m["type"])]
    newest = max(models, key=lambda m: m["created_time"]) if models else None
    return (newest["type"], newest["name"]) if newest else None


def list_models(gw: Gateway, space: echofu.Space) -> list[dict]:
    """Every finished person model of the caller, under the type it was trained as."""
    out = []
    for mtype in echofu.MODEL_TYPES:
        prefix = space.models_prefix(mtype)
        groups: dict[str, list[str]] = {}
        for key in gw.store.list_keys(prefix):
            rest = key[len(prefix):]
            if "/" in rest:
                groups.setdefault(rest.split("/", 1)[0], []).append(key)
        for mid, keys in sorted(groups.items()):
            marker = prefix + mid + "/model.json"
            if marker not in keys:
                continue  # still being written
            try:
                info = gw.store.stat(marker)
                meta = json.loads(gw.store.get_bytes(marker))
            except (NotFound, ValueError):
                continue
            engine = meta.get("engine") or echofu.PERSON_ENGINE
            description = f"{mtype} 模型 - 包含 {len(keys)} 个模型文件"
            if mtype != echofu.BUILTIN_TYPE:
                description += f"（由 {engine} 人物模型构建，非 {mtype} 原版）"
            out.append({
                "name": mid, "type": mtype, "path": echofu.model_path(mtype, mid), "model_files_count": len(keys),
                "created_time": meta.get("created_at") or local_time(info.last_modified),
                "description": description, "engine": engine, "available": True,
            })
    out.sort(key=lambda m: str(m["created_time"]), reverse=True)
    return out


def recording_profile(gw: Gateway, space: echofu.Space, path: str) -> tuple[str, dict]:
    """(documented path, voice profile) of a stored reference recording (the pages' `ref_audio`)."""
    rel = relative_path(path, (echofu.REF_VOICES, echofu.RES_VOICES, "static/audios/"), echofu.REF_VOICES)
    if not gw.store.exists(space.static_key(rel)):
        raise fail(404, f"参考音频不存在: {rel}")
    reply = voice.call(gw, VoiceClient.extract_profile, voice_pb2.ExtractProfileRequest(audio=ref(space.static_key(rel))))
    return rel, voice.profile_dict(reply.profile)


def voice_params(gw: Gateway, space: echofu.Space, fields: dict, model: tuple[str, str] | None) -> dict:
    """The voice a text is spoken in: a speaker's profile, else the voice of the reference recording
    (`ref_audio`, as the pages clone it), else the person model's own voice."""
    params: dict = {"pitch_semitones": number(fields, "pitch", -12, 12, 0.0)}
    speaker_id = (fields.get("speaker_id") or "").strip()
    recording = (fields.get("ref_audio") or "").strip()
    if speaker_id:
        params["profile"] = load_speaker(gw, space, speaker_id)["profile"]
        params["voice_source"] = f"speaker:{speaker_id}"
    elif recording:
        rel, params["profile"] = recording_profile(gw, space, recording)
        params["voice_source"] = f"ref_audio:{rel}"
    elif model is not None:
        try:
            params["profile"] = json.loads(gw.store.get_bytes(space.model_prefix(*model) + "voice_profile.json"))
            params["voice_source"] = "person_model"
        except (NotFound, ValueError):
            params["voice_source"] = "default"
    return params


def custom_params(text: str) -> tuple[dict, dict]:
    """`k=v,k=v` or one `k=v` a line (the training page's text box) -> (all of it, the part the
    built-in engine uses)."""
    given: dict = {}
    for item in filter(None, (p.strip() for p in re.split(r"[,\n]", text or ""))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(400, f"custom_params 格式应为 key=value,key=value: {item}")
        given[key.strip()] = value.strip()
    used = {}
    limits = {"max_seconds": (1, 3600, False), "base_seconds": (1, 60, False), "max_atlas_entries": (10, 5000, True)}
    for key, (lo, hi, integer) in limits.items():
        if key in given:
            used[key] = number(given, key, lo, hi, None, integer)
    return given, used


def stream_file(gw: Gateway, key: str, media_type: str, request: Request, missing: str):
    """Stream an object, honouring a single `Range: bytes=a-b` (video players seek with it)."""

    def out_of_range(size: int) -> JSONResponse:
        return JSONResponse({"status": "error", "message": "请求的范围无效"}, 416,
                            headers={"Content-Range": f"bytes */{size}"})

    try:
        return stream_object(gw, key, media_type, request.headers.get("range"), out_of_range)
    except NotFound:
        raise fail(404, missing) from None


def result_path(path: str, folders: dict[str, str], default: str | None) -> str:
    """A result's documented path from a request path; only flat names in talkserve's result folders."""
    if "\\" in path or "\x00" in path or path.startswith("/") or ".." in path.split("/"):
        raise fail(400, "非法路径")
    folder, _, name = path.rpartition("/")
    folder = folder + "/" if folder else ""
    if not folder and default is not None:
        folder = default
    if folder not in folders or not RESULT_NAME.match(name):
        raise fail(404, "文件不存在")
    return folder + name
