"""Media jobs on local files: probe, normalise audio, mux audio onto a silent video, join clips.

Plain functions on paths, no gRPC and no object store: the servicer downloads inputs to a
temporary directory, calls these, and uploads what they write. Every failure caused by
the input raises `MediaError` with a stable `code`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import wave
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

import av
import numpy as np

log = logging.getLogger(__name__)

# Demuxers untrusted input may be opened with. Playlist-like demuxers (hls, concat, …)
# would make FFmpeg open further files or URLs named inside the input, which turns an
# upload into a request forgery; anything not listed here is refused as bad media.
ALLOWED_DEMUXERS = (
    "mov,matroska,webm,avi,flv,mpegts,mpeg,asf,mp3,wav,w64,flac,ogg,aac,aiff,caf,amr,"
    "ac3,eac3,wv,ape,h264,hevc,image2,png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,tiff_pipe,gif"
)
_OPEN_OPTIONS = {"format_whitelist": ALLOWED_DEMUXERS, "protocol_whitelist": "file"}

# Codecs whose streams are pictures rather than moving video when they hold one frame.
_STILL_CODECS = {"png", "mjpeg", "jpeg2000", "bmp", "tiff", "webp", "gif", "ppm", "pgm", "pam"}

# Largest picture probe() decodes (width x height): 8K UHD with room to spare.
MAX_PIXELS = 8192 * 8192

# Video codecs mux() copies into MP4 as they are.
COPYABLE_VIDEO_CODECS = ("h264", "hevc")

# The rates mux() writes AAC at. Sound that arrives at up to 24 kHz (speech from TTS and
# most recorders: 16, 22.05, 24 kHz) is encoded at 24 kHz, which keeps all of it and costs a
# third of encoding at 48 kHz; anything finer at 48 kHz. An AAC frame is 1024 samples, so the
# sound may run past the picture by up to 43 ms (24 kHz) or 21 ms (48 kHz).
AAC_RATES = (24000, 48000)

NORMALIZED_RATE = 16000

# Silence encode_audio() appends, so its track still covers a video that runs a little
# past the sound (frame rounding, a requested duration).
PREENCODE_PAD_SECONDS = 1.0

# Samples in one AAC-LC frame: the encoder takes frames of exactly this size.
AAC_FRAME_SAMPLES = 1024

# Decoders pad the last frame (AAC to 1024 samples); the container's packet timestamps
# say where the real audio ends. Only this much excess is treated as padding and cut.
_MAX_TAIL_PADDING_SECONDS = 0.25

KIND_AUDIO = "audio"
KIND_VIDEO = "video"
KIND_IMAGE = "image"


class MediaError(Exception):
    """The input cannot be used for the requested job; `code` is stable for clients."""

    def __init__(self, message: str, code: str = "bad_media"):
        super().__init__(message)
        self.code = code


@dataclass
class MediaInfo:
    """What a media file contains (mirrors talkserve.media.v1.MediaInfo)."""

    format: str = ""
    duration_seconds: float = 0.0
    has_video: bool = False
    has_audio: bool = False
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""
    sample_rate: int = 0
    channels: int = 0
    size_bytes: int = 0
    is_image: bool = False

    @property
    def kind(self) -> str:
        """`image`, `video` or `audio`: what a client would call the file."""
        if self.is_image:
            return KIND_IMAGE
        if self.has_video:
            return KIND_VIDEO
        if self.has_audio:
            return KIND_AUDIO
        return ""


def _open(path: str) -> av.container.InputContainer:
    try:
        if _is_wav(path):
            container = _open_wav(path)
            if container is not None:
                return container
        return av.open(os.fspath(path), "r", container_options=dict(_OPEN_OPTIONS))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"not a media file this service decodes: {_reason(exc)}") from exc


def _is_wav(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"


def _open_wav(path: str) -> av.container.InputContainer | None:
    """A WAV file opened without FFmpeg's stream analysis, or None if its header left
    the sound undescribed (no rate or channel count), to be opened the usual way.

    The header of a WAV describes its sound completely, but FFmpeg still reads and
    decodes up to 5 s of it to learn what it already knows: 6-22 ms an open, and a job
    opens its speech several times.
    """
    container = av.open(os.fspath(path), "r", format="wav",
                        container_options={**_OPEN_OPTIONS, "probesize": "32"})
    audio = container.streams.audio
    if audio and all(s.codec_context.sample_rate > 0 and s.codec_context.channels > 0 for s in audio):
        return container
    container.close()
    return None


def _reason(exc: BaseException) -> str:
    # FFmpeg errors repeat the (temporary, meaningless to the client) path; keep the cause.
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _video_stream(container) -> av.video.stream.VideoStream | None:
    for stream in container.streams.video:
        # Cover art in MP3/M4A files is a video stream flagged as an attached picture.
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        return stream
    return None


def _audio_stream(container) -> av.audio.stream.AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _check_decodes(container, streams: list, max_packets: int = 1000) -> None:
    """Decode until every stream in `streams` gave a frame: headers alone do not prove the data is usable."""
    waiting = {s.index: s for s in streams}
    try:
        for count, packet in enumerate(container.demux(streams)):
            if packet.stream_index in waiting and packet.decode():
                del waiting[packet.stream_index]
                if not waiting:
                    return
            if count >= max_packets:
                break
        # Codecs with delay hold frames back until flushed.
        for index, stream in list(waiting.items()):
            if stream.codec_context.decode(None):
                del waiting[index]
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"the file cannot be decoded: {_reason(exc)}") from exc
    if waiting:
        kinds = " and ".join(sorted(s.type for s in waiting.values()))
        raise MediaError(f"the {kinds} stream holds no decodable frame")


def probe(path: str, expect: str | None = None, decode_check: bool = True) -> MediaInfo:
    """Describe the streams of `path`; with `expect` (audio, video or image) also check its kind.

    A still image is not a video; a video with a sound track counts as audio. Unless
    `decode_check` is off (for files this service has just written from checked inputs),
    each stream must also decode a frame.
    """
    info = MediaInfo(size_bytes=os.path.getsize(path))
    with _open(path) as container:
        info.format = container.format.name
        video = _video_stream(container)
        audio = _audio_stream(container)
        if video is None and audio is None:
            raise MediaError("the file holds no audio or video stream")
        if video is not None:
            ctx = video.codec_context
            info.has_video = True
            info.video_codec = ctx.name
            info.width, info.height = ctx.width, ctx.height
            rate = video.average_rate or video.guessed_rate
            info.fps = float(rate) if rate else 0.0
            info.is_image = audio is None and (
                info.format == "image2"
                or info.format.endswith("_pipe")
                or (ctx.name in _STILL_CODECS and (video.frames or 0) <= 1)
            )
        if audio is not None:
            ctx = audio.codec_context  # type: ignore[assignment]
            info.has_audio = True
            info.audio_codec = ctx.name
            info.sample_rate = ctx.sample_rate  # type: ignore[attr-defined]
            info.channels = ctx.channels  # type: ignore[attr-defined]
        if container.duration is not None and container.duration > 0:
            info.duration_seconds = container.duration / av.time_base
        else:
            spans = [float(s.duration * s.time_base) for s in (video, audio) if s is not None and s.duration]  # type: ignore[operator]
            info.duration_seconds = max(spans, default=0.0)
        if info.is_image:
            info.fps = 0.0
            info.duration_seconds = 0.0
        if info.width * info.height > MAX_PIXELS:
            # Decoding a frame this big to check it is how a small upload exhausts memory.
            raise MediaError(f"the picture is {info.width}x{info.height}, more than {MAX_PIXELS} pixels")
        if decode_check:
            _check_decodes(container, [s for s in (video, audio) if s is not None])
    if expect:
        check_kind(info, expect)
    return info


def check_kind(info: MediaInfo, expect: str) -> None:
    """Raise `wrong_media_kind` unless `info` is what `expect` asks for."""
    ok = {
        KIND_AUDIO: info.has_audio,
        KIND_VIDEO: info.has_video and not info.is_image,
        KIND_IMAGE: info.is_image,
    }.get(expect)
    if ok is None:
        raise ValueError(f"unknown media kind {expect!r}")
    if not ok:
        found = info.kind or "nothing usable"
        raise MediaError(f"expected {expect}, found {found} ({info.format})", code="wrong_media_kind")


def _iter_audio(path: str, fmt: str, layout: str, rate: int) -> Iterator[np.ndarray]:
    """Decode the first audio stream of `path` and yield resampled sample blocks.

    Blocks are `to_ndarray()` shaped: (channels, n) for planar formats, (1, n * channels)
    for packed ones. The decoder's padding past the container's last packet is cut.
    """
    with _open(path) as container:
        stream = _audio_stream(container)
        if stream is None:
            raise MediaError("the file holds no audio stream", code="wrong_media_kind")
        channels = 1 if layout == "mono" else 2
        planar = fmt.endswith("p")
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        holdback = int(_MAX_TAIL_PADDING_SECONDS * rate)
        pending: list[np.ndarray] = []
        pending_samples = 0
        yielded = 0
        first_pts = None
        end_ts = None

        def width(block: np.ndarray) -> int:
            return block.shape[1] if planar else block.shape[1] // channels

        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.duration:
                    end = packet.pts + packet.duration
                    end_ts = end if end_ts is None else max(end_ts, end)
                for frame in packet.decode():
                    if first_pts is None and frame.pts is not None:
                        first_pts = frame.pts
                    for out in resampler.resample(frame):
                        pending.append(out.to_ndarray())
                        pending_samples += out.samples
                    # Keep the last blocks back until we know where the stream ends.
                    while pending and pending_samples - width(pending[0]) >= holdback:
                        block = pending.pop(0)
                        pending_samples -= width(block)
                        yielded += width(block)
                        yield block
            for out in resampler.resample(None):
                pending.append(out.to_ndarray())
                pending_samples += out.samples
        except (av.FFmpegError, ValueError) as exc:
            raise MediaError(f"the audio cannot be decoded: {_reason(exc)}") from exc

        keep = pending_samples
        if end_ts is not None and first_pts is not None:
            declared = round((end_ts - first_pts) * stream.time_base * rate)  # type: ignore[operator]
            excess = yielded + pending_samples - declared
            if 0 < excess <= holdback:
                keep = pending_samples - excess
        for block in pending:
            if keep <= 0:
                break
            n = width(block)
            if n > keep:
                block = block[:, : keep if planar else keep * channels]
                n = keep
            keep -= n
            yield block


def normalize_audio(src: str, dst: str, max_seconds: float = 0) -> tuple[float, str]:
    """Write the audio of `src` to `dst` as 16 kHz mono 16-bit WAV; return (seconds, PCM sha256).

    `max_seconds` > 0 cuts the audio to that length. The hash covers the samples only,
    so the same speech in two containers hashes alike.
    """
    limit = int(round(max_seconds * NORMALIZED_RATE)) if max_seconds and max_seconds > 0 else None
    digest = hashlib.sha256()
    written = 0
    with wave.open(os.fspath(dst), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(NORMALIZED_RATE)
        blocks = _iter_audio(src, "s16", "mono", NORMALIZED_RATE)
        with closing(blocks):  # type: ignore[type-var]
            for block in blocks:
                samples = block.reshape(-1).astype("<i2", copy=False)
                if limit is not None and written + samples.size > limit:
                    samples = samples[: limit - written]
                data = samples.tobytes()
                out.writeframes(data)
                digest.update(data)
                written += samples.size
                if limit is not None and written >= limit:
                    break
    if written == 0:
        raise MediaError("the audio holds no samples")
    return written / NORMALIZED_RATE, digest.hexdigest()


def _packet_spans(container, audio_frame: int = 0) -> dict[str, tuple[Fraction, Fraction, int]]:
    """{"video"/"audio": (start, end, packet count)} in seconds, from packet timestamps, in one pass.

    Packets the decoder is told to drop (encoder delay) are not counted. `audio_frame`
    (in the audio stream's time base) counts a short last audio packet as a whole frame,
    which is what it decodes to.
    """
    streams = [s for s in (_video_stream(container), _audio_stream(container)) if s is not None]
    spans: dict[str, tuple[Fraction, Fraction, int]] = {}
    try:
        for packet in container.demux(streams):
            if packet.pts is None or packet.is_discard:
                continue
            kind = packet.stream.type
            tb = packet.time_base
            duration = packet.duration or 0
            if kind == KIND_AUDIO:
                duration = max(duration, audio_frame)
            s, e = packet.pts * tb, (packet.pts + duration) * tb
            if kind in spans:
                s0, e0, n = spans[kind]
                spans[kind] = (min(s0, s), max(e0, e), n + 1)
            else:
                spans[kind] = (s, e, 1)
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"the file cannot be read: {_reason(exc)}") from exc
    return spans


def _aac_layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


def aac_rate(source_rate: int, wanted: int = 0) -> int:
    """The rate mux() encodes sound of `source_rate` Hz at: `wanted` when given (clips to be
    joined must share one), else the lower of AAC_RATES that holds all of the sound."""
    if wanted:
        if wanted not in AAC_RATES:
            raise MediaError(f"sample rate {wanted} Hz: AAC is written at {' or '.join(map(str, AAC_RATES))} Hz",
                             code="invalid_request")
        return wanted
    return AAC_RATES[0] if 0 < source_rate <= AAC_RATES[0] else AAC_RATES[-1]


def _add_aac_stream(out, rate: int, layout: str):
    # The fast coder takes half the CPU of the default (twoloop) one; at 128 kb/s speech
    # keeps its sound (tests/media/test_media_ops.py compares it with the input).
    stream = out.add_stream("aac", rate=rate, layout=layout, options={"aac_coder": "fast"})
    stream.bit_rate = 128_000
    return stream


def encode_audio(src: str, dst: str, pad_seconds: float = PREENCODE_PAD_SECONDS, rate: int = 0) -> float:
    """Write `dst`: the audio of `src` as the AAC track mux() would make (at
    aac_rate(its rate, `rate`), whole frames), followed by `pad_seconds` of silence; return
    the seconds of sound it holds.

    mux() copies the packets of such a file instead of encoding the audio again, so a
    pipeline can encode the sound while the picture renders and mux in a stream copy.
    """
    with _open(src) as ain:
        astream = _audio_stream(ain)
        if astream is None:
            raise MediaError("the audio input holds no audio stream", code="wrong_media_kind")
        layout = _aac_layout(astream.codec_context.channels)
        rate = aac_rate(astream.codec_context.sample_rate, rate)
    heard: list[int] = []
    try:
        with av.open(os.fspath(dst), "w", format="mp4") as out:
            stream = _add_aac_stream(out, rate, layout)
            for packet in _aac_packets(src, stream, rate, layout, None, Fraction(0),
                                       pad=int(round(pad_seconds * rate)), heard=heard):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"cannot encode this audio: {_reason(exc)}") from exc
    if not heard or heard[0] == 0:
        raise MediaError("the audio holds no samples")
    return heard[0] / rate


def _copyable_aac(container, astream, frames: int, rate: int) -> list | None:
    """The packets of an AAC track in mux()'s format at `rate` holding at least `frames`
    whole frames: its encoder-delay packets and then `frames` frames; None when the track
    must be encoded instead (another codec or rate, a gap, or too short)."""
    if astream is None or _video_stream(container) is not None:
        return None
    ctx = astream.codec_context
    if (ctx.name != "aac" or ctx.sample_rate != rate or ctx.channels not in (1, 2)
            or astream.time_base != Fraction(1, rate)):
        return None
    packets, counted, expect = [], 0, None
    for packet in container.demux(astream):
        if packet.dts is None or packet.pts is None:
            continue
        if not packet.is_discard:
            if packet.duration != AAC_FRAME_SAMPLES or (expect is not None and packet.pts != expect):
                return None  # a short frame (the end of the sound) or a gap
            expect = packet.pts + AAC_FRAME_SAMPLES
            counted += 1
        packets.append(packet)
        if counted == frames:
            return packets
    return None


def _moved(packets: list, stream, start: Fraction, rate: int) -> Iterator[av.Packet]:
    """`packets` (time base 1 / `rate`) on `stream`, shifted so the first frame that is heard
    starts at `start`."""
    shift = int(round(start * rate)) - next(p.pts for p in packets if not p.is_discard)
    for packet in packets:
        packet.pts += shift
        packet.dts += shift
        packet.stream = stream
        yield packet


def mux(video: str, audio: str, dst: str, rate: int = 0) -> MediaInfo:
    """Write `dst`: the video stream of `video` copied as is, plus `audio` encoded to AAC at
    aac_rate(its rate, `rate`).

    The audio is cut or padded with silence to the video's duration, rounded up to a
    whole AAC frame, so both tracks end together; the file is written with its index first
    (+faststart) for streaming. Audio from encode_audio() at that rate that covers the video
    is copied, not encoded again.
    """
    try:
        with _open(video) as vin:
            vstream = _video_stream(vin)
            if vstream is None:
                raise MediaError("the video input holds no video stream", code="wrong_media_kind")
            if vstream.codec_context.name not in COPYABLE_VIDEO_CODECS:
                raise MediaError(
                    f"the video codec {vstream.codec_context.name} cannot be copied into MP4 "
                    f"(accepted: {', '.join(COPYABLE_VIDEO_CODECS)})",
                    code="unsupported_codec",
                )
            v_start, v_end, v_count = _packet_spans(vin).get(KIND_VIDEO, (Fraction(0), Fraction(0), 0))
            if v_count == 0 or v_end <= v_start:
                raise MediaError("the video input holds no frames")
            # Back to the first packet: opening the file again would analyse its streams again.
            vin.seek(0)
            with _open(audio) as ain:
                astream = _audio_stream(ain)
                if astream is None:
                    raise MediaError("the audio input holds no audio stream", code="wrong_media_kind")
                _mux_into(dst, vin, vstream, v_start, v_end, audio, ain, astream,
                          aac_rate(astream.codec_context.sample_rate, rate))
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"cannot mux these inputs: {_reason(exc)}") from exc
    return probe(dst, decode_check=False)


def _mux_into(dst: str, vin, vstream, v_start: Fraction, v_end: Fraction, audio: str, ain, astream,
              rate: int) -> None:
    # Whole AAC frames only: a short last frame still decodes to a whole one, so a clip
    # whose sound ended mid-frame would carry a hidden tail that shifts everything after
    # it when clips are joined by stream copy.
    frames = -(-int(round((v_end - v_start) * rate)) // AAC_FRAME_SAMPLES)
    total = frames * AAC_FRAME_SAMPLES
    with av.open(os.fspath(dst), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        ov = out.add_stream_from_template(vstream)
        copied = _copyable_aac(ain, astream, frames, rate)
        if copied is not None:
            audio_packets = _moved(copied, out.add_stream_from_template(astream), v_start, rate)
        else:
            layout = _aac_layout(astream.codec_context.channels)
            oa = _add_aac_stream(out, rate, layout)
            audio_packets = _aac_packets(audio, oa, rate, layout, total, start=v_start)
        pending = next(audio_packets, None)
        for packet in vin.demux(vstream):
            if packet.dts is None:
                continue  # the demuxer's end-of-stream marker
            now = packet.dts * packet.time_base
            # Interleave as we go so the muxer never buffers a whole track.
            while pending is not None and pending.pts * pending.time_base <= now:  # type: ignore[operator]
                out.mux(pending)
                pending = next(audio_packets, None)
            packet.stream = ov
            out.mux(packet)
        while pending is not None:
            out.mux(pending)
            pending = next(audio_packets, None)


def _aac_packets(path: str, stream, rate: int, layout: str, total: int | None, start: Fraction,
                 pad: int = 0, heard: list[int] | None = None) -> Iterator[av.Packet]:
    """Encode exactly `total` samples of the audio of `path` (cut or silence-padded) with `stream`.

    `total` None: all of the audio and then `pad` samples of silence, up to a whole AAC
    frame; the number of samples of sound is appended to `heard`.
    """
    channels = 1 if layout == "mono" else 2
    frame_size = AAC_FRAME_SAMPLES
    offset = int(round(start * rate))
    buffer = np.zeros((channels, 0), dtype=np.float32)
    sent = 0
    whole = total is None
    if whole:
        total = np.iinfo(np.int64).max  # until the audio ends

    def frames(block: np.ndarray, final: bool) -> Iterator[av.AudioFrame]:
        nonlocal buffer, sent
        buffer = np.concatenate([buffer, block], axis=1) if block.size else buffer
        while sent < total and (buffer.shape[1] >= frame_size or (final and buffer.shape[1] > 0)):  # type: ignore[operator]
            n = min(frame_size, total - sent, buffer.shape[1])  # type: ignore[operator]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(buffer[:, :n]), format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = offset + sent
            buffer = buffer[:, n:]
            sent += n
            yield frame

    blocks = _iter_audio(path, "fltp", layout, rate)
    with closing(blocks):  # type: ignore[type-var]
        for block in blocks:
            for frame in frames(block, final=False):
                yield from stream.encode(frame)
            if sent >= total:  # type: ignore[operator]
                break
    if whole:
        sound = sent + buffer.shape[1]
        total = -(-(sound + pad) // frame_size) * frame_size
        if heard is not None:
            heard.append(sound)
    if sent < total:  # type: ignore[operator]
        # Short audio: silence until the video ends.
        missing = total - sent - buffer.shape[1]  # type: ignore[operator]
        pad = np.zeros((channels, max(0, missing)), dtype=np.float32)  # type: ignore[assignment]
        for frame in frames(pad, final=True):  # type: ignore[arg-type]
            yield from stream.encode(frame)
    yield from stream.encode(None)


@dataclass
class _Clip:
    """What concat() needs to know of one input."""

    path: str
    video: tuple | None
    audio: tuple | None
    audio_frame: int
    duration: Fraction


def _clip_signature(path: str, number: int) -> _Clip:
    with _open(path) as container:
        v = _video_stream(container)
        a = _audio_stream(container)
        if v is None:
            raise MediaError(f"clip {number} holds no video stream", code="wrong_media_kind")
        vctx = v.codec_context
        # The nominal rate: a joined file's average rate dips where its joins left gaps.
        rate = v.base_rate or v.average_rate
        video = (vctx.name, vctx.width, vctx.height, str(vctx.pix_fmt), rate, bytes(vctx.extradata or b""))
        audio = None
        audio_frame = 0
        if a is not None:
            actx = a.codec_context
            audio = (actx.name, actx.sample_rate, actx.channels, bytes(actx.extradata or b""))
            # In the stream's time base, which for audio in MP4 is 1 / sample rate.
            audio_frame = int(round(Fraction(actx.frame_size or 0, actx.sample_rate) / a.time_base))  # type: ignore[operator]
        spans = _packet_spans(container, audio_frame)
    if KIND_VIDEO not in spans:
        raise MediaError(f"clip {number} holds no video frames")
    v_start, v_end, _ = spans[KIND_VIDEO]
    a_end = spans.get(KIND_AUDIO, (0, Fraction(0), 0))[1]
    # The next clip starts where this one's longer track ends, so tracks never overlap.
    return _Clip(path=path, video=video, audio=audio, audio_frame=audio_frame,
                 duration=max(v_end, a_end) - min(v_start, Fraction(0)))


_VIDEO_FIELDS = ("codec", "width", "height", "pixel format", "frame rate", "codec parameters (SPS/PPS)")
_AUDIO_FIELDS = ("codec", "sample rate", "channels", "codec parameters")


def _compare(first: _Clip, clip: _Clip, index: int) -> None:
    if (first.audio is None) != (clip.audio is None):
        has = "has" if clip.audio else "has no"
        raise MediaError(f"clip {index + 1} {has} audio, unlike clip 1", code="concat_mismatch")
    for label, fields, a, b in (
        ("video", _VIDEO_FIELDS, first.video, clip.video),
        ("audio", _AUDIO_FIELDS, first.audio, clip.audio),
    ):
        if a is None:
            continue
        for name, x, y in zip(fields, a, b):  # type: ignore[arg-type]
            if x != y:
                shown = (x, y) if not isinstance(x, bytes) else ("…", "different bytes")
                raise MediaError(
                    f"clip {index + 1} differs from clip 1 in {label} {name}: {shown[1]} vs {shown[0]}; "
                    "clips are joined without re-encoding and must be encoded alike",
                    code="concat_mismatch",
                )


def concat(sources: Sequence[str], dst: str) -> MediaInfo:
    """Join MP4 clips into `dst` by copying their packets (no re-encoding), in order.

    The clips must share codecs, size, frame rate and codec parameters. Each clip's
    timestamps are shifted by the length of the clips before it (its longer track), so
    sound and picture stay in step at every join: the encoder-delay packets at the head
    of each later clip's AAC track are dropped, because keeping them would overlap the
    previous clip and push the sound later at every join.
    """
    if not sources:
        raise MediaError("no clips to join", code="invalid_request")
    clips = [_clip_signature(p, number) for number, p in enumerate(sources, start=1)]
    for index, clip in enumerate(clips[1:], start=1):
        _compare(clips[0], clip, index)

    try:
        with av.open(os.fspath(dst), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            out_streams = {}
            offset = Fraction(0)
            for index, clip in enumerate(clips):
                with _open(clip.path) as container:
                    wanted = [s for s in (_video_stream(container), _audio_stream(container)) if s is not None]
                    if index == 0:
                        for s in wanted:
                            out_streams[s.type] = out.add_stream_from_template(s)
                    for packet in container.demux(wanted):
                        if packet.dts is None:
                            continue
                        if index > 0 and packet.is_discard:
                            continue
                        if (
                            packet.stream.type == "audio"
                            and index < len(clips) - 1
                            and 0 < (packet.duration or 0) < clip.audio_frame
                        ):
                            # A short last frame still decodes to a whole one: say so, and
                            # the next clip starts after it instead of overlapping it.
                            packet.duration = clip.audio_frame
                        tb = packet.time_base
                        shift = int(round(offset / tb))
                        packet.pts += shift  # type: ignore[operator]
                        packet.dts += shift
                        packet.stream = out_streams[packet.stream.type]  # type: ignore[index]
                        out.mux(packet)
                offset += clip.duration
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"cannot join these clips: {_reason(exc)}") from exc
    log.debug("joined %d clips, %.3f s", len(clips), float(offset))
    return probe(dst, decode_check=False)
