"""The client side of the Live RPC: open a session, send audio as it comes, read frames.

`LiveCall` wraps one call: `send(pcm16)` queues a chunk (never blocks), `close()` ends the
client's side, and iterating gives the replica's LiveResponse messages. Used by the gateway's
WebRTC bridge, the CLI, the benchmark and the tests.
"""

from __future__ import annotations

import queue
from typing import Iterator, Optional

import grpc
import numpy as np

from talkserve.common.v1 import common_pb2
from talkserve.live.v1 import live_pb2, live_pb2_grpc

SAMPLE_RATE = 16000
_CLOSE = object()


def open_request(portrait_key: str = "", *, person_model: str = "", session_id: str = "", width: int = 0,
                 height: int = 0, fps: int = 0, emotion: str = "", emo_scale: float = 0.0, jpeg: bool = False,
                 seed: int = 0, idle_timeout_s: int = 0, resume_at_s: float = 0.0,
                 client_clock: bool = False) -> live_pb2.LiveRequest:
    """The message that opens a session on the portrait stored at `portrait_key`, or on the person
    model whose files are under the prefix `person_model`."""
    face: dict = {"person_model": person_model} if person_model else \
        {"portrait": common_pb2.ObjectRef(key=portrait_key)}
    return live_pb2.LiveRequest(open=live_pb2.LiveOpen(
        session_id=session_id, **face, width=width, height=height,
        fps=fps, emotion=emotion, emo_scale=emo_scale, seed=seed, idle_timeout_seconds=idle_timeout_s,
        frame_format=live_pb2.FRAME_FORMAT_JPEG if jpeg else live_pb2.FRAME_FORMAT_I420,
        resume_at_seconds=resume_at_s, client_clock=client_clock))


def pcm16(samples: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] to little-endian PCM16."""
    return (np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class LiveCall:
    """One Live call on `channel`, opened with `opening` (see open_request)."""

    def __init__(self, channel: grpc.Channel, opening: live_pb2.LiveRequest, timeout: Optional[float] = None):
        self._outbox: queue.Queue = queue.Queue()
        self._outbox.put(opening)
        self._call = live_pb2_grpc.LiveServiceStub(channel).Live(self._requests(), timeout=timeout)

    def _requests(self) -> Iterator[live_pb2.LiveRequest]:
        while True:
            item = self._outbox.get()
            if item is _CLOSE:
                return
            yield item

    def send(self, pcm: bytes) -> None:
        """Queue a chunk of 16 kHz mono PCM16."""
        self._outbox.put(live_pb2.LiveRequest(audio=live_pb2.LiveAudio(pcm16=pcm)))

    def send_raw(self, request: live_pb2.LiveRequest) -> None:
        """Queue any request (tests send wrong ones)."""
        self._outbox.put(request)

    def close(self) -> None:
        """End the client's side: the replica renders what the audio allows and ends the call."""
        self._outbox.put(_CLOSE)

    def cancel(self) -> None:
        self._call.cancel()

    def __iter__(self) -> Iterator[live_pb2.LiveResponse]:
        return iter(self._call)
