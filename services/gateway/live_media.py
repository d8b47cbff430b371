"""The media of a live session on the gateway: the browser's audio in, the face and its sound out.

`AudioClock` is the session's one clock: 16 kHz samples sent into the Live RPC in 20 ms
slices, the browser's microphone (Opus decoded by aiortc, resampled here) with speech made
from text mixed in (`say`); audio flows into the session whether anyone speaks or not, so the
face keeps moving in pauses.

`FaceTrack` (video) hands the session's frames to aiortc's encoder (VP8 or H.264, whichever
the browser's offer prefers) stamped with their audio-clock time; `VoiceTrack` (audio) sends the
very audio that drove the face back, each 20 ms released only once the frame showing it went
out, so sound and face leave on the same clock.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import threading

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 16000
TICK = 320  # 20 ms at 16 kHz
MAX_MIC_BACKLOG = 2 * RATE  # memory bound only: everything the microphone delivered is sent as it comes
MAX_QUESTION_S = 30  # a spoken question is cut after this long
MIC_GAP_S = 0.15  # a microphone silent this long has stopped: the clock goes on with silence
VIDEO_CLOCK = 90000  # RTP's video clock rate
MAX_FRAME_BACKLOG = 2  # frames waiting for the encoder beyond these are skipped


def to_pcm16k(frame: av.AudioFrame, resampler: av.AudioResampler) -> np.ndarray:
    """A decoded audio frame (any rate and layout) to 16 kHz mono float32."""
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    if not out:
        return np.zeros(0, np.float32)
    return (np.concatenate(out).astype(np.float32) / 32768.0).astype(np.float32)


def mono_resampler() -> av.AudioResampler:
    return av.AudioResampler(format="s16", layout="mono", rate=RATE)


class AudioClock:
    """The session's audio: microphone plus spoken text, 20 ms at a time, counted in samples.

    While the microphone delivers, its audio is the clock: every 20 ms it has delivered goes
    out, none inserted or left out, so the face's timeline is the voice's (a network hiccup
    delays the face, it never shifts it against the sound). When it stops (MIC_GAP_S with
    nothing, or no microphone at all) silence keeps the clock at wall-clock pace.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mic: collections.deque = collections.deque()
        self._mic_samples = 0
        self._heard_at = -1.0  # monotonic time the microphone last delivered
        self._speech = np.zeros(0, np.float32)
        self.samples = 0  # sent so far: the audio clock
        self._anchor: tuple[float, int] | None = None  # (time, samples) the silent clock runs from
        self._recording: list[np.ndarray] | None = None  # the microphone kept for a question, while asked

    @property
    def seconds(self) -> float:
        return self.samples / RATE

    def hear(self, samples: np.ndarray, now: float) -> None:
        """Microphone audio as it arrives (`now`: time.monotonic())."""
        with self._lock:
            self._mic.append(samples)
            self._mic_samples += samples.size
            self._heard_at = now
            while self._mic_samples > MAX_MIC_BACKLOG and len(self._mic) > 1:
                self._mic_samples -= self._mic.popleft().size
            if self._recording is not None and sum(map(len, self._recording)) < MAX_QUESTION_S * RATE:
                self._recording.append(samples)

    def record(self) -> None:
        """Keep the microphone's audio from now on (a spoken question), until `recorded`."""
        with self._lock:
            self._recording = []

    def recorded(self) -> np.ndarray:
        """What the microphone said since `record` (at most MAX_QUESTION_S); stops keeping it."""
        with self._lock:
            parts, self._recording = self._recording or [], None
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def say(self, samples: np.ndarray) -> None:
        """Speech made from text, played after what is still queued."""
        with self._lock:
            self._speech = np.concatenate([self._speech, samples.astype(np.float32)])

    def due(self, now: float) -> list[tuple[int, np.ndarray]]:
        """The 20 ms slices to send now, each with the audio-clock sample it starts at."""
        out = []
        with self._lock:
            if now - self._heard_at < MIC_GAP_S:
                self._anchor = None
                while self._mic_samples >= TICK:
                    out.append(self._slice(self._take_mic()))
            else:
                if self._anchor is None:
                    self._anchor = (now, self.samples)
                at, base = self._anchor
                while self.samples + TICK <= base + (now - at) * RATE:
                    out.append(self._slice(self._take_mic()))
        return out

    def _take_mic(self) -> np.ndarray:
        out = np.zeros(TICK, np.float32)
        filled = 0
        while filled < TICK and self._mic:
            head = self._mic[0]
            take = min(TICK - filled, head.size)
            out[filled:filled + take] = head[:take]
            filled += take
            if take == head.size:
                self._mic.popleft()
            else:
                self._mic[0] = head[take:]
        self._mic_samples -= filled
        return out

    def _slice(self, out: np.ndarray) -> tuple[int, np.ndarray]:
        if self._speech.size:
            take = min(TICK, self._speech.size)
            out[:take] += self._speech[:take]
            self._speech = self._speech[take:]
        start = self.samples
        self.samples += TICK
        return start, np.clip(out, -1.0, 1.0)


class FaceTrack(MediaStreamTrack):
    """The session's frames as a video track; `video_seconds` is how far the face has been sent."""

    kind = "video"

    def __init__(self, fps: float):
        super().__init__()
        self._frames: asyncio.Queue = asyncio.Queue(maxsize=50)
        self.fps = fps
        self.video_seconds = 0.0
        self._shown = asyncio.Event()

    def put(self, index: int, data: bytes, width: int, height: int) -> None:
        """A frame from the session (call on the event loop); the oldest waiting one is dropped when
        the browser's side cannot keep up."""
        if self._frames.full():
            self._frames.get_nowait()
        self._frames.put_nowait((index, data, width, height))

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index, data, width, height = await self._frames.get()
        while self._frames.qsize() > MAX_FRAME_BACKLOG and data is not None:
            # behind (the browser connected late, or stalled): show the newest, not a backlog
            index, data, width, height = self._frames.get_nowait()
        if data is None:
            self.stop()
            raise MediaStreamError
        yuv = np.frombuffer(data, np.uint8).reshape(height * 3 // 2, width)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = int(round(index * VIDEO_CLOCK / self.fps))
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.video_seconds = (index + 1) / self.fps
        self._shown.set()
        return frame

    def end(self) -> None:
        self.put(-1, None, 0, 0)  # type: ignore[arg-type]

    async def shown(self) -> None:
        """Wait until another frame went out."""
        self._shown.clear()
        await self._shown.wait()


class VoiceTrack(MediaStreamTrack):
    """The audio that drove the face, sent back in step with it (see the module doc)."""

    kind = "audio"

    def __init__(self, face: FaceTrack):
        super().__init__()
        self._face = face
        self._chunks: asyncio.Queue = asyncio.Queue()

    def put(self, start_sample: int, samples: np.ndarray) -> None:
        """20 ms the session was sent, starting at audio-clock sample `start_sample` (on the loop)."""
        self._chunks.put_nowait((start_sample, samples))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        start, samples = await self._chunks.get()
        # sound whose face went out long ago (a late start, a failover's gap) is skipped
        while samples is not None and (start + samples.size) / RATE < self._face.video_seconds - 0.1 \
                and not self._chunks.empty():
            start, samples = self._chunks.get_nowait()
        if samples is None:
            self.stop()
            raise MediaStreamError
        end_s = (start + samples.size) / RATE
        # released once the face showing this audio went out (a failover's gap releases at once)
        while self._face.video_seconds < end_s and self.readyState == "live":
            try:
                await asyncio.wait_for(self._face.shown(), timeout=1.0)
            except TimeoutError:
                break  # no frames for a second: the sound goes on rather than stall
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, RATE)
        return frame

    def end(self) -> None:
        self._chunks.put_nowait((0, None))
