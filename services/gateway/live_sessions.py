"""Live sessions on the gateway: placed on a replica with a free live slot, bridged to WebRTC, failed over.

A session is opened by `open_session` (the router's POST /v1/live): the portrait goes to the
store, the session is placed on the replica of a live-serving model service with the most
free live slots (GetCapacity), its Live RPC is opened and its first answer awaited (so a
portrait without a face or no free slot is the client's HTTP error, not a dead video), and only
then is the browser's SDP offer answered. From there three things run:

- the ticker (a task on the event loop): the session's audio as it falls due, in 20 ms slices
  (live_media.AudioClock: microphone plus spoken text, silence when neither) into the Live RPC
  and, for the sound sent back, into the VoiceTrack;
- the pump (a thread): the RPC's frames into the FaceTrack; when the RPC breaks (the replica
  died), the session is opened again on another replica with `resume_at_seconds` set to the
  audio clock, at a frame boundary, within `live_failover_seconds`. The browser sees the face
  freeze for that time, never an error;
- the peer connection: the browser's audio track into the AudioClock, data-channel messages
  to live_chat.py (text to speak, questions for the chat model), its close ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import Counter, Gauge

from libs.grpcutil.errors import error_code_of
from libs.grpcutil.live_client import LiveCall, open_request, pcm16
from services.gateway.clients import Replica
from services.gateway.live_media import RATE, AudioClock, FaceTrack, VoiceTrack, mono_resampler, to_pcm16k

log = logging.getLogger(__name__)

# by the model service holding them: what the autoscaling component scales echomimic and dicetalk on
LIVE_SESSIONS = Gauge("talkserve_gateway_live_sessions", "live sessions this gateway bridges, by model service",
                      ["service"])
LIVE_OPENED = Counter("talkserve_gateway_live_opens", "live sessions opened, by outcome of the opening",
                      ["outcome"])
LIVE_FAILOVERS = Counter("talkserve_gateway_live_failovers", "live sessions moved to another replica, by outcome",
                         ["outcome"])
OPEN_TIMEOUT_S = 30.0


class NoLiveSlot(Exception):
    """No replica of a live-serving model service has a free live slot."""

    code = "no_free_slot"


@dataclass
class LiveParams:
    """A session's settings as the client gave them (validated by the router)."""

    width: int = 512
    height: int = 512
    fps: int = 25
    emotion: str = "neutral"
    emo_scale: float = 0.0
    seed: int = 0
    voice: str = "en"  # the language text is spoken in: en or zh


@dataclass
class Session:
    """One bridged session."""

    id: str
    key_id: str | None
    params: LiveParams
    portrait_key: str  # the portrait's object key, or "" for a person model's session
    clock: AudioClock
    face: FaceTrack
    voice: VoiceTrack
    loop: asyncio.AbstractEventLoop
    replica: Replica | None = None
    call: LiveCall | None = None
    replies: Any = None  # the current call's reply iterator
    started: Any = None  # the current call's LiveStarted
    failovers: int = 0
    closed: threading.Event = field(default_factory=threading.Event)
    switch: Any = None  # (replica, done event) the ticker opens at the next frame boundary
    pc: Any = None
    tasks: list = field(default_factory=list)
    said: int = 0
    person_model: str = ""  # the key prefix of a person model's files, for a person model's session
    registry: Any = None  # the Sessions it is listed in
    store: Any = None  # where its portrait and spoken text are kept while it runs


def live_replicas(gw) -> list[Replica]:
    return [r for kind in gw.settings.live_services for r in gw.clients.replicas.get(kind, [])]


def place(gw, exclude: set[str] = frozenset()) -> Replica:  # type: ignore[assignment]
    """The replica with the most free live slots (NoLiveSlot when none has one)."""
    best, free = None, 0
    for replica in live_replicas(gw):
        if replica.target in exclude:
            continue
        cap = replica.capacity(timeout=1.0)
        if cap is not None and not cap.draining and cap.live_slots_free > free:
            best, free = replica, cap.live_slots_free
    if best is None:
        raise NoLiveSlot("no free live slot on any replica; try again shortly")
    return best


def _open(session: Session, replica: Replica, resume_at_s: float) -> None:
    """Open the session's Live RPC on `replica` and wait for its first answer (raises RpcError)."""
    p = session.params
    call = LiveCall(replica.channel, open_request(
        session.portrait_key, person_model=session.person_model, session_id=session.id, width=p.width, height=p.height, fps=p.fps, emotion=p.emotion,
        emo_scale=p.emo_scale, seed=p.seed, resume_at_s=resume_at_s, client_clock=True), timeout=None)
    session.call, session.replica = call, replica
    replies = iter(call)
    first = next(replies)
    session.started, session.replies = first.started, replies


def start_call(gw, session: Session) -> None:
    """Place the session and open its RPC (blocking: run off the event loop)."""
    tried: set[str] = set()
    while True:
        replica = place(gw, tried)
        try:
            _open(session, replica, 0.0)
            LIVE_OPENED.labels("ok").inc()
            return
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                tried.add(replica.target)  # taken or gone since it answered: the next one
                continue
            LIVE_OPENED.labels(error_code_of(err)).inc()
            raise


async def tick(session: Session) -> None:
    """Every 10 ms, the audio that is due into the session (see the module doc)."""
    frame_samples = RATE / session.params.fps
    while not session.closed.is_set():
        await asyncio.sleep(0.01)
        for start, samples in session.clock.due(time.monotonic()):
            if session.switch is not None and (start % frame_samples) < 1:
                _switch(session, start)
            if session.call is not None:
                session.call.send(pcm16(samples))
            session.voice.put(start, samples)


def _switch(session: Session, start: int) -> None:
    """Open the session on the replica failover chose, between two slices at a frame boundary:
    the new replica's clock starts where the next audio does."""
    replica, done = session.switch
    session.switch = None
    p = session.params
    session.call = LiveCall(replica.channel, open_request(
        session.portrait_key, person_model=session.person_model, session_id=session.id, width=p.width, height=p.height, fps=p.fps, emotion=p.emotion,
        emo_scale=p.emo_scale, seed=p.seed, resume_at_s=start / RATE, client_clock=True))
    session.replica = replica
    done.set()


def pump(gw, session: Session) -> None:
    """The frames of the session's RPC into its video track, failing over when the RPC breaks."""
    while not session.closed.is_set():
        try:
            for reply in session.replies:
                if reply.WhichOneof("event") == "frame":
                    f = reply.frame
                    w, h = session.started.width, session.started.height
                    session.loop.call_soon_threadsafe(session.face.put, f.index, f.data, w, h)
            if session.closed.is_set():
                return
            log.info("live session %s: the replica ended it", session.id)
            break
        except grpc.RpcError as err:
            if session.closed.is_set():
                return
            log.warning("live session %s lost its replica %s (%s): failing over", session.id,
                        session.replica.target if session.replica else "?", err.code().name)
            if not _fail_over(gw, session):
                break
    session.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(close(session)))


def _fail_over(gw, session: Session) -> bool:
    """Reopen the session on another replica within the failover time; False when none took it."""
    started = time.monotonic()
    lost = session.replica.target if session.replica else ""
    deadline = started + gw.settings.live_failover_seconds
    while time.monotonic() < deadline and not session.closed.is_set():
        try:
            replica = place(gw, {lost})
        except NoLiveSlot:
            time.sleep(0.1)
            continue
        done = threading.Event()
        session.switch = (replica, done)
        if not done.wait(1.0):
            session.switch = None
            continue
        try:
            replies = iter(session.call)  # type: ignore[arg-type]
            session.started = next(replies).started
            session.replies = replies
        except (grpc.RpcError, StopIteration):
            time.sleep(0.1)
            continue
        session.failovers += 1
        LIVE_FAILOVERS.labels("ok").inc()
        if session.registry is not None:
            session.loop.call_soon_threadsafe(session.registry.publish)
        log.info("live session %s resumed on %s after %.2f s", session.id, replica.target, time.monotonic() - started)
        return True
    LIVE_FAILOVERS.labels("failed").inc()
    return False


async def listen(session: Session, track) -> None:
    """The browser's microphone into the session's audio."""
    resampler = mono_resampler()
    while not session.closed.is_set():
        try:
            frame = await track.recv()
        except Exception:  # noqa: BLE001 - the track ended (MediaStreamError) or the connection went
            return
        session.clock.hear(to_pcm16k(frame, resampler), time.monotonic())


class Sessions:
    """The sessions this gateway bridges."""

    def __init__(self) -> None:
        self.by_id: dict[str, Session] = {}
        self.services: set[str] = set()

    def new_id(self) -> str:
        return "live_" + uuid.uuid4().hex[:16]

    def add(self, session: Session) -> None:
        self.by_id[session.id] = session
        self.publish()

    def remove(self, session: Session) -> None:
        self.by_id.pop(session.id, None)
        self.publish()

    def publish(self) -> None:
        """The sessions per model service, as the gauge reports them."""
        counts: dict[str, int] = {}
        for s in list(self.by_id.values()):
            if s.replica is not None:
                counts[s.replica.kind] = counts.get(s.replica.kind, 0) + 1
        for service in {*counts, *self.services}:
            LIVE_SESSIONS.labels(service).set(counts.get(service, 0))
        self.services |= set(counts)


async def close(session: Session, sessions: Sessions | None = None) -> None:
    """End a session: its RPC, its tracks and its peer connection (idempotent)."""
    if session.closed.is_set():
        return
    session.closed.set()
    if session.call is not None:
        session.call.close()
    session.face.end()
    session.voice.end()
    for task in session.tasks:
        task.cancel()
    if session.pc is not None:
        await session.pc.close()
    registry = sessions or session.registry
    if registry is not None:
        registry.remove(session)
    if session.store is not None:
        await asyncio.get_running_loop().run_in_executor(None, session.store.delete_prefix, f"live/{session.id}/")
    log.info("live session %s closed (%d failovers)", session.id, session.failovers)
