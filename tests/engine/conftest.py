"""Fixtures for the built-in engine's tests: models, one Engine, a portrait and speech."""

from __future__ import annotations

import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from libs.talkface import models


@pytest.fixture(scope="session")
def models_path() -> Path:
    """The face models, fetched once if this checkout has none yet."""
    try:
        return models.models_dir()
    except models.ModelsMissingError:
        from scripts import fetch_models

        try:
            fetch_models.fetch(fetch_models.default_dest())
        except Exception as exc:  # no registry reachable: the engine cannot be tested here
            pytest.skip(f"face models missing and could not be fetched ({exc}); "
                        "run `python -m scripts.fetch_models`")
        return models.models_dir()


@pytest.fixture(scope="session")
def engine(models_path):
    from libs.talkface.engine import Engine

    return Engine(models_path, threads=2)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine-data")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


@pytest.fixture(scope="session")
def portrait_path(data_dir, astronaut) -> str:
    path = data_dir / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    return str(path)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype("<i2").tobytes())
    return str(path)


@pytest.fixture(scope="session")
def speech(data_dir):
    """About 3 s of real English speech (espeak-ng) as a WAV path, with its duration."""
    from libs.speech import synthesize

    sp = synthesize("Hello there. How are you doing today? I am fine, thank you.", voice="en")
    return write_wav(data_dir / "speech.wav", sp.samples, sp.sample_rate), sp.duration_s


@pytest.fixture(scope="session")
def other_speech(data_dir):
    """Different, longer speech (about 5 s), for re-dubbing."""
    from libs.speech import synthesize

    sp = synthesize("Many people were waiting patiently at the station for the morning train, "
                    "which was very late again.", voice="en")
    return write_wav(data_dir / "other.wav", sp.samples, sp.sample_rate), sp.duration_s


@pytest.fixture(scope="session")
def silence(data_dir) -> str:
    return write_wav(data_dir / "silence.wav", np.zeros(16000 * 2, np.int16), 16000)
