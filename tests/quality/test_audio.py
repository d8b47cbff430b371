"""talkface.audio: decoding every common format, loudness, and the mouth track from speech."""

from __future__ import annotations

import av
import numpy as np
import pytest

from libs.speech import synthesize, write_wav
from libs.talkface import api, audio

from .conftest import build_speech, frame_labels, to_16k

FPS = 25


@pytest.fixture(scope="module")
def speech():
    return synthesize("Hello there, this is a test of the audio formats.", voice="en")


def _encode(speech, path, codec, fmt=None, rate=None):
    """Write espeak speech with PyAV in `codec` (PyAV converts format and rate as needed)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate or speech.sample_rate)
        stream.layout = "mono"
        x = speech.samples
        for i in range(0, x.size, 4096):
            frame = av.AudioFrame.from_ndarray(x[None, i:i + 4096].copy(), format="s16", layout="mono")
            frame.sample_rate = speech.sample_rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("ext,codec,rate", [
    ("mp3", "libmp3lame", None), ("flac", "flac", None), ("ogg", "libopus", 48000),
    ("m4a", "aac", None), ("wav", "pcm_s16le", None),
])
def test_every_format_decodes_to_the_same_length(tmp_path, speech, ext, codec, rate):
    ref_path = tmp_path / "ref.wav"
    write_wav(speech, ref_path)
    ref = audio.load_audio(ref_path)
    assert ref.dtype == np.float32 and ref.ndim == 1
    assert abs(ref.size - speech.duration_s * 16000) <= 2
    path = tmp_path / f"speech.{ext}"
    _encode(speech, path, codec, rate=rate)
    x = audio.load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - ref.size) <= 0.020 * 16000
    # the same sound, not just the same length: loudness envelopes agree
    n = int(ref.size / 16000 * FPS) - 1
    assert np.corrcoef(audio.loudness_envelope(ref, FPS, n), audio.loudness_envelope(x, FPS, n))[0, 1] > 0.95


def test_stereo_48k_is_mixed_and_resampled(tmp_path):
    t = np.arange(48000) / 48000.0
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    path = tmp_path / "stereo.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=48000)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone], axis=1).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    x = audio.load_audio(path)
    assert abs(x.size - 16000) <= 2
    assert np.abs(x[1000:-1000]).max() > 0.25  # both channels mixed in, not cancelled
    crossings = np.count_nonzero(np.diff(np.signbit(x[1000:-1000]).astype(np.int8)))
    assert abs(crossings / 2 / (x.size - 2000) * 16000 - 440) < 5


@pytest.mark.parametrize("content", [b"", b"this is not audio at all" * 100, bytes(range(256)) * 64])
def test_garbage_is_bad_audio(tmp_path, content):
    path = tmp_path / "garbage.mp3"
    path.write_bytes(content)
    with pytest.raises(api.BadAudioError):
        audio.load_audio(path)


def test_missing_file_and_file_without_audio_are_bad_audio(tmp_path):
    with pytest.raises(api.BadAudioError, match="not found"):
        audio.load_audio(tmp_path / "nope.wav")
    video = tmp_path / "silent.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(api.BadAudioError, match="no audio stream"):
        audio.load_audio(video)


def test_empty_wav_is_bad_audio(tmp_path):
    from libs.speech import Speech

    path = tmp_path / "empty.wav"
    write_wav(Speech(np.zeros(0, np.int16), 22050, []), path)
    with pytest.raises(api.BadAudioError, match="no audio samples"):
        audio.load_audio(path)


def test_loudness_envelope_follows_sound_and_silence():
    x = np.zeros(32000, np.float32)
    x[8000:16000] = 0.3 * np.sin(np.arange(8000) * 0.2)
    env = audio.loudness_envelope(x, FPS, 50)
    assert env.shape == (50,)
    assert env[:10].max() == 0.0 and env[27:].max() == 0.0
    assert env[14:24].min() > 0.9


def test_silence_keeps_the_mouth_shut():
    track = audio.mouth_track(np.zeros(32000, np.float32), FPS, 50)
    for arr in (track.open, track.width, track.press, track.energy):
        assert arr.shape == (50,) and np.abs(arr).max() < 1e-6
    assert track.fps == FPS


def test_track_has_requested_length_and_ranges():
    x = to_16k(synthesize("Short one.", voice="en"))
    for n in (1, 10, 200):  # shorter and longer than the audio
        tr = audio.mouth_track(x, FPS, n)
        assert tr.open.shape == tr.width.shape == tr.press.shape == tr.energy.shape == (n,)
        assert 0 <= tr.open.min() and tr.open.max() <= 1
        assert -1 <= tr.width.min() and tr.width.max() <= 1
        assert 0 <= tr.press.min() and tr.press.max() <= 1
    assert audio.mouth_track(x, FPS, 0).open.shape == (0,)


@pytest.fixture(scope="module")
def articulation():
    speech = build_speech([
        0.3, "Bob made a pop map.", 0.3, "You go, we woo.", 0.3, "See the eel.", 0.3,
        "My mother bought a blue balloon for the baby by the pool.", 0.3,
    ])
    x = to_16k(speech)
    n = int(x.size / 16000 * FPS)
    return speech, x, n, frame_labels(speech, FPS, n)


def test_track_articulates_known_phones(articulation):
    """On the track itself (no rendering): closures shut, rounded vowels narrow."""
    speech, x, n, labels = articulation
    tr = audio.mouth_track(x, FPS, n)
    closed = np.isin(labels, ["M", "B", "P"])
    open_ = np.isin(labels, ["AA", "AE"])
    rounded = np.isin(labels, ["OW", "UW", "W"])
    spread = np.isin(labels, ["IY", "EH", "AE"])
    speech_frames = labels != None  # noqa: E711
    assert tr.open[closed].mean() < 0.4 * tr.open[open_].mean()
    # a closure shorter than a frame only partly presses it (pooling), so compare
    assert tr.press[closed].mean() > 0.4
    assert tr.press[closed].mean() > 5 * tr.press[speech_frames & ~closed].mean()
    assert tr.width[rounded].mean() < tr.width[spread].mean() - 0.3
    pauses = labels == None  # noqa: E711
    assert tr.open[pauses].mean() < 0.1


def test_acoustic_fallback_alone_still_articulates(articulation):
    """Without phone recognition (other languages) the cues from the spectrum still work."""
    speech, x, n, labels = articulation
    tr = audio.mouth_track(x, FPS, n, use_phones=False)
    loud = audio.loudness_envelope(x, FPS, n)
    assert np.corrcoef(tr.open, loud)[0, 1] > 0.5
    assert tr.open[np.isin(labels, ["M", "B", "P"])].mean() < 0.5 * tr.open[np.isin(labels, ["AA", "AE"])].mean()
    assert tr.width[np.isin(labels, ["OW", "UW", "W"])].mean() < tr.width[np.isin(labels, ["IY", "EH", "AE"])].mean()


def test_mandarin_drives_the_mouth_from_loudness():
    speech = build_speech([0.3, "我们今天去公园散步，天气非常好。", 0.6, "你好吗？", 0.3], voice="cmn")
    x = to_16k(speech)
    n = int(x.size / 16000 * FPS)
    tr = audio.mouth_track(x, FPS, n)
    loud = audio.loudness_envelope(x, FPS, n)
    assert tr.open.max() > 0.5
    assert np.corrcoef(tr.open, loud)[0, 1] > 0.5
    labels = frame_labels(speech, FPS, n)
    assert tr.open[labels == None].mean() < 0.1  # noqa: E711
    assert tr.width.std() > 0.1  # the lips change shape, not only the jaw


def test_given_alignment_replaces_recognition(articulation):
    speech, x, n, labels = articulation
    from libs.speech import to_arpabet

    phones = [(int(a * 100), int(b * 100), to_arpabet(p) or "SIL") for a, b, p in speech.phonemes]
    tr = audio.mouth_track(x, FPS, n, phones=phones)
    assert tr.press[np.isin(labels, ["M", "B"])].mean() > 0.8
    assert tr.width[np.isin(labels, ["UW", "W"])].mean() < -0.3


def test_sixty_seconds_in_reasonable_time():
    import time

    x = to_16k(build_speech(["Bob made a pop map. You go, we woo. See the eel.", 0.4] * 14))[:60 * 16000]
    t0 = time.perf_counter()
    tr = audio.mouth_track(x, FPS, 60 * FPS)
    took = time.perf_counter() - t0
    assert tr.open.shape == (1500,)
    assert took < 10.0, f"mouth_track took {took:.1f}s on 60s of speech"
