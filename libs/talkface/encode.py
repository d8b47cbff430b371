"""Stream video frames to and from files: an H.264 writer and a frame-by-frame reader (PyAV).

The writer takes one RGB frame at a time and encodes it on a background thread behind
a short queue, so rendering the next frame overlaps encoding this one while memory
stays bounded whatever the video's length. It encodes with libx264, or with NVIDIA's
NVENC (`h264_nvenc`) where the PyAV build has it and a GPU opens it (`choose_codec`).
The reader decodes one frame at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from fractions import Fraction
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from .api import BadVideoError

log = logging.getLogger(__name__)

_STOP = object()

X264 = "libx264"
NVENC = "h264_nvenc"
_nvenc: Optional[tuple] = None  # (works, why not), probed once per process


def choose_codec(gpu: bool) -> tuple[str, str]:
    """The H.264 encoder for a render on a GPU (`gpu`) or not, and why that one.

    NVENC when the render is on a GPU, PyAV lists h264_nvenc (`av.codecs_available`) and
    the encoder really opens (a PyAV wheel carries it whether or not a driver and a GPU
    are there); otherwise libx264 on CPU threads."""
    global _nvenc
    if not gpu:
        return X264, "the render runs on the CPU"
    if _nvenc is None:
        _nvenc = _probe_nvenc()
    works, why_not = _nvenc
    return (NVENC, "NVENC opened on this GPU") if works else (X264, why_not)


def _probe_nvenc() -> tuple[bool, str]:
    import io

    import av

    if NVENC not in av.codecs_available:
        return False, "this PyAV build has no h264_nvenc"
    try:
        with av.open(io.BytesIO(), mode="w", format="mp4") as container:
            stream = container.add_stream(NVENC, rate=24)
            stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"  # type: ignore[union-attr]
            frame = av.VideoFrame.from_ndarray(np.zeros((384, 256), np.uint8), format="yuv420p")
            for packet in [*stream.encode(frame), *stream.encode()]:  # type: ignore[arg-type, union-attr]
                container.mux(packet)
    except Exception as exc:  # no driver, no GPU, no free NVENC session: libx264 instead
        return False, f"h264_nvenc did not open: {exc}"
    return True, ""


def _rate(fps: Union[int, float, Fraction]) -> Fraction:
    if isinstance(fps, Fraction):
        return fps
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Silent H.264 (yuv420p; libx264, or h264_nvenc) MP4 writer fed one frame at a time.

    Frames are RGB uint8 (H, W, 3) of the size given here, or (H, W) gray for masks.
    Width and height must be even (4:2:0 chroma). Use as a context manager or call
    `close()`; `abort()` stops and deletes the partial file. `crf` is NVENC's constant
    quality (`cq`) when `codec` is h264_nvenc, whose preset is its own (p4). An NVENC
    encoder that does not open (no free session) gives way to libx264 at once: `codec`
    says which one writes, `codec_note` why it is not the one asked for.
    """

    def __init__(self, path: Union[str, os.PathLike], width: int, height: int,
                 fps: Union[int, float, Fraction], *, crf: int = 20, preset: str = "veryfast",
                 threads: int = 0, queue_size: int = 6, background: bool = True, codec: str = X264):
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"H.264 4:2:0 needs even, positive sizes, got {width}x{height}")
        self.path = str(path)
        self.width, self.height = int(width), int(height)
        self.frames = 0
        self.codec, self.codec_note = codec, ""
        self._container, self._stream = self._open(codec, fps, crf, preset, threads)
        if codec == NVENC:
            try:
                self._stream.codec_context.open()  # now, not at the first frame on the encoder thread
            except Exception as exc:  # no free NVENC session (consumer GPUs have a few), or no NVENC
                self._container.close()
                self.codec, self.codec_note = X264, f"h264_nvenc did not open ({exc}): libx264 instead"
                log.warning("%s: %s", self.path, self.codec_note)
                self._container, self._stream = self._open(X264, fps, crf, preset, threads)
        self._error: Optional[BaseException] = None
        self._closed = False
        self._q: Optional[queue.Queue] = None
        self._thread: Optional[threading.Thread] = None
        if background:
            self._q = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(target=self._run, name="talkface-encode", daemon=True)
            self._thread.start()

    def _open(self, codec: str, fps, crf: int, preset: str, threads: int) -> tuple:
        import av

        # faststart: players (and browsers) can start before the whole file has arrived
        container = av.open(self.path, mode="w", options={"movflags": "+faststart"})
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height = self.width, self.height  # type: ignore[union-attr]
        stream.pix_fmt = "yuv420p"  # type: ignore[union-attr]
        if codec == NVENC:
            # constant quality (cq) with no bitrate cap: NVENC's counterpart of x264's crf
            stream.options = {"preset": "p4", "tune": "hq", "rc": "vbr", "cq": str(crf), "b": "0"}
        else:
            # x264 drops small coefficients of moving blocks (its dead zone) more eagerly than
            # of still ones, which wipes the skin's fine detail off a talking face while the
            # background keeps it; a narrower dead zone keeps it (at about 1.5x the bitrate).
            stream.options = {"preset": preset, "crf": str(crf), "x264-params": "deadzone-inter=6:deadzone-intra=6"}
            if threads:
                stream.codec_context.thread_count = threads
        return container, stream

    # -- encoding ---------------------------------------------------------------------

    def _yuv(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            # gray (masks): neutral chroma
            out = np.empty((self.height * 3 // 2, self.width), np.uint8)
            out[:self.height] = frame
            out[self.height:] = 128
            return out
        return cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)

    def _encode(self, frame: np.ndarray) -> None:
        import av

        vf = av.VideoFrame.from_ndarray(self._yuv(frame), format="yuv420p")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def _run(self) -> None:
        while True:
            item = self._q.get()  # type: ignore[union-attr]
            if item is _STOP:
                return
            if self._error is not None:
                continue  # drain so the producer never blocks on a dead consumer
            try:
                self._encode(item)
            except BaseException as exc:  # surfaced to the producer on its next call
                self._error = exc

    def write(self, frame: np.ndarray) -> None:
        """Queue one frame (the array must not be modified afterwards)."""
        if self._closed:
            raise RuntimeError("writer is closed")
        if self._error is not None:
            raise self._error
        if frame.shape[0] != self.height or frame.shape[1] != self.width or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not fit "
                             f"{self.width}x{self.height} uint8")
        if self._q is not None:
            self._q.put(frame)
        else:
            self._encode(frame)
        self.frames += 1

    def _join(self) -> None:
        if self._thread is not None:
            self._q.put(_STOP)  # type: ignore[union-attr]
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._closed:
            return
        self._join()
        self._closed = True
        try:
            if self._error is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without finishing and remove the partial file."""
        if not self._closed:
            self._join()
            self._closed = True
            try:
                self._container.close()
            except Exception:  # a half-written container may refuse to close cleanly
                log.debug("closing an aborted writer failed", exc_info=True)
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoReader:
    """Decode a video's first video stream one RGB frame at a time.

    `fps` (a Fraction), `width`, `height` and `frame_count` (from the container, an
    estimate; 0 when unknown) are known after opening. Raises BadVideoError when the file
    cannot be opened or has no video stream; iterating raises it when decoding fails
    before any frame.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        import av

        self.path = str(path)
        name = os.path.basename(self.path)
        try:
            container = av.open(self.path, mode="r")
        except FileNotFoundError as exc:
            raise BadVideoError(f"video file not found: {name}") from exc
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise BadVideoError(f"the video {name} could not be opened: {exc}") from exc
        try:
            if not container.streams.video:
                raise BadVideoError(f"no video stream in {name}")
            stream = container.streams.video[0]
            cc = stream.codec_context
            self.width, self.height = int(cc.width), int(cc.height)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = Fraction(rate) if rate else Fraction(25)
            if self.fps <= 0 or self.fps > 240:
                self.fps = Fraction(25)
            frames = int(stream.frames or 0)
            if not frames and stream.duration and stream.time_base:
                frames = int(round(float(stream.duration * stream.time_base) * float(self.fps)))
            self.frame_count = frames
        except BadVideoError:
            container.close()
            raise
        container.close()
        if self.width <= 0 or self.height <= 0:
            raise BadVideoError(f"the video {name} has no picture size")

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        name = os.path.basename(self.path)
        n = 0
        try:
            with av.open(self.path, mode="r") as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    n += 1
                    yield frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
            if n == 0:
                raise BadVideoError(f"the video {name} could not be decoded: {exc}") from exc
            # a damaged tail: keep what decoded
            log.warning("decoding %s stopped after %d frames: %s", name, n, exc)
        if n == 0:
            raise BadVideoError(f"the video {name} holds no frames")

    def looped(self, n: int, width: int, height: int) -> Iterator[tuple[np.ndarray, int]]:
        """The first `n` frames, starting the video again as often as needed, cropped to
        `width` x `height`; each with how many times the video had been started again."""
        loops = 0
        frames = iter(self)
        for _ in range(n):
            try:
                frame = next(frames)
            except StopIteration:
                loops += 1
                frames = iter(self)
                frame = next(frames)
            yield np.ascontiguousarray(frame[:height, :width]), loops
