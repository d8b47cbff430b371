"""The live engine without gRPC: the streaming mouth track against the file jobs' track, and idle motion."""

from __future__ import annotations

import numpy as np
import pytest

from libs.talkface.audio import load_audio, mouth_track
from libs.talkface.live_audio import LiveMouth
from tests import realdata


@pytest.fixture(scope="module")
def read_speech() -> np.ndarray:
    clip = realdata.speech_clips()[0]
    return load_audio(clip.wav)[:16000 * 5]


def _live_track(samples: np.ndarray, fps: int, chunk: int, lookahead: float = 0.06) -> np.ndarray:
    live = LiveMouth(fps, lookahead)
    opening: dict[int, float] = {}
    for k in range(0, samples.size, chunk):
        live.feed(samples[k:k + chunk])
        while (span := live.next_span()) is not None:
            first, track = span
            for j, v in enumerate(np.asarray(track.open)):
                assert first + j not in opening
                opening[first + j] = float(v)
    assert sorted(opening) == list(range(len(opening)))  # every frame once, in order
    return np.array([opening[i] for i in range(len(opening))])


@pytest.mark.parametrize(("fps", "chunk"), [(25, 640), (24, 320), (30, 500)])
def test_the_live_mouth_follows_the_file_jobs_mouth_on_real_speech(read_speech, fps, chunk):
    n = int(read_speech.size / 16000 * fps)
    file_open = np.asarray(mouth_track(read_speech, fps, n).open)
    live_open = _live_track(read_speech, fps, chunk)
    # a frame waits only for its own audio and the look-ahead
    assert len(live_open) >= n - int(0.06 * fps) - 1
    m = min(n, len(live_open))
    assert np.corrcoef(live_open[:m], file_open[:m])[0, 1] > 0.75


def test_silence_keeps_the_mouth_closed():
    live_open = _live_track(np.zeros(16000 * 2, np.float32), 25, 640)
    assert live_open.max() < 0.02


def test_a_lookahead_beyond_100_ms_is_refused():
    with pytest.raises(ValueError, match="look-ahead"):
        LiveMouth(25, lookahead_s=0.2)
