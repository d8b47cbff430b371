"""Shared inputs for the quality tests: espeak speech with its phone alignment, the portrait."""

from __future__ import annotations

import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import resample_poly

from libs.speech import Speech, to_arpabet
from libs.talkface import api

VOICE = "en-us"


def to_16k(speech: Speech) -> np.ndarray:
    """float32 16 kHz samples of espeak's 22050 Hz int16 output."""
    assert speech.sample_rate == 22050
    return (resample_poly(speech.samples.astype(np.float32), 320, 441) / 32768.0).astype(np.float32)


_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: it speaks each text in turn and pickles the Speech list.
_SPEAK = """
import pickle, sys
from libs.speech import synthesize
texts, voice = pickle.load(sys.stdin.buffer)
pickle.dump([synthesize(t, voice=voice) for t in texts], sys.stdout.buffer)
"""


def _speak_afresh(texts: list[str], voice: str) -> list[Speech]:
    """espeak-ng's output depends on what the same process spoke before (it keeps state from
    call to call that not even espeak_Terminate resets: the same sentence comes out a few
    samples longer or shorter), so the speech a quality figure is measured on depended on
    which tests ran first. Spoken in a new process, it depends on `texts` alone."""
    done = subprocess.run([sys.executable, "-c", _SPEAK], input=pickle.dumps((texts, voice)),
                          capture_output=True, check=True, cwd=_ROOT)
    return pickle.loads(done.stdout)


def build_speech(parts: list, voice: str = VOICE) -> Speech:
    """Concatenate sentences (str) and pauses (float seconds) into one Speech, alignment shifted.

    The same parts always give the same Speech, whatever was spoken before."""
    spoken = iter(_speak_afresh([p for p in parts if isinstance(p, str)], voice))
    rate = None
    chunks, phonemes, t = [], [], 0.0
    for part in parts:
        if isinstance(part, str):
            s = next(spoken)
            rate = s.sample_rate
            chunks.append(s.samples)
            phonemes += [(a + t, b + t, p) for a, b, p in s.phonemes]
            t += len(s.samples) / s.sample_rate
        else:
            rate = rate or 22050
            n = int(round(part * rate))
            chunks.append(np.zeros(n, np.int16))
            t += n / rate
    return Speech(np.concatenate(chunks), rate or 22050, phonemes)


# espeak marks a voiceless stop at its release; its closure is the silence just before.
STOP_CLOSURE_S = 0.07


def frame_labels(speech: Speech, fps: float, n_frames: int) -> np.ndarray:
    """ARPAbet label per video frame (at the frame's centre time), None in pauses.

    Phonemes with no ARPAbet name (other languages) are labelled "?".

    P frames are those of the lip closure: the STOP_CLOSURE_S before espeak's P event
    up to 10 ms after it; the rest of espeak's P span (burst, aspiration) is "P_REL".
    """
    centres = (np.arange(n_frames) + 0.5) / fps
    labels = np.full(n_frames, None, dtype=object)
    for a, b, sym in speech.phonemes:
        sel = (centres >= a) & (centres < b) & (labels == None)  # noqa: E711 (element-wise)
        labels[sel] = to_arpabet(sym) or "?"
    for a, b, sym in speech.phonemes:
        if to_arpabet(sym) == "P":
            labels[(centres >= a + 0.01) & (centres < b) & (labels == "P")] = "P_REL"
            labels[(centres >= a - STOP_CLOSURE_S) & (centres < a + 0.01)] = "P"
    return labels


@pytest.fixture(scope="session")
def portrait_path(lips_together_portrait):
    return lips_together_portrait


@pytest.fixture(scope="module")
def engine():
    from libs.talkface.engine import Engine

    return Engine()


@pytest.fixture(scope="module")
def analyzer():
    from libs.talkface.face import FaceAnalyzer

    return FaceAnalyzer()


def framed_portrait(path, result: api.RenderResult) -> np.ndarray:
    """The portrait at `path` as the frames of `result` frame it (its crop, at its size)."""
    import cv2

    x0, y0, x1, y1 = result.extra["crop_box"]
    src = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(src[y0:y1, x0:x1], (result.width, result.height), interpolation=cv2.INTER_AREA)
