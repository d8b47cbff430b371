"""Make small real media files for the media tests (PyAV encoders, no fixtures on disk)."""

from __future__ import annotations

import wave
from fractions import Fraction

import av
import numpy as np


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    """A sine tone with a slow loudness swell, float32 in [-0.5, 0.5]."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)


def write_audio(path, container: str, codec: str, seconds: float, rate: int = 44100,
                layout: str = "stereo", freq: float = 440.0) -> None:
    """Encode a tone with `codec` into `container` (e.g. mp3/libmp3lame, ipod/aac, ogg/libopus)."""
    signal = tone(seconds, rate, freq)
    channels = 1 if layout == "mono" else 2
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        ctx = stream.codec_context
        frame_size = ctx.frame_size or 1024
        fmt = ctx.format.name
        pos = 0
        while pos < signal.size:
            chunk = np.tile(signal[pos:pos + frame_size], (channels, 1))
            if not fmt.endswith("p"):
                chunk = chunk.T.reshape(1, -1)
            if fmt.startswith("s16"):
                chunk = (chunk * 32767).astype(np.int16)
            elif fmt.startswith("s32"):
                chunk = (chunk * 2_000_000_000).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = pos
            for packet in stream.encode(frame):
                out.mux(packet)
            pos += frame_size
        for packet in stream.encode(None):
            out.mux(packet)


def write_wav(path, seconds: float, rate: int = 22050, freq: float = 440.0) -> None:
    """A mono 16-bit WAV tone."""
    samples = (tone(seconds, rate, freq) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def write_video(path, seconds: float, fps: int = 24, size: tuple[int, int] = (160, 120), *,
                audio_seconds: float | None = None, codec: str = "libx264", seed: int = 0) -> None:
    """An MP4 of moving bars (H.264 with B-frames by default); with `audio_seconds`, an AAC tone too."""
    rng = np.random.default_rng(seed)
    width, height = size
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            video.options = {"preset": "veryfast", "bframes": "2"}
        audio = out.add_stream("aac", rate=44100, layout="mono") if audio_seconds else None
        base = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        for i in range(int(round(seconds * fps))):
            img = base.copy()
            img[:, (i * 4) % width] = 255
            img[(i * 3) % height, :] = 0
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if audio is not None:
            signal = tone(audio_seconds, 44100, 300 + 100 * seed)
            for pos in range(0, signal.size, 1024):
                frame = av.AudioFrame.from_ndarray(signal[None, pos:pos + 1024].copy(), format="fltp", layout="mono")
                frame.sample_rate = 44100
                frame.pts = pos
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode(None):
                out.mux(packet)


def packets(path, kind: str) -> list[tuple[bytes, Fraction, Fraction]]:
    """(payload, start, end) in seconds of every packet of the first `kind` stream, demuxer order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        found = []
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            tb = packet.time_base
            found.append((bytes(packet), packet.pts * tb, (packet.pts + packet.duration) * tb))
        return found


def stream_span(path, kind: str, skip_discarded: bool = True) -> float:
    """Seconds from the first to the end of the last packet of the first `kind` stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        start = end = None
        for packet in container.demux(stream):
            if packet.pts is None or (skip_discarded and packet.is_discard):
                continue
            tb = packet.time_base
            s, e = packet.pts * tb, (packet.pts + packet.duration) * tb
            start = s if start is None else min(start, s)
            end = e if end is None else max(end, e)
        return float(end - start)


def top_level_boxes(path) -> list[str]:
    """The MP4 box types at the top of the file, in order (to see +faststart)."""
    data = open(path, "rb").read()
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        boxes.append(data[pos + 4:pos + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8:
            break
        pos += size
    return boxes


def _write_still(path, codec: str, pix_fmt: str, size: tuple[int, int] = (96, 112)) -> None:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    with av.open(str(path), "w", format="image2", container_options={"update": "1"}) as out:
        stream = out.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def write_png(path) -> None:
    """A small gradient picture as PNG."""
    _write_still(path, "png", "rgb24")


def write_jpeg(path) -> None:
    """A small gradient picture as JPEG."""
    _write_still(path, "mjpeg", "yuvj420p")
