"""EchOfU's speech chat (`/chat_system`): recognise the question, ask the chat model, and answer
with the person model saying the answer.
"""

from __future__ import annotations

import httpx

from libs.tasks import TaskStatus
from services.gateway.echofu_store import Space, append_history, now_text
from services.gateway.faults import Retryable, TaskFailed
from services.gateway.keys import ref, task_key
from services.gateway.kinds.base import JobKind
from services.gateway.kinds.person import (
    VOICE_SERVICE,
    PersonModel,
    Voice,
    finish,
    render_person,
    synthesize,
    voice_call,
)
from services.gateway.pipeline import Pipeline, Run
from services.gateway.rpc import VoiceClient
from services.gateway.settings import GatewaySettings
from talkserve.voice.v1 import voice_pb2


class ChatParams(PersonModel, Voice):
    """What a chat task was asked for (the question is its input `question`)."""

    video_path: str  # documented path of the answer's video
    api_choice: str = ""
    voice_clone: str = ""


def ask_llm(settings: GatewaySettings, question: str) -> str:
    """One answer from the configured OpenAI-compatible chat endpoint."""
    url = settings.llm_base_url.rstrip("/") + "/chat/completions"
    headers = {}
    key = settings.llm_api_key.get_secret_value()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": settings.llm_model, "messages": [
        {"role": "system", "content": settings.llm_system_prompt},
        {"role": "user", "content": question}]}
    try:
        reply = httpx.post(url, json=body, headers=headers, timeout=settings.llm_timeout_seconds)
    except httpx.HTTPError as exc:
        raise Retryable(f"chat endpoint unreachable: {type(exc).__name__}") from exc
    if reply.status_code >= 500 or reply.status_code == 429:
        raise Retryable(f"chat endpoint answered HTTP {reply.status_code}")
    if reply.status_code >= 400:
        raise TaskFailed(f"对话模型拒绝了请求 (HTTP {reply.status_code}): {reply.text[:200]}", "llm_rejected")
    try:
        answer = reply.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TaskFailed("对话模型的回答格式无法识别 (expected an OpenAI chat completion)", "llm_bad_reply") from exc
    answer = (answer or "").strip()
    if not answer:
        raise TaskFailed("对话模型返回了空回答", "llm_empty")
    return str(answer)


def run(pipeline: Pipeline, run: Run, p: ChatParams) -> None:
    """Recognise the question, ask the chat model, speak the answer, render the person saying it."""
    rec = run.record
    tid = rec.id
    state = dict(rec.result or {})
    pipeline.set(tid, 0.01, "Recognising the question...", status=TaskStatus.PROCESSING)
    if "question" not in state:
        heard = voice_call(run, run.client(VoiceClient).recognize,
                           voice_pb2.RecognizeRequest(audio=ref(rec.inputs["question"])))
        if not heard.text.strip():
            raise TaskFailed(f"没有识别到语音内容，请重新录音（英语识别器 {heard.engine}）", "no_speech")
        state["question"] = heard.text
        state["asr_engine"] = heard.engine
        pipeline.set(tid, 0.05, "Asking the chat model...", result=dict(state))
    if "answer" not in state:
        # A retried task does not ask again: the answer it got is in the record.
        state["answer"] = ask_llm(pipeline.settings, state["question"])
        state["llm_model"] = pipeline.settings.llm_model
        pipeline.set(tid, 0.1, "Speaking the answer...", result=dict(state))
    speech = task_key(tid, "outputs", "answer.wav")
    tts = synthesize(run, state["answer"], p, speech)
    state["tts_engine"] = tts.engine
    state["tts_voice"] = tts.settings.voice
    state["tts_rate_wpm"] = tts.settings.rate_wpm
    out, result = render_person(pipeline, run, p, p.video_path, speech, 0.15, 0.92)
    state.update({"response": "/" + p.video_path, "video_path": p.video_path, "frames": result.frames,
                  "duration_seconds": result.duration_seconds})
    finish(pipeline, tid, "对话生成成功", {"video": out, "speech": speech}, result.engine, state)
    append_history(pipeline.store, Space.of(rec.key_id), "chat_system", {
        "task_id": tid, "time": now_text(), "question": state["question"], "answer": state["answer"],
        "video_path": p.video_path, "model_path": p.model_path, "engine": result.engine,
        "status": "completed"})


KIND = JobKind(name="chat", service=VOICE_SERVICE, params=ChatParams, run=run, sparse=True)
