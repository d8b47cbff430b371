"""A WebRTC client of the gateway's live sessions (aiortc): what `talkserve live` and the tests use.

`LiveClient` offers the gateway a connection that sends one audio track (a WAV file played in
real time, or silence) and a data channel for text, and receives the face (video) and its
sound (audio). Every received video frame is kept with the wall time it arrived and its picture
(RGB), so a caller can measure the mouth on it; `record` writes what came back to an MP4.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import httpx
import numpy as np


@dataclass
class Received:
    """What came back from a session."""

    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (arrival wall time, RGB)
    audio_frames: int = 0
    messages: list[dict] = field(default_factory=list)
    audio_started_at: Optional[float] = None  # wall time the first audio went out


class _PacedWav:
    """A WAV file as a real-time audio track (20 ms frames), then silence."""

    def __init__(self, samples: np.ndarray, rate: int, received: Received):
        from aiortc.mediastreams import MediaStreamTrack

        class Track(MediaStreamTrack):
            kind = "audio"

            async def recv(inner):  # noqa: N805 - aiortc's track API
                import av

                step = rate // 50
                start = self.start
                if start is None:
                    start = self.start = received.audio_started_at = time.perf_counter()
                wait = start + self.sent / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                chunk = samples[self.sent:self.sent + step]
                if chunk.size < step:
                    chunk = np.concatenate([chunk, np.zeros(step - chunk.size, np.int16)])
                frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, self.sent, fractions.Fraction(1, rate)
                self.sent += step
                return frame

        self.start: Optional[float] = None
        self.sent = 0
        self.track = Track()


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """A WAV (or any audio file) as 16 kHz mono int16."""
    from libs.talkface.audio import load_audio

    samples = load_audio(path)
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16), 16000


class LiveClient:
    """One session with the gateway at `base_url`."""

    def __init__(self, base_url: str, api_key: Optional[str] = None):
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.received = Received()
        self.session: dict[str, Any] = {}
        self.pc: Any = None
        self.channel: Any = None
        self._tasks: list = []

    async def open(self, image: Optional[bytes], audio: Optional[np.ndarray] = None, rate: int = 16000,
                   **settings: Any) -> dict:
        """Connect, sending `audio` (int16 mono at `rate`; None: silence) in real time. `image` is the
        portrait (None with the setting `person_model` instead)."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pc = pc = RTCPeerConnection()
        source = _PacedWav(audio if audio is not None else np.zeros(0, np.int16), rate, self.received)
        pc.addTrack(source.track)
        pc.addTransceiver("video", direction="recvonly")
        self.channel = pc.createDataChannel("text")
        self.channel.on("message", lambda m: self.received.messages.append(json.loads(m)))

        @pc.on("track")
        def on_track(track):
            self._tasks.append(asyncio.ensure_future(self._drain(track)))

        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(timeout=60) as http:
            resp = await http.post(f"{self.base_url}/v1/live", headers=self.headers,
                                   data={"sdp": pc.localDescription.sdp, "type": "offer",
                                         **{k: str(v) for k, v in settings.items()}},
                                   files={"image": ("portrait.png", image, "image/png")} if image else
                                   {"none": ("", b"", "application/octet-stream")})
        if resp.status_code != 200:
            await pc.close()
            raise LiveError(resp.status_code, resp.json())
        self.session = resp.json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=self.session["sdp"], type="answer"))
        return self.session

    async def _drain(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - the track ended
                return
            if track.kind == "video":
                self.received.frames.append((time.perf_counter(), frame.to_ndarray(format="rgb24")))
            else:
                self.received.audio_frames += 1

    def say(self, text: str) -> None:
        """Speak `text` into the session (the voice service makes the speech)."""
        self.channel.send(json.dumps({"say": text}))

    async def send(self, body: dict, wait_s: float = 10.0) -> None:
        """A data-channel message ({"say"}, {"ask"}, {"listen"}), once the channel is open."""
        deadline = time.perf_counter() + wait_s
        while self.channel.readyState != "open":
            if time.perf_counter() > deadline:
                raise LiveError(0, "the data channel did not open")
            await asyncio.sleep(0.02)
        self.channel.send(json.dumps(body))

    async def reply(self, event: str, wait_s: float = 60.0) -> dict:
        """The next message on the data channel whose event is `event` (or an error)."""
        deadline = time.perf_counter() + wait_s
        while time.perf_counter() < deadline:
            for msg in self.received.messages:
                if msg.get("event") in (event, "error"):
                    self.received.messages.remove(msg)
                    return msg
            await asyncio.sleep(0.05)
        raise LiveError(0, f"no {event} message within {wait_s} s")

    async def state(self) -> dict:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{self.base_url}/v1/live/{self.session['session_id']}", headers=self.headers)
            resp.raise_for_status()
            return resp.json()

    async def close(self) -> None:
        """End the session on the gateway and close the connection."""
        if self.session:
            async with httpx.AsyncClient(timeout=10) as http:
                await http.delete(f"{self.base_url}/v1/live/{self.session['session_id']}", headers=self.headers)
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()


class LiveError(Exception):
    """The gateway refused the session."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def save_mp4(received: Received, path: str, fps: float) -> int:
    """The received frames as an H.264 MP4 (silent); returns the frame count."""
    from libs.talkface.encode import VideoWriter

    if not received.frames:
        return 0
    h, w = received.frames[0][1].shape[:2]
    writer = VideoWriter(path, w - w % 2, h - h % 2, int(round(fps)))
    for _, rgb in received.frames:
        writer.write(np.ascontiguousarray(rgb[:h - h % 2, :w - w % 2]))
    writer.close()
    return len(received.frames)
