"""What a live session's data channel asks for: text spoken by the face, and the EchOfU chat.

Messages are JSON (plain text means `say`):

- `{"say": "text"}`: the voice service speaks it (espeak-ng in the session's language) into the
  session; the answer is `{"event": "speaking", "seconds", "engine"}`;
- `{"ask": "question"}`: the chat model (TALKSERVE_GATEWAY_LLM_*, as `/chat_system`) answers and the
  face speaks the answer: `{"event": "answer", "question", "answer", "seconds"}`;
- `{"listen": "start"}` then `{"listen": "stop"}`: what the microphone said between the two is
  recognised by the voice service and asked as above (recognise, chat model, speak, face).

Failures answer `{"event": "error", "message"}` and the session goes on.
"""

from __future__ import annotations

import json
import tempfile
import wave
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from services.gateway import voice
from services.gateway.live_media import RATE
from services.gateway.rpc import VoiceClient
from talkserve.common.v1 import common_pb2
from talkserve.voice.v1 import voice_pb2

MAX_TEXT = 2000


def speak(gw, session, text: str) -> dict:
    """Text to speech with the voice service, queued into the session's audio (blocking)."""
    from libs.talkface.audio import load_audio

    session.said += 1
    key = f"live/{session.id}/said-{session.said}.wav"
    language = voice_pb2.LANGUAGE_MANDARIN if session.params.voice == "zh" else voice_pb2.LANGUAGE_ENGLISH
    reply = voice.call(gw, VoiceClient.synthesize, voice_pb2.SynthesizeRequest(
        text=text, language=language, output=common_pb2.ObjectRef(key=key)), timeout=30.0)
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        gw.store.get_file(key, tmp.name)
        samples = load_audio(tmp.name)
    gw.store.delete(key)
    session.clock.say(np.asarray(samples, np.float32))
    return {"event": "speaking", "seconds": round(float(reply.duration_seconds), 3), "engine": reply.engine}


def ask(gw, session, question: str) -> dict:
    """The chat model's answer to `question`, spoken by the face (blocking)."""
    from services.gateway.kinds.chat import ask_llm

    if not (gw.settings.llm_base_url and gw.settings.llm_model):
        raise ValueError("no chat model is configured (TALKSERVE_GATEWAY_LLM_BASE_URL and _MODEL)")
    answer = ask_llm(gw.settings, question)
    spoken = speak(gw, session, answer[:MAX_TEXT])
    return {"event": "answer", "question": question, "answer": answer, "seconds": spoken["seconds"]}


def recognise(gw, session, samples: np.ndarray) -> str:
    """What the microphone said, as text, by the voice service (blocking)."""
    if samples.size < RATE // 4:
        raise ValueError("nothing was heard: hold the button while you speak")
    key = f"live/{session.id}/heard-{session.said}.wav"
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        with wave.open(tmp.name, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        gw.store.put_file(key, tmp.name, content_type="audio/wav")
    try:
        heard = voice.call(gw, VoiceClient.recognize, voice_pb2.RecognizeRequest(
            audio=common_pb2.ObjectRef(key=key)), timeout=60.0)
    finally:
        gw.store.delete(key)
    if not heard.text.strip():
        raise ValueError(f"no words were recognised ({heard.engine})")
    return str(heard.text)


def _text(body: dict, name: str) -> str:
    text = str(body.get(name, "")).strip()
    if not text or len(text) > MAX_TEXT:
        raise ValueError(f"send {{\"{name}\": \"text\"}} with 1 to {MAX_TEXT} characters")
    return text


async def on_message(gw, session, channel, message: Any) -> None:
    """One data-channel message (see the module doc); the answer goes back on the channel."""
    try:
        body = json.loads(message) if isinstance(message, str) and message.startswith("{") else {"say": message}
        if "say" in body:
            answer = await run_in_threadpool(speak, gw, session, _text(body, "say"))
        elif "ask" in body:
            answer = await run_in_threadpool(ask, gw, session, _text(body, "ask"))
        elif body.get("listen") == "start":
            session.clock.record()
            answer = {"event": "listening"}
        elif body.get("listen") == "stop":
            question = await run_in_threadpool(recognise, gw, session, session.clock.recorded())
            answer = await run_in_threadpool(ask, gw, session, question)
        else:
            raise ValueError('send {"say": ...}, {"ask": ...} or {"listen": "start" | "stop"}')
    except Exception as exc:  # noqa: BLE001 - told to the client on its channel, the session goes on
        answer = {"event": "error", "message": _message(exc)}
    if channel.readyState == "open":
        channel.send(json.dumps(answer, ensure_ascii=False, default=str))


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)  # an ApiError of the voice service's calls
    if isinstance(body, dict):
        err = body.get("error")
        return str(body.get("message") or (err.get("message") if isinstance(err, dict) else err) or body)
    return str(exc)
