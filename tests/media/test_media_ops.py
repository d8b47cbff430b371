"""Probe, NormalizeAudio, Mux and Concat through the real media server and the real store."""

from __future__ import annotations

import hashlib
import wave

import av
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from libs.grpcutil.errors import error_code_of
from talkserve.common.v1 import common_pb2
from talkserve.media.v1 import media_pb2
from tests.media import mediafiles

AUDIO, VIDEO, IMAGE = media_pb2.MEDIA_KIND_AUDIO, media_pb2.MEDIA_KIND_VIDEO, media_pb2.MEDIA_KIND_IMAGE


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=30, **kwargs)
    return caught.value


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[np.argmax(spectrum)])


def decode_mono(path, start: float = 0.0, end: float | None = None, rate: int = 16000) -> np.ndarray:
    """The audio of `path` between start and end seconds, mono float, by the frames' own timestamps."""
    out = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            for r in resampler.resample(frame):
                t = float(r.pts * r.time_base) if r.pts is not None else None
                if t is None or (t >= start and (end is None or t < end)):
                    out.append(r.to_ndarray().reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# -- health and probe ----------------------------------------------------------------------


def test_server_reports_serving(media):
    reply = media.health.Check(health_pb2.HealthCheckRequest(service="talkserve.media.v1.MediaService"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "name, expect, check",
    [
        ("tone.wav", AUDIO, dict(has_audio=True, has_video=False, sample_rate=22050, channels=1, audio_codec="pcm_s16le")),
        ("tone.mp3", AUDIO, dict(has_audio=True, has_video=False, sample_rate=44100, channels=2)),
        ("talk.mp4", VIDEO, dict(has_video=True, has_audio=True, width=160, height=120, fps=24.0, video_codec="h264")),
        ("talk.mp4", AUDIO, dict(has_audio=True, audio_codec="aac")),
        ("face.png", IMAGE, dict(has_video=True, has_audio=False, width=96, height=112, video_codec="png")),
        ("face.jpg", IMAGE, dict(has_video=True, width=96, height=112, video_codec="mjpeg")),
    ],
)
def test_probe_describes_audio_video_and_images(media, files, name, expect, check):
    reply = media.stub.Probe(media_pb2.ProbeRequest(source=media.put(files[name]), expect=expect), timeout=30)
    info = reply.info
    for field, value in check.items():
        assert getattr(info, field) == value, field
    assert info.size_bytes == files[name].stat().st_size
    if expect in (AUDIO, VIDEO):
        assert info.duration_seconds == pytest.approx(1.3, abs=0.03)


@pytest.mark.parametrize(
    "name, expect, code",
    [
        ("garbage.bin", media_pb2.MEDIA_KIND_UNSPECIFIED, "bad_media"),
        ("notes.txt", AUDIO, "bad_media"),
        ("face.png", VIDEO, "wrong_media_kind"),
        ("silent.mp4", AUDIO, "wrong_media_kind"),
        ("tone.wav", IMAGE, "wrong_media_kind"),
    ],
)
def test_probe_of_the_wrong_thing_is_invalid_argument(media, files, name, expect, code):
    err = rpc_error(media.stub.Probe, media_pb2.ProbeRequest(source=media.put(files[name]), expect=expect))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == code
    assert "/tmp" not in err.details()  # no server paths leak to clients


def test_probe_of_a_missing_object_is_not_found(media):
    err = rpc_error(media.stub.Probe, media_pb2.ProbeRequest(source=common_pb2.ObjectRef(key="in/nothing-here")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert error_code_of(err) == "object_not_found"


def test_another_bucket_is_refused(media, files):
    ref = media.put(files["tone.wav"])
    ref.bucket = "someone-elses-bucket"
    err = rpc_error(media.stub.Probe, media_pb2.ProbeRequest(source=ref))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "invalid_request"


# -- normalise -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tone.wav", "tone.mp3", "tone.flac", "tone.ogg", "tone.m4a", "talk.mp4"])
def test_normalize_makes_16k_mono_wav_of_the_same_length(media, files, new_ref, tmp_path, name):
    dest = new_ref("speech.wav")
    reply = media.stub.NormalizeAudio(
        media_pb2.NormalizeAudioRequest(source=media.put(files[name]), destination=dest), timeout=30
    )
    assert reply.duration_seconds == pytest.approx(1.3, abs=0.02)
    with wave.open(str(media.get(dest, tmp_path / "out.wav")), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        pcm = wav.readframes(wav.getnframes())
        assert wav.getnframes() / 16000 == pytest.approx(reply.duration_seconds, abs=1e-9)
    assert reply.pcm_sha256 == hashlib.sha256(pcm).hexdigest()
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    expected_hz = 300 if name == "talk.mp4" else 440
    assert dominant_hz(samples, 16000) == pytest.approx(expected_hz, abs=5)
    assert np.sqrt(np.mean(samples**2)) > 0.1  # the tone, not silence


def test_normalize_gives_lossless_sources_the_same_pcm_hash(media, files, new_ref):
    def pcm_hash(name):
        return media.stub.NormalizeAudio(
            media_pb2.NormalizeAudioRequest(source=media.put(files[name]), destination=new_ref("a.wav")), timeout=30
        ).pcm_sha256

    assert pcm_hash("tone.flac") == pcm_hash("tone.flac")
    assert pcm_hash("tone.flac") != pcm_hash("tone.mp3")


def test_normalize_cuts_to_max_seconds(media, files, new_ref):
    reply = media.stub.NormalizeAudio(
        media_pb2.NormalizeAudioRequest(source=media.put(files["tone.mp3"]), destination=new_ref("a.wav"), max_seconds=0.5),
        timeout=30,
    )
    assert reply.duration_seconds == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("name, code", [("face.png", "wrong_media_kind"), ("garbage.bin", "bad_media")])
def test_normalize_refuses_what_has_no_audio(media, files, new_ref, name, code):
    dest = new_ref("a.wav")
    err = rpc_error(media.stub.NormalizeAudio, media_pb2.NormalizeAudioRequest(source=media.put(files[name]), destination=dest))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == code


# -- mux -----------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_name, audio_seconds", [("short.wav", 1.2), ("long.mp3", 3.1)])
def test_mux_copies_the_video_and_fits_the_audio_to_it(media, files, new_ref, tmp_path, audio_name, audio_seconds):
    dest = new_ref("talk.mp4")
    reply = media.stub.Mux(
        media_pb2.MuxRequest(video=media.put(files["silent.mp4"]), audio=media.put(files[audio_name]), destination=dest),
        timeout=60,
    )
    out = media.get(dest, tmp_path / "out.mp4")
    assert reply.info.has_video and reply.info.has_audio
    assert reply.info.video_codec == "h264" and reply.info.audio_codec == "aac"
    assert reply.info.duration_seconds == pytest.approx(2.0, abs=0.1)

    video_span = mediafiles.stream_span(out, "video")
    audio_span = mediafiles.stream_span(out, "audio")
    assert video_span == pytest.approx(2.0, abs=1e-6)
    assert audio_span == pytest.approx(video_span, abs=0.1)
    decoded = decode_mono(out)
    assert decoded.size / 16000 == pytest.approx(video_span, abs=0.1)

    # Stream copy: every video packet is the input's, byte for byte, in the same order.
    assert [p[0] for p in mediafiles.packets(out, "video")] == [p[0] for p in mediafiles.packets(files["silent.mp4"], "video")]
    boxes = mediafiles.top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart

    heard = decode_mono(out, 0.2, 1.0)
    assert dominant_hz(heard, 16000) == pytest.approx(440, abs=5)
    if audio_seconds < 2.0:
        tail = decode_mono(out, audio_seconds + 0.1, 2.0)
        assert np.sqrt(np.mean(tail**2)) < 1e-3  # padded with silence


def _encode_then_mux(media, files, new_ref, tmp_path, audio_name):
    encoded = new_ref("audio.m4a")
    enc = media.stub.EncodeAudio(
        media_pb2.EncodeAudioRequest(source=media.put(files[audio_name]), destination=encoded), timeout=60)
    dest = new_ref("talk.mp4")
    media.stub.Mux(media_pb2.MuxRequest(video=media.put(files["silent.mp4"]), audio=encoded, destination=dest),
                   timeout=60)
    return enc, media.get(encoded, tmp_path / "audio.m4a"), media.get(dest, tmp_path / "encoded.mp4")


def test_mux_copies_a_track_encoded_ahead_and_it_sounds_like_encoding_at_mux_time(media, files, new_ref, tmp_path):
    enc, m4a, out = _encode_then_mux(media, files, new_ref, tmp_path, "short.wav")
    assert enc.duration_seconds == pytest.approx(1.2, abs=1e-3)
    assert enc.padding_seconds == pytest.approx(1.0)
    assert mediafiles.stream_span(m4a, "audio") >= 2.2 - 1e-3  # sound + silence

    direct = new_ref("direct.mp4")
    media.stub.Mux(media_pb2.MuxRequest(video=media.put(files["silent.mp4"]), audio=media.put(files["short.wav"]),
                                        destination=direct), timeout=60)
    direct_path = media.get(direct, tmp_path / "direct.mp4")

    # the audio packets are the encoded file's, byte for byte: nothing was encoded again
    copied = [p[0] for p in mediafiles.packets(out, "audio")]
    assert copied == [p[0] for p in mediafiles.packets(m4a, "audio")][: len(copied)]
    assert mediafiles.stream_span(out, "audio") == pytest.approx(mediafiles.stream_span(direct_path, "audio"), abs=1e-6)
    assert mediafiles.stream_span(out, "video") == pytest.approx(2.0, abs=1e-6)
    a, b = decode_mono(out), decode_mono(direct_path)
    assert a.size == b.size
    assert np.corrcoef(a[:19200], b[:19200])[0, 1] > 0.99  # the tone, in the same place
    assert dominant_hz(decode_mono(out, 0.2, 1.0), 16000) == pytest.approx(440, abs=5)
    assert np.sqrt(np.mean(decode_mono(out, 1.3, 2.0) ** 2)) < 1e-3  # silence after the sound


def test_mux_encodes_afresh_when_the_track_encoded_ahead_ends_before_the_video(media, new_ref, tmp_path):
    files = {"blip.wav": tmp_path / "blip.wav", "silent.mp4": tmp_path / "silent.mp4"}
    mediafiles.write_wav(files["blip.wav"], 0.5, rate=16000, freq=440)  # 0.5 s + 1 s of padding < 2 s of video
    mediafiles.write_video(files["silent.mp4"], 2.0)
    _, m4a, out = _encode_then_mux(media, files, new_ref, tmp_path, "blip.wav")
    assert mediafiles.stream_span(m4a, "audio") < 2.0
    assert mediafiles.stream_span(out, "audio") == pytest.approx(2.0, abs=1024 / 24000)  # one AAC frame
    assert dominant_hz(decode_mono(out, 0.1, 0.45), 16000) == pytest.approx(440, abs=5)
    assert np.sqrt(np.mean(decode_mono(out, 0.7, 2.0) ** 2)) < 1e-3


def _rate(path) -> int:
    with av.open(str(path)) as c:
        return c.streams.audio[0].codec_context.sample_rate


@pytest.mark.parametrize("name, wanted, rate", [
    ("short.wav", 0, 24000),  # 16 kHz speech: 24 kHz AAC holds all of it
    ("long.mp3", 0, 48000),  # 44.1 kHz
    ("short.wav", 48000, 48000),  # asked for, as clips to be joined are
])
def test_the_aac_rate_follows_the_sound_unless_one_is_asked_for(media, files, new_ref, tmp_path, name, wanted, rate):
    encoded = new_ref("audio.m4a")
    media.stub.EncodeAudio(media_pb2.EncodeAudioRequest(
        source=media.put(files[name]), destination=encoded, sample_rate=wanted), timeout=60)
    m4a = media.get(encoded, tmp_path / "audio.m4a")
    assert _rate(m4a) == rate
    dest = new_ref("talk.mp4")
    reply = media.stub.Mux(media_pb2.MuxRequest(video=media.put(files["silent.mp4"]), audio=encoded,
                                                destination=dest, sample_rate=wanted), timeout=60)
    out = media.get(dest, tmp_path / "talk.mp4")
    assert reply.info.sample_rate == rate == _rate(out)
    copied = [p[0] for p in mediafiles.packets(out, "audio")]
    assert copied == [p[0] for p in mediafiles.packets(m4a, "audio")][: len(copied)]
    # The sound runs past the picture by less than one AAC frame.
    assert 0 <= mediafiles.stream_span(out, "audio") - mediafiles.stream_span(out, "video") < 1024 / rate
    assert dominant_hz(decode_mono(out, 0.2, 1.0), 16000) == pytest.approx(440, abs=5)

    # A mux asked for another rate encodes the sound again at that one.
    again = new_ref("again.mp4")
    other = 48000 if rate == 24000 else 24000
    media.stub.Mux(media_pb2.MuxRequest(video=media.put(files["silent.mp4"]), audio=encoded,
                                        destination=again, sample_rate=other), timeout=60)
    redone = media.get(again, tmp_path / "again.mp4")
    assert _rate(redone) == other
    assert dominant_hz(decode_mono(redone, 0.2, 1.0), 16000) == pytest.approx(440, abs=5)


@pytest.mark.parametrize("call", ["EncodeAudio", "Mux"])
def test_an_aac_rate_the_service_does_not_write_is_refused(media, files, new_ref, call):
    audio = media.put(files["short.wav"])
    request = (media_pb2.EncodeAudioRequest(source=audio, destination=new_ref("a.m4a"), sample_rate=44100)
               if call == "EncodeAudio" else
               media_pb2.MuxRequest(video=media.put(files["silent.mp4"]), audio=audio, destination=new_ref("o.mp4"),
                                    sample_rate=44100))
    err = rpc_error(getattr(media.stub, call), request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "invalid_request" and "24000 or 48000" in err.details()


def test_encode_audio_of_a_file_without_sound_is_a_clear_error(media, files, new_ref):
    err = rpc_error(media.stub.EncodeAudio, media_pb2.EncodeAudioRequest(
        source=media.put(files["silent.mp4"]), destination=new_ref("a.m4a")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "wrong_media_kind"


def test_mux_refuses_a_video_it_cannot_copy(media, files, new_ref):
    err = rpc_error(media.stub.Mux, media_pb2.MuxRequest(
        video=media.put(files["silent_mpeg4.mp4"]), audio=media.put(files["short.wav"]), destination=new_ref("o.mp4")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "unsupported_codec"


def test_mux_with_a_missing_audio_object_is_not_found(media, files, new_ref):
    err = rpc_error(media.stub.Mux, media_pb2.MuxRequest(
        video=media.put(files["silent.mp4"]), audio=common_pb2.ObjectRef(key="in/missing.wav"), destination=new_ref("o.mp4")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- concat --------------------------------------------------------------------------------


def _muxed_parts(media, files, new_ref):
    parts = []
    for i in range(3):
        dest = new_ref(f"part{i}.mp4")
        media.stub.Mux(media_pb2.MuxRequest(
            video=media.put(files[f"part{i}.mp4"]), audio=media.put(files[f"part{i}.wav"]), destination=dest), timeout=60)
        parts.append(dest)
    return parts


def test_concat_joins_clips_by_stream_copy(media, files, new_ref, tmp_path):
    parts = _muxed_parts(media, files, new_ref)
    local = [media.get(ref, tmp_path / f"part{i}.mp4") for i, ref in enumerate(parts)]
    durations = [media.stub.Probe(media_pb2.ProbeRequest(source=ref), timeout=30).info.duration_seconds for ref in parts]
    dest = new_ref("joined.mp4")
    reply = media.stub.Concat(media_pb2.ConcatRequest(sources=parts, destination=dest), timeout=60)
    out = media.get(dest, tmp_path / "joined.mp4")

    assert reply.info.duration_seconds == pytest.approx(sum(durations), abs=0.1)
    assert mediafiles.stream_span(out, "video") == pytest.approx(sum(durations), abs=0.1)
    assert mediafiles.stream_span(out, "audio") == pytest.approx(sum(durations), abs=0.1)

    # No re-encoding: the same video packets, byte for byte, and the same codec parameters.
    joined_video = [p[0] for p in mediafiles.packets(out, "video")]
    assert joined_video == [p[0] for path in local for p in mediafiles.packets(path, "video")]
    with av.open(str(out)) as joined, av.open(str(local[0])) as first:
        assert joined.streams.video[0].codec_context.extradata == first.streams.video[0].codec_context.extradata
        assert joined.streams.audio[0].codec_context.extradata == first.streams.audio[0].codec_context.extradata
    boxes = mediafiles.top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")

    # Sound stays with its picture: each part's own tone is heard in the middle of its span.
    start = 0.0
    for i, length in enumerate(durations):
        middle = decode_mono(out, start + 0.25 * length, start + 0.75 * length)
        assert dominant_hz(middle, 16000) == pytest.approx(300 + 200 * i, abs=8), f"part {i}"
        start += length


@pytest.mark.parametrize("odd", ["part_big.mp4", "part_30fps.mp4"])
def test_concat_refuses_clips_encoded_differently(media, files, new_ref, odd):
    sources = [media.put(files["part0.mp4"]), media.put(files[odd])]
    err = rpc_error(media.stub.Concat, media_pb2.ConcatRequest(sources=sources, destination=new_ref("j.mp4")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err) == "concat_mismatch"
    assert "clip 2" in err.details()


def test_concat_of_nothing_is_invalid(media, new_ref):
    err = rpc_error(media.stub.Concat, media_pb2.ConcatRequest(destination=new_ref("j.mp4")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT



@pytest.mark.parametrize("codec, layout", [("pcm_s16le", "mono"), ("pcm_s32le", "stereo"), ("pcm_f32le", "stereo"),
                                           ("adpcm_ms", "mono"), ("libmp3lame", "stereo")])
def test_wav_is_described_and_decoded_as_after_ffmpegs_full_analysis(media, new_ref, tmp_path, codec, layout):
    """WAV files are opened from their header alone (FFmpeg's stream analysis, which reads
    and decodes seconds of sound, is skipped); what the service reports and decodes is what
    the full analysis gives, for PCM and for compressed sound inside WAV alike."""
    path = tmp_path / "speech.wav"
    mediafiles.write_audio(path, "wav", codec, 1.5, rate=22050, layout=layout)
    info = media.stub.Probe(media_pb2.ProbeRequest(source=media.put(path), expect=AUDIO), timeout=30).info
    with av.open(str(path)) as full:
        ctx = full.streams.audio[0].codec_context
        assert (info.audio_codec, info.sample_rate, info.channels) == (ctx.name, ctx.sample_rate, ctx.channels)
        assert info.duration_seconds == pytest.approx(full.duration / av.time_base, abs=0.03)
        decoded = sum(frame.samples for frame in full.decode(audio=0)) / ctx.sample_rate
    reply = media.stub.NormalizeAudio(
        media_pb2.NormalizeAudioRequest(source=media.put(path), destination=new_ref("n.wav")), timeout=30)
    assert reply.duration_seconds == pytest.approx(decoded, abs=0.01)
