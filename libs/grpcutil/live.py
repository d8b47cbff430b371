"""The Live RPC of a model-service replica: one live session per call, on a live slot.

The servicer only translates: the first request opens a session (the portrait, or the first
frame of a person model's video, is fetched from the store; the engine's `open_live` prepares it), later requests carry PCM16 audio, and
the session's frames go out as they are rendered. A reader thread moves the client's
messages into a queue, so the RPC's thread renders while waiting for audio with a timeout:
when the client pauses (no audio for PAUSE_S) the audio clock goes on with silence, so the
face keeps blinking and breathing, and after the idle timeout with no message at all the
session ends (OK). When the client closes its side the frames its audio allows are rendered
(the look-ahead filled with silence) and the call ends; a cancel ends it at once. The live
slot is freed when the call ends, however it ends.
"""

from __future__ import annotations

import logging
import pathlib
import queue
import threading
import time
from typing import Any, Callable, Iterator

import cv2
import grpc
from prometheus_client import Counter, Gauge

from libs.grpcutil.errors import InvalidRequest, NoFreeSlot
from libs.grpcutil.jobs import SlotPool
from libs.talkface.live import FRAME_I420, FRAME_JPEG, LiveSession, LiveSettings
from libs.talkface.live_audio import pcm16_to_float
from talkserve.common.v1 import common_pb2
from talkserve.live.v1 import live_pb2, live_pb2_grpc

log = logging.getLogger(__name__)

LIVE_SESSIONS = Gauge("talkserve_live_sessions", "live sessions this replica holds")
LIVE_FRAMES = Counter("talkserve_live_frames_total", "frames rendered in live sessions")
PAUSE_S = 0.25  # no audio for this long: the client paused, and silence keeps the clock going
DEFAULT_IDLE_TIMEOUT_S = 30.0
_END = object()
_FORMATS = {live_pb2.FRAME_FORMAT_UNSPECIFIED: FRAME_I420, live_pb2.FRAME_FORMAT_I420: FRAME_I420,
            live_pb2.FRAME_FORMAT_JPEG: FRAME_JPEG}


def live_settings(req: live_pb2.LiveOpen) -> LiveSettings:
    """The engine's settings from an open request (proto3's zero means the default)."""
    return LiveSettings(width=req.width or 512, height=req.height or 512, fps=req.fps or 25,
                        emotion=req.emotion or "neutral", emo_scale=req.emo_scale, seed=req.seed,
                        frame_format=_FORMATS[req.frame_format])


class LiveServicer(live_pb2_grpc.LiveServiceServicer):
    """Runs live sessions on the replica's live slots."""

    def __init__(self, slots: SlotPool, open_live: Callable[[str, LiveSettings], LiveSession], staging,
                 replica_id: str, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S):
        self._slots = slots
        self._open_live = open_live  # (portrait path, settings) -> a LiveSession
        self._staging = staging
        self._replica_id = replica_id
        self._idle_timeout_s = idle_timeout_s

    def Live(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("event") != "open":
            raise InvalidRequest("the first message of a live session must open it")
        opening = first.open
        if not self._slots.try_acquire():
            raise NoFreeSlot("no free live slot on this replica")
        LIVE_SESSIONS.inc()
        try:
            settings = live_settings(opening)
            with self._staging.job_dir(opening.session_id or "live") as tmp:
                if opening.WhichOneof("face") == "person_model":
                    portrait = _person_portrait(self._staging, opening.person_model, tmp)
                else:
                    portrait = self._staging.fetch(opening.portrait, tmp / "portrait")
                session = self._open_live(str(portrait), settings)
            log.info("live session %s opened on %s (%dx%d, %d fps)", opening.session_id, self._replica_id,
                     session.width, session.height, settings.fps)
            yield live_pb2.LiveResponse(started=live_pb2.LiveStarted(
                width=session.width, height=session.height, fps=float(settings.fps), frame_format=(
                    live_pb2.FRAME_FORMAT_JPEG if settings.frame_format == FRAME_JPEG else live_pb2.FRAME_FORMAT_I420),
                lookahead_seconds=settings.lookahead_s, engine=session.engine, replica_id=self._replica_id))
            idle = float(opening.idle_timeout_seconds or self._idle_timeout_s)
            first_frame = int(round(opening.resume_at_seconds * settings.fps))
            yield from _run(session, request_iterator, context, idle, first_frame, not opening.client_clock)
        finally:
            LIVE_SESSIONS.dec()
            self._slots.release()


def _person_portrait(staging, prefix: str, tmp: pathlib.Path) -> pathlib.Path:
    """A person model's face as a portrait: the first frame of its base video with a face."""
    from libs.talkface.analysis import decode_video
    from libs.talkface.person import BASE_VIDEO_FILE

    key = prefix.rstrip("/") + "/" + BASE_VIDEO_FILE
    if not staging.store.exists(key):
        raise InvalidRequest(f"no person model at {prefix}")
    video = staging.fetch(common_pb2.ObjectRef(key=key), tmp / BASE_VIDEO_FILE)
    _, frames = decode_video(video)
    for rgb in frames:
        path = tmp / "portrait.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return path
    raise InvalidRequest(f"the person model at {prefix} has no video frames")


def _read(requests: Iterator[Any], inbox: queue.Queue) -> None:
    """The reader thread: the client's messages into `inbox`, then _END (or what broke the stream)."""
    try:
        for req in requests:
            inbox.put(req)
        inbox.put(_END)
    except Exception as exc:  # noqa: BLE001 - a bad message or a cancel: handed to the RPC thread
        inbox.put(exc)


def _run(session: LiveSession, requests: Iterator[Any], context: grpc.ServicerContext, idle_s: float,
         first_frame: int, fill_pauses: bool) -> Iterator[live_pb2.LiveResponse]:
    stop = threading.Event()
    context.add_callback(stop.set)
    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_read, args=(requests, inbox), name="live-reader", daemon=True).start()
    tick = 1.0 / session.settings.fps
    last_message = last_audio = time.monotonic()
    audio_at_last = 0.0
    fps = float(session.settings.fps)
    while not stop.is_set():
        try:
            item = inbox.get(timeout=tick)
        except queue.Empty:
            item = None
        now = time.monotonic()
        if item is _END:
            # the client is done: render what its audio allows, the look-ahead as silence
            session.pad_to(session.audio_seconds + session.settings.lookahead_s + tick)
            yield from _frames(session, first_frame, fps)
            return
        if isinstance(item, Exception):
            raise item
        if item is not None:
            last_message = now
            if item.WhichOneof("event") != "audio":
                raise InvalidRequest("a live session is opened once: later messages carry audio")
            session.push(pcm16_to_float(item.audio.pcm16))
            last_audio, audio_at_last = now, session.audio_seconds
        elif now - last_message >= idle_s:
            log.info("live session idle for %.0f s: closed", idle_s)
            return
        if fill_pauses and now - last_audio > PAUSE_S:
            # a pause: silence as long as the pause, so frames (blinks, breathing) keep coming
            session.pad_to(audio_at_last + (now - last_audio) - PAUSE_S + session.settings.lookahead_s)
        yield from _frames(session, first_frame, fps)


def _frames(session: LiveSession, first_frame: int, fps: float) -> Iterator[live_pb2.LiveResponse]:
    for f in session.frames():
        LIVE_FRAMES.inc()
        index = first_frame + f.index
        yield live_pb2.LiveResponse(frame=live_pb2.LiveFrame(
            index=index, pts_seconds=index / fps, data=f.data, mouth_open=f.mouth_open,
            audio_seconds=first_frame / fps + f.audio_in_s))
