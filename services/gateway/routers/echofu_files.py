"""The EchOfU platform API's files (`echofu-platform-api.md` sections 1-8 and 13-15): uploads,
lists, person models, speakers, the chat's recording, the server's load, history, results.

Answers keep the document's shapes (echofu_http.py); every path names an object in the
caller's space. The person-model, speech and chat endpoints are in echofu_jobs.py.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from libs.store.client import NotFound, StoreUnavailable
from services.gateway import echofu_store as echofu
from services.gateway import system
from services.gateway.context import Gateway, GatewayDep
from services.gateway.echofu_files import (
    file_info,
    list_folder,
    list_models,
    result_path,
    stream_file,
    upload,
)
from services.gateway.echofu_http import (
    AUDIO_EXTENSIONS,
    FILE_RESPONSES,
    MB,
    VIDEO_EXTENSIONS,
    SpaceDep,
    fail,
    form_doc,
    model_type_named,
    ok,
)
from services.gateway.errors import STORE_RETRY_AFTER, ApiError
from services.gateway.faults import http_status
from services.gateway.intake import IntakeError, uploaded_form
from services.gateway.keys import ref
from services.gateway.limits import streams_uploads
from services.gateway.openapi import statuses
from talkserve.media.v1 import media_pb2

log = logging.getLogger(__name__)

router = APIRouter(tags=["EchOfU"])

_HISTORY_TYPE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- 1-4: uploads and lists ----------------------------------------------------------------------


async def _upload_documented(request: Request, gw: Gateway, space: echofu.Space, field: str, extensions,
                             max_bytes: int, folder: str, kind: media_pb2.MediaKind, failed: str,
                             done: str) -> dict[str, Any]:
    """An upload endpoint's answer, with its documented message prefix on a server error."""
    try:
        stored = await upload(request, gw, space, field, extensions, max_bytes, folder, kind, field)
    except ApiError as exc:
        if exc.status >= 500:
            exc.body["message"] = failed + exc.body["message"]
        raise
    return ok(message=done, **stored)


def _listing(gw: Gateway, space: echofu.Space, folder: str, extensions: tuple[str, ...]) -> JSONResponse | dict[str, Any]:
    """A folder listing in the documented shape; on failure the lists are there, empty."""
    try:
        files = list_folder(gw, space, folder, extensions)
    except StoreUnavailable:
        return JSONResponse({"status": "error", "message": "存储暂不可用，请稍后重试", "files": [], "total_count": 0},
                            503, headers={"Retry-After": STORE_RETRY_AFTER})
    except Exception as exc:  # noqa: BLE001 - the documented error shape carries empty lists
        log.exception("listing %s failed", folder)
        return JSONResponse({"status": "error", "message": str(exc), "files": [], "total_count": 0}, 500)
    return ok(files=files, total_count=len(files))


@router.post("/api/upload-reference-audio", responses=statuses(400, 500, 503), openapi_extra=form_doc(files=("audio",)))
@streams_uploads
async def upload_reference_audio(request: Request, gw: GatewayDep, space: SpaceDep):
    """Upload a reference recording (wav, mp3, m4a, flac, ogg) to static/voices/ref_voices/."""
    return await _upload_documented(request, gw, space, "audio", AUDIO_EXTENSIONS, gw.settings.audio_max_bytes,
                                    echofu.REF_VOICES, media_pb2.MEDIA_KIND_AUDIO, "音频上传失败: ", "音频上传成功")


@router.get("/api/reference-audios", responses=statuses(500))
def reference_audios(gw: GatewayDep, space: SpaceDep):
    """Reference recordings, newest first."""
    return _listing(gw, space, echofu.REF_VOICES, AUDIO_EXTENSIONS)


@router.post("/api/upload-training-video", responses=statuses(400, 500, 503), openapi_extra=form_doc(files=("video",)))
@streams_uploads
async def upload_training_video(request: Request, gw: GatewayDep, space: SpaceDep):
    """Upload a training video (mp4, avi, mov, mkv, flv, webm; at most 200 MB) to static/videos/ref_videos/."""
    return await _upload_documented(request, gw, space, "video", VIDEO_EXTENSIONS, gw.settings.echofu_video_max_bytes,
                                    echofu.REF_VIDEOS, media_pb2.MEDIA_KIND_VIDEO, "视频上传失败: ", "视频上传成功")


@router.get("/api/training-videos", responses=statuses(500))
def training_videos(gw: GatewayDep, space: SpaceDep):
    """Training videos, newest first."""
    return _listing(gw, space, echofu.REF_VIDEOS, VIDEO_EXTENSIONS)


# -- 5-7: models and speakers --------------------------------------------------------------------


@router.get("/api/available-models")
def available_models(gw: GatewayDep, space: SpaceDep):
    """Person models in the store, and the model types this server trains and runs (all by talkface's
    person model; a model is listed under the type it was trained as, the type the pages filter by)."""
    models = list_models(gw, space)
    types = [{"type": echofu.BUILTIN_TYPE, "available": True, "engine": echofu.PERSON_ENGINE,
              "description": "Video Rewrite 口型图集：从人物视频中索引真实口型，按新语音的口型重配视频"}]
    types += [{"type": t, "available": True, "engine": echofu.PERSON_ENGINE, "note": note}
              for t, note in echofu.UPSTREAM_TYPES.items()]
    return ok(models=models, total_count=len(models), model_types=types)


@router.get("/api/model-details/{model_type}/{model_name}",
            responses=statuses(404, s400="unknown model type or malformed model name"))
def model_details(model_type: str, model_name: str, gw: GatewayDep, space: SpaceDep):
    """Files of one model (or of a whole model type with `root`)."""
    mtype = model_type_named(model_type)
    if mtype is None:
        raise fail(400, f"不支持的模型类型: {model_type}（支持: {', '.join(echofu.MODEL_TYPES)}）")
    if model_name == "root":
        prefix, path = space.models_prefix(mtype), f"models/{mtype}"
    elif echofu.valid_id(model_name):
        prefix, path = space.model_prefix(mtype, model_name), echofu.model_path(mtype, model_name)
    else:
        raise fail(400, f"非法的模型名: {model_name}")
    files = []
    for key in gw.store.list_keys(prefix):
        try:
            files.append(file_info(gw, key, path + "/" + key[len(prefix):]))
        except NotFound:
            continue
    if not files:
        raise fail(404, f"模型目录不存在: {path}")
    total = sum(f["size"] for f in files)
    return ok(model_details={
        "name": model_name, "type": mtype, "path": path, "total_files": len(files),
        "total_size_mb": round(total / MB, 2), "created_time": min(f["created_time"] for f in files),
        "modified_time": max(f["modified_time"] for f in files), "files": files,
        "available": True,
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
    return ok(audios=audios, total_count=len(audios))


# -- 8: the chat's recording ---------------------------------------------------------------------


@router.post("/save_audio", responses=statuses(400, 500, 503), openapi_extra=form_doc(files=("audio",)))
@streams_uploads
async def save_audio(request: Request, gw: GatewayDep, space: SpaceDep):
    """Save the browser's recording (any common audio format) as the chat's input.wav (16 kHz mono)."""
    limit = gw.settings.audio_max_bytes
    staging = space.staging_key()
    try:
        async with uploaded_form(request, {"audio": limit}, default_limit=limit) as form:
            part = form.file("audio")
            if part is None or part.size == 0:
                raise fail(400, "没有上传音频（字段名应为 audio）")
            await run_in_threadpool(gw.store.put_file, staging, str(part.path), part.content_type or None)
    except IntakeError as exc:
        raise fail(400, f"文件过大，最大 {limit // MB}MB" if exc.status == 413 else exc.message) from exc
    try:
        await run_in_threadpool(gw.clients.media.normalize_audio, media_pb2.NormalizeAudioRequest(
            source=ref(staging), destination=ref(space.input_wav), max_seconds=300), 120, wait_for_ready=True)
    except grpc.RpcError as err:
        status = http_status(err, failed=500)
        if status == 400:
            raise fail(400, f"音频无法解码: {err.details()}") from err
        if status == 503:
            raise ApiError(503, {"status": "error", "message": f"音频保存失败: 媒体服务暂不可用 ({err.code().name})"},
                           {"Retry-After": "10"}) from err
        raise fail(500, f"音频保存失败: {err.code().name}") from err
    finally:
        await run_in_threadpool(gw.store.delete, staging)
    return ok(message="音频保存成功", path=echofu.INPUT_WAV_DOCUMENTED)


# -- 13-15: status, history, files ---------------------------------------------------------------


@router.get("/api/status")
async def status():
    """CPU, memory and disk use of the server, and its GPUs (NVML) when it has any."""
    return await run_in_threadpool(system.system_status)


@router.get("/api/history/{history_type}", responses=statuses(s400="malformed history type"))
def history(history_type: str, gw: GatewayDep, space: SpaceDep):
    """The history list of one kind (video_generation, model_training, audio_clone, chat_system); [] when none."""
    if not _HISTORY_TYPE.match(history_type):
        raise fail(400, f"非法的历史类型: {history_type}")
    return echofu.read_history(gw.store, space, history_type)


@router.get("/video/{filename:path}", responses=FILE_RESPONSES)
def video(filename: str, request: Request, gw: GatewayDep, space: SpaceDep):
    """A generated video: `/video/<name>.mp4` or `/video/static/videos/res_videos/<name>.mp4`."""
    try:
        rel = result_path(filename, {echofu.RES_VIDEOS: "video/mp4"}, echofu.RES_VIDEOS)
    except ApiError as exc:
        if exc.status == 404:
            exc.body["message"] = "视频文件不存在"
        raise
    return stream_file(gw, space.static_key(rel), "video/mp4", request, "视频文件不存在")


_AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".flac": "audio/flac",
                ".ogg": "audio/ogg"}


@router.get("/static/{path:path}", responses=FILE_RESPONSES)
def static(path: str, request: Request, gw: GatewayDep, space: SpaceDep):
    """The caller's reference voices (static/voices/ref_voices/, the pages play them), generated voices
    (static/voices/res_voices/) and videos (static/videos/res_videos/); nothing else is served."""
    videos, voices = echofu.RES_VIDEOS[len("static/"):], (echofu.REF_VOICES[len("static/"):],
                                                          echofu.RES_VOICES[len("static/"):])
    rel = result_path(path, dict.fromkeys((videos, *voices), ""), None)
    folder, name = rel.rsplit("/", 1)[0] + "/", rel.rsplit("/", 1)[1]
    media_type = "video/mp4" if folder == videos else _AUDIO_TYPES.get(name[name.rfind("."):].lower())
    if media_type is None:
        raise fail(404, "文件不存在")
    return stream_file(gw, space.static_key("static/" + rel), media_type, request, "文件不存在")
