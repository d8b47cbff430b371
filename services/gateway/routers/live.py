"""Live sessions over WebRTC (`/v1/live`): a portrait that talks while the voice is still arriving.

`POST /v1/live` takes a multipart form with the browser's SDP offer (`sdp`), the portrait
(`image`) and the session's settings, and answers with the SDP answer once the session is
running on a replica; the face and its sound come back as a video and an audio track, the
browser's microphone goes in as its audio track, and text sent on a data channel is spoken
into the session. `DELETE /v1/live/{id}` ends a session, `GET /v1/live/{id}` describes it,
`GET /v1/live/ice` gives the ICE servers (STUN/TURN) a browser should use. Keys, rate limits
and error bodies are the native API's. This module speaks HTTP only (live_sessions.py bridges).
"""

from __future__ import annotations

import asyncio
import io
import pathlib
import tempfile
from typing import Any, Literal

import grpc
from fastapi import APIRouter, Request
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from libs.grpcutil.errors import error_code_of
from services.gateway import auth
from services.gateway.context import GatewayDep
from services.gateway.echofu_store import Space, valid_id
from services.gateway.errors import ApiError
from services.gateway.limits import streams_uploads
from services.gateway.live_chat import on_message
from services.gateway.live_media import AudioClock, FaceTrack, VoiceTrack
from services.gateway.live_sessions import (
    LiveParams,
    NoLiveSlot,
    Session,
    Sessions,
    close,
    listen,
    pump,
    start_call,
    tick,
)
from services.gateway.openapi import statuses

router = APIRouter(prefix="/v1/live", tags=["Live"])


class LiveForm(BaseModel):
    """The settings of a session (form fields beside `sdp` and `image`)."""

    width: int = Field(512, ge=64, le=1024, description="video width in pixels")
    height: int = Field(512, ge=64, le=1024, description="video height in pixels")
    fps: int = Field(25, ge=5, le=30, description="frames per second")
    emotion: Literal["neutral", "happy", "sad", "surprised", "angry", "disgusted", "fear", "contempt"] = "neutral"
    emo_scale: float = Field(0.0, ge=0.0, le=10.0, description="emotion intensity (DICE-Talk's 0..10)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the idle motion")
    voice: Literal["en", "zh"] = Field("en", description="language text sent into the session is spoken in")


class LiveAnswer(BaseModel):
    """A running session and the SDP answer to the browser's offer."""

    session_id: str
    type: Literal["answer"] = "answer"
    sdp: str
    width: int
    height: int
    fps: float
    engine: str = Field(description="the engine that renders the face, e.g. talkface-1")
    replica: str = Field(description="the model-service replica holding the session now")


class LiveState(BaseModel):
    """A session as it stands."""

    session_id: str
    replica: str
    failovers: int
    audio_seconds: float
    video_seconds: float


def _sessions(request: Request) -> Sessions:
    app = request.app
    if not hasattr(app.state, "live_sessions"):
        app.state.live_sessions = Sessions()
    return app.state.live_sessions


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           detail: object = None) -> ApiError:
    return auth.native_error(status, code, message, detail, headers=headers)


def ice_servers(gw) -> list[dict[str, Any]]:
    """The configured ICE servers as RTCIceServer dictionaries (none on loopback)."""
    return [dict(s) for s in gw.settings.live_ice_servers]


@router.get("/ice", summary="ICE servers for a session's peer connection")
async def ice(gw: GatewayDep) -> dict:
    """STUN/TURN servers the browser's RTCPeerConnection should use (an empty list on loopback)."""
    return {"ice_servers": ice_servers(gw)}


_FORM_SCHEMA = {"type": "object", "required": ["sdp"], "properties": {
    "sdp": {"type": "string", "description": "the browser's SDP offer (an audio track to send, video to receive, "
                                              "and a data channel for text)"},
    "type": {"type": "string", "enum": ["offer"]},
    "image": {"type": "string", "format": "binary", "description": "the portrait (JPEG, PNG, WEBP, BMP)"},
    "person_model": {"type": "string", "description": "or an EchOfU person model's path, models/<type>/<id>: "
                                                      "the face is a frame of the person's own video"},
    **{name: {k: v for k, v in field.items() if k != "title"}
       for name, field in LiveForm.model_json_schema()["properties"].items()},
}}


@router.post("", response_model=LiveAnswer, responses=statuses(400, 404, 413, 503), summary="Open a live session",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}}}})
@streams_uploads
async def open_live(request: Request, gw: GatewayDep) -> LiveAnswer:
    """Answer a WebRTC offer with a face that talks from the offer's audio and from text sent on its data channel."""
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

    from services.gateway.uploads import UploadError, read_form

    sessions = _sessions(request)
    if len(sessions.by_id) >= gw.settings.live_max_sessions:
        raise _error(503, "busy", "this gateway holds as many live sessions as it may", {"Retry-After": "10"})
    with tempfile.TemporaryDirectory(prefix="live-") as tmp:
        try:
            form = await read_form(request, pathlib.Path(tmp), {"image": gw.settings.image_max_bytes},
                                   gw.settings.image_max_bytes)
        except UploadError as exc:
            raise _error(exc.status, "bad_request", str(exc)) from exc
        offer, kind = form.value("sdp"), form.value("type") or "offer"
        if not offer or kind != "offer":
            raise _error(422, "invalid_request", "send the browser's SDP offer as the form field 'sdp' (type offer)")
        try:
            params = LiveForm.model_validate({k: v[-1] for k, v in form.fields.items() if k in LiveForm.model_fields})
        except ValidationError as exc:
            raise _error(422, "invalid_request", "invalid session settings", detail=
                         [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]) from exc
        image = form.file("image")
        data = image.path.read_bytes() if image is not None else None
    person = await _person_model(gw, form.value("person_model")) if data is None else ""
    if data is not None:
        _check_image(data)
    loop = asyncio.get_running_loop()
    sid = sessions.new_id()
    face = FaceTrack(params.fps)
    session = Session(id=sid, key_id=auth.current_key_id(), params=LiveParams(**params.model_dump()),
                      portrait_key=f"live/{sid}/portrait" if data is not None else "", person_model=person,
                      clock=AudioClock(), face=face, voice=VoiceTrack(face), loop=loop)
    if data is not None:
        await run_in_threadpool(gw.store.put_bytes, session.portrait_key, data)
    try:
        await run_in_threadpool(start_call, gw, session)
    except (NoLiveSlot, grpc.RpcError) as exc:
        await run_in_threadpool(gw.store.delete_prefix, f"live/{sid}/")
        if isinstance(exc, NoLiveSlot):
            raise _error(503, "no_free_slot", str(exc), {"Retry-After": "5"}) from exc
        code = error_code_of(exc)
        status = 400 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 503
        raise _error(status, code, exc.details() or code) from exc
    config = RTCConfiguration(iceServers=[RTCIceServer(**s) for s in ice_servers(gw)])
    pc = RTCPeerConnection(configuration=config)
    session.pc = pc
    session.registry, session.store = sessions, gw.store
    sessions.add(session)
    # audio flows at once (silence until the browser's arrives), so the replica's clock never waits
    session.tasks.append(asyncio.ensure_future(tick(session)))

    @pc.on("track")
    def on_track(track):
        if track.kind == "audio":
            session.tasks.append(asyncio.ensure_future(listen(session, track)))

    @pc.on("datachannel")
    def on_datachannel(channel):
        channel.on("message", lambda message: asyncio.ensure_future(on_message(gw, session, channel, message)))

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState in ("failed", "closed"):
            await close(session, sessions)

    try:
        pc.addTrack(face)
        pc.addTrack(session.voice)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as exc:  # noqa: BLE001 - an offer aiortc cannot answer is the client's fault
        await close(session, sessions)
        raise _error(400, "bad_offer", f"the SDP offer cannot be answered: {exc}") from exc
    session.tasks.append(loop.create_task(_max_duration(session, sessions, gw.settings.live_max_seconds)))
    loop.run_in_executor(None, pump, gw, session)
    started = session.started
    return LiveAnswer(session_id=sid, sdp=pc.localDescription.sdp, width=started.width, height=started.height,
                      fps=started.fps, engine=started.engine, replica=started.replica_id)


def _check_image(data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _error(400, "bad_image", "the portrait is not an image that can be read") from exc


async def _person_model(gw, path: str | None) -> str:
    """The key prefix of the caller's person model at the documented path `models/<type>/<id>`."""
    if not path:
        raise _error(422, "invalid_request", "send the portrait as the file field 'image', or a person model's "
                                             "path (models/<type>/<id>) as 'person_model'")
    parts = path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "models" or not all(valid_id(p) for p in parts[1:]):
        raise _error(422, "invalid_request", "person_model must be a person model's path, models/<type>/<id>")
    prefix = Space.of(auth.current_key_id()).model_prefix(parts[1], parts[2])
    if not await run_in_threadpool(gw.store.exists, prefix + "model.json"):  # written last: the model is whole
        raise _error(404, "not_found", f"no finished person model at {path}")
    return prefix


async def _max_duration(session: Session, sessions: Sessions, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await close(session, sessions)


def _owned(request: Request, session_id: str) -> Session:
    session = _sessions(request).by_id.get(session_id)
    if session is None or session.key_id != auth.current_key_id():
        raise _error(404, "not_found", "Live session not found")
    return session


@router.get("/{session_id}", response_model=LiveState, responses=statuses(404), summary="Describe a live session")
async def describe(request: Request, session_id: str) -> LiveState:
    """Where a session runs and how far its sound and face have gone."""
    s = _owned(request, session_id)
    return LiveState(session_id=s.id, replica=s.started.replica_id if s.started else "", failovers=s.failovers,
                     audio_seconds=s.clock.seconds, video_seconds=s.face.video_seconds)


@router.delete("/{session_id}", status_code=204, responses=statuses(404), summary="End a live session")
async def end(request: Request, session_id: str) -> None:
    """End a session: its replica's slot is free at once."""
    s = _owned(request, session_id)
    await close(s, _sessions(request))


async def close_all(app) -> None:
    """End every session (the gateway is stopping)."""
    sessions = getattr(app.state, "live_sessions", None)
    if sessions is not None:
        for session in list(sessions.by_id.values()):
            await close(session, sessions)
