"""The EchOfU platform API's person models, speech and chat (`echofu-platform-api.md` sections
9-12): training, video generation, voice profiles and speech, the speech chat, task status.

Long work runs as tasks on voice replicas (kinds/person_*.py, kinds/chat.py): /model_training
answers at once with a task id, the generation and chat endpoints wait for theirs (or answer
at once with `async=1`), and `/api/task-status/<id>` (`/api/train-status/<id>` for
training) reports progress.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from libs.tasks import TaskRecord, TaskStatus
from services.gateway import auth, voice
from services.gateway import echofu_store as echofu
from services.gateway.context import Gateway, GatewayDep
from services.gateway.echofu_files import (
    custom_params,
    free_name,
    load_speaker,
    model_from_param,
    recording_profile,
    voice_params,
)
from services.gateway.echofu_http import (
    TRUE,
    SpaceDep,
    fail,
    form_doc,
    form_fields,
    model_type_named,
    number,
    ok,
    relative_path,
    safe_filename,
)
from services.gateway.echofu_tasks import (
    async_requested,
    failed,
    submit,
    task_status_body,
    wait,
)
from services.gateway.keys import ref, task_key
from services.gateway.kinds import chat, person_generate, person_train
from services.gateway.openapi import statuses
from services.gateway.rpc import VoiceClient
from talkserve.voice.v1 import voice_pb2

router = APIRouter(tags=["EchOfU"])


# -- 9-10: person models -------------------------------------------------------------------------


@router.post("/video_generation", responses=statuses(400, 404, 500, 503), openapi_extra=form_doc(
    "model_name", "model_param", "ref_audio", "gpu_choice", "target_text", "speaker_id", "pitch", "pitch_quality",
    "async", multipart=True))
async def video_generation(request: Request, gw: GatewayDep, space: SpaceDep):
    """Make the person of a model say a reference audio or a text (spoken by espeak-ng first)."""
    fields = await form_fields(request)
    model = await run_in_threadpool(model_from_param, gw, space, fields.get("model_name", ""),
                                    fields.get("model_param", ""))
    text = (fields.get("target_text") or "").strip()
    params: dict[str, Any] = {
        "model_type": model[0], "model_id": model[1], "model_prefix": space.model_prefix(*model),
        "model_path": echofu.model_path(*model), "gpu_choice": fields.get("gpu_choice", ""),
        "speaker_id": fields.get("speaker_id", ""), "model_name": fields.get("model_name", "")}
    inputs = {}
    if text:
        if len(text) > 2000:
            raise fail(400, "target_text 过长（最多 2000 字）")
        params["target_text"] = text
        params.update(await run_in_threadpool(voice_params, gw, space, fields, model))
    elif (fields.get("ref_audio") or "").strip():
        rel = relative_path(fields["ref_audio"], (echofu.REF_VOICES, echofu.RES_VOICES, "static/audios/"), echofu.REF_VOICES)
        if not await run_in_threadpool(gw.store.exists, space.static_key(rel)):
            raise fail(404, f"参考音频不存在: {rel}")
        params["ref_audio"] = rel
        inputs["audio"] = space.static_key(rel)
    else:
        raise fail(400, "需要 ref_audio 或 target_text")
    task_id = echofu.new_id("gen")
    params["video_path"] = f"{echofu.RES_VIDEOS}{model[1]}_{task_id}.mp4"
    kind = person_generate.KIND
    record = TaskRecord(id=task_id, kind=kind.name, api=echofu.API, status=TaskStatus.PENDING, message="Task queued",
                        params=kind.dump(person_generate.GenerateParams(**params)), inputs=inputs,
                        key_id=auth.current_key_id())
    await submit(gw, record)
    if async_requested(request, fields):
        return ok(message="视频生成任务已提交", task_id=task_id, video_path=params["video_path"],
                   status_url=f"/api/task-status/{task_id}")
    rec = await wait(gw, task_id)
    if rec.status != TaskStatus.COMPLETED:
        raise failed(rec, "视频生成")
    return ok(video_path=params["video_path"], message="视频生成成功", task_id=task_id, engine=rec.engine,
               result=rec.result or {})


@router.post("/model_training", responses=statuses(400, 404, 503), openapi_extra=form_doc(
    "model_choice", "ref_video", "gpu_choice", "epoch", "custom_params", multipart=True))
async def model_training(request: Request, gw: GatewayDep, space: SpaceDep):
    """Start building a person model from a training video; answers at once with the task id.

    Every model type (talkface-person, and the pages' SyncTalk and ER-NeRF) is built by
    talkface's person model; the model is listed under the type asked for."""
    fields = await form_fields(request)
    choice = (fields.get("model_choice") or "").strip()
    mtype = model_type_named(choice) if choice else echofu.BUILTIN_TYPE
    if mtype is None:
        raise fail(400, f"不支持的模型类型: {choice}（支持: {', '.join(echofu.MODEL_TYPES)}）")
    if not (fields.get("ref_video") or "").strip():
        raise fail(400, "缺少 ref_video")
    rel = relative_path(fields["ref_video"], (echofu.REF_VIDEOS,), echofu.REF_VIDEOS)
    if not await run_in_threadpool(gw.store.exists, space.static_key(rel)):
        raise fail(404, f"训练视频不存在: {rel}")
    epoch = number(fields, "epoch", 1, 1_000_000, None, integer=True)
    given, used = custom_params(fields.get("custom_params", ""))
    task_id = echofu.new_id("train")
    params = {"model_type": mtype, "model_id": task_id, "model_prefix": space.model_prefix(mtype, task_id),
              "model_path": echofu.model_path(mtype, task_id), "ref_video": rel, "epoch": epoch,
              "gpu_choice": fields.get("gpu_choice", ""), "custom_params": given, "engine_params": used}
    kind = person_train.KIND
    record = TaskRecord(id=task_id, kind=kind.name, api=echofu.API, status=TaskStatus.PENDING, message="Task queued",
                        params=kind.dump(person_train.TrainParams(**params)), inputs={"video": space.static_key(rel)},
                        key_id=auth.current_key_id())
    await submit(gw, record)
    return ok(message="模型训练开始", task_id=task_id, model_type=mtype, model_path=params["model_path"],
               engine=echofu.PERSON_ENGINE, status_url=f"/api/train-status/{task_id}")


@router.get("/api/train-status/{task_id}", responses=statuses(404))
def train_status(task_id: str, gw: GatewayDep):
    """State, progress (0-1) and message of a training task; `result` once the model is built."""
    return task_status_body(gw, task_id)


@router.get("/api/task-status/{task_id}", responses=statuses(404))
def task_status(task_id: str, gw: GatewayDep):
    """State, progress (0-1) and message of any EchOfU task (training, generation, chat)."""
    return task_status_body(gw, task_id)


# -- 11: voice profiles and speech ---------------------------------------------------------------


@router.post("/audio_clone", responses=statuses(400, 404, 503), openapi_extra=form_doc(
    "original_audio_path", "ref_audio_path", "audio_id", "target_audio_id", "gen_audio_id", "output_filename",
    "generate_text", "pitch", multipart=True))
async def audio_clone(request: Request, gw: GatewayDep, space: SpaceDep):
    """Extract a speaker's voice profile (clone mode), or speak a text (generate mode) in a speaker's
    voice (`audio_id`) or in the voice of a reference recording (`ref_audio_path`, as the page sends it)."""
    fields = await form_fields(request)
    text = (fields.get("generate_text") or "").strip()
    if text:
        return await _generate_speech(gw, space, fields, text)
    source = (fields.get("original_audio_path") or fields.get("ref_audio_path") or "").strip()
    if not source:
        raise fail(400, "需要 original_audio_path（克隆模式）或 generate_text（生成模式）")
    rel = relative_path(source, (echofu.REF_VOICES, echofu.RES_VOICES, "static/audios/"), echofu.REF_VOICES)
    if not await run_in_threadpool(gw.store.exists, space.static_key(rel)):
        raise fail(404, f"参考音频不存在: {rel}")
    speaker_id = (fields.get("target_audio_id") or "").strip() or safe_filename(rel.rsplit("/", 1)[-1], "spk").rsplit(".", 1)[0]
    if not echofu.valid_id(speaker_id):
        raise fail(400, f"非法的 target_audio_id: {speaker_id}（只允许字母、数字、- 和 _）")
    reply = await run_in_threadpool(voice.call, gw, VoiceClient.extract_profile,
                                    voice_pb2.ExtractProfileRequest(audio=ref(space.static_key(rel))))
    profile = voice.profile_dict(reply.profile)
    speaker = {"id": speaker_id, "name": speaker_id, "created_at": echofu.now_text(), "reference_audio": rel,
               "status": "已提取特征", "engine": reply.engine, "profile": profile}
    await run_in_threadpool(gw.store.put_bytes, space.speaker_key(speaker_id),
                            json.dumps(speaker, ensure_ascii=False).encode(), "application/json")
    await run_in_threadpool(echofu.append_history, gw.store, space, "audio_clone", {
        "time": speaker["created_at"], "mode": "clone", "speaker_id": speaker_id, "reference_audio": rel,
        "engine": reply.engine})
    return ok(message="说话人特征提取完成，可以用于后续音频生成", speaker_id=speaker_id, engine=reply.engine,
               profile={k: profile[k] for k in ("f0_median_hz", "f0_p10_hz", "f0_p90_hz", "syllables_per_second",
                                                "spectral_tilt_db_per_octave")})


async def _generate_speech(gw: Gateway, space: echofu.Space, fields: dict[str, str], text: str) -> dict[str, Any]:
    started = time.monotonic()
    if len(text) > 2000:
        raise fail(400, "generate_text 过长（最多 2000 字）")
    speaker_id = (fields.get("audio_id") or "").strip()
    recording = (fields.get("ref_audio_path") or "").strip()
    request = voice_pb2.SynthesizeRequest(text=text, pitch_semitones=number(fields, "pitch", -12, 12, 0.0))
    reference = None
    if speaker_id:
        spk = await run_in_threadpool(load_speaker, gw, space, speaker_id)
        request.profile.CopyFrom(voice_pb2.VoiceProfile(**spk["profile"]))
    elif recording:
        reference, profile = await run_in_threadpool(recording_profile, gw, space, recording)
        request.profile.CopyFrom(voice_pb2.VoiceProfile(**profile))
    name = (fields.get("gen_audio_id") or fields.get("output_filename") or "").strip()
    stem = safe_filename(name, "tts").rsplit(".", 1)[0] if name else f"{speaker_id or 'tts'}_{echofu.new_id('gen')}"
    filename = await run_in_threadpool(free_name, gw, space, echofu.RES_VOICES, f"{stem}.wav")
    rel = echofu.RES_VOICES + filename
    request.output.CopyFrom(ref(space.static_key(rel)))
    reply = await run_in_threadpool(voice.call, gw, VoiceClient.synthesize, request)
    await run_in_threadpool(echofu.append_history, gw.store, space, "audio_clone", {
        "time": echofu.now_text(), "mode": "generate", "speaker_id": speaker_id or None,
        "reference_audio": reference, "text": text, "cloned_audio_path": rel, "engine": reply.engine,
        "voice": reply.settings.voice})
    return ok(message="音频生成成功", cloned_audio_path=rel, engine=reply.engine,
               generation_time=round(time.monotonic() - started, 3), reference_audio=reference,
               duration_seconds=round(reply.duration_seconds, 3),
               settings={"voice": reply.settings.voice, "pitch": reply.settings.pitch,
                         "rate_wpm": reply.settings.rate_wpm, "eq_db": list(reply.settings.eq_db)})


# -- 12: chat ------------------------------------------------------------------------------------


@router.post("/chat_system", responses=statuses(400, 404, 500, s503="no chat model is configured, the queue is "
                                                                       "full or a service is unavailable"),
             openapi_extra=form_doc("model_name", "model_param", "ref_audio", "voice_clone", "api_choice", "speaker_id",
                                     "pitch", "async", multipart=True))
async def chat_system(request: Request, gw: GatewayDep, space: SpaceDep):
    """Recognise the saved question, ask the chat model, and answer with a talking video (spoken in the
    voice of `ref_audio` or `speaker_id` when given)."""
    s = gw.settings
    if not s.llm_base_url or not s.llm_model:
        raise fail(503, "未配置对话模型：请设置 TALKSERVE_GATEWAY_LLM_BASE_URL（OpenAI 兼容接口，例如 "
                         "https://api.openai.com/v1）、TALKSERVE_GATEWAY_LLM_MODEL 和 TALKSERVE_GATEWAY_LLM_API_KEY")
    fields = await form_fields(request)
    if not await run_in_threadpool(gw.store.exists, space.input_wav):
        raise fail(400, "没有找到录音：请先调用 /save_audio 上传问题录音")
    model = await run_in_threadpool(model_from_param, gw, space, fields.get("model_name", ""),
                                    fields.get("model_param", ""))
    voice_fields = dict(fields)
    clone = (fields.get("voice_clone") or "").strip()
    if not voice_fields.get("speaker_id") and clone and clone.lower() not in TRUE | {"0", "false", "no", "off"}:
        voice_fields["speaker_id"] = clone  # a speaker id given in voice_clone
    task_id = echofu.new_id("chat")
    params = {"model_type": model[0], "model_id": model[1], "model_prefix": space.model_prefix(*model),
              "model_path": echofu.model_path(*model), "api_choice": fields.get("api_choice", ""),
              "voice_clone": clone, "video_path": f"{echofu.RES_VIDEOS}chat_{task_id}.mp4",
              **await run_in_threadpool(voice_params, gw, space, voice_fields, model)}
    # The task keeps its own copy: a new recording must not change a question being answered.
    question = task_key(task_id, "inputs", "question.wav")
    await run_in_threadpool(gw.store.copy, space.input_wav, question)
    kind = chat.KIND
    record = TaskRecord(id=task_id, kind=kind.name, api=echofu.API, status=TaskStatus.PENDING, message="Task queued",
                        params=kind.dump(chat.ChatParams(**params)), inputs={"question": question},
                        key_id=auth.current_key_id())
    await submit(gw, record)
    if async_requested(request, fields):
        return ok(message="对话任务已提交", task_id=task_id, status_url=f"/api/task-status/{task_id}")
    rec = await wait(gw, task_id)
    if rec.status != TaskStatus.COMPLETED:
        raise failed(rec, "对话生成")
    result = rec.result or {}
    # `response` as the document has it; `video_path` is what the chat page plays (a URL path).
    return ok(response="/" + params["video_path"], video_path="/" + params["video_path"], message="对话生成成功",
               task_id=task_id, engine=rec.engine, voice_source=params.get("voice_source"),
               question=result.get("question"), asr_engine=result.get("asr_engine"), answer=result.get("answer"),
               tts_voice=result.get("tts_voice"), tts_rate_wpm=result.get("tts_rate_wpm"))
