"""English words with timings from PocketSphinx's shipped US-English model: the fallback recogniser.

The acoustic model, the 3-gram language model and the pronunciation dictionary are the
ones in the `pocketsphinx` wheel; nothing is downloaded. PocketSphinx is a small HMM
recogniser: 27 % of the words wrong on clear read speech and 55 % on espeak-ng's voices
(bench/bench_asr.py), so the chat uses it only where Whisper is not installed
(libs/speech/asr.py chooses). Decoders are not thread-safe and take about a second to
load, so finished ones wait in a pool for the next call instead of being made per call
or per thread.
"""

from __future__ import annotations

import logging
import os
import queue
import re

import numpy as np

from libs.speech.transcript import Transcript, Word

log = logging.getLogger(__name__)

ENGINE_NAME = "pocketsphinx-en-us-5.1"
SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100
# PocketSphinx slows down and loses accuracy on long utterances: longer audio is cut at
# its quietest moments into pieces of at most this length.
MAX_CHUNK_SECONDS = 20.0
MIN_CHUNK_SECONDS = 12.0

# Decoder settings beyond the model's defaults, the best of those bench/bench_asr.py tried
# (language weight, beams, dither, passes). Dither: synthetic and padded audio holds runs of
# exact zeros, whose log-spectra are degenerate and throw off normalisation (without it 69 %
# of espeak-ng's words come back wrong instead of 60 %). No flat-lexicon second pass: on
# espeak-ng speech 55 % instead of 60 % wrong, on real speech the same 27 %, and faster.
DECODER_OPTIONS: dict = {"dither": True, "fwdflat": False}

_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")
_pool: queue.SimpleQueue = queue.SimpleQueue()


def _new_decoder():
    from pocketsphinx import Decoder, get_model_path

    model = os.path.join(get_model_path(), "en-us")
    return Decoder(
        hmm=os.path.join(model, "en-us"),
        lm=os.path.join(model, "en-us.lm.bin"),
        dict=os.path.join(model, "cmudict-en-us.dict"),
        loglevel="FATAL",
        **DECODER_OPTIONS,
    )


def _chunks(samples: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample ranges of at most MAX_CHUNK_SECONDS, cut where it is quietest."""
    n = len(samples)
    step = SAMPLE_RATE // FRAMES_PER_SECOND
    out, start = [], 0
    max_len, min_len = int(MAX_CHUNK_SECONDS * SAMPLE_RATE), int(MIN_CHUNK_SECONDS * SAMPLE_RATE)
    while n - start > max_len:
        window = samples[start + min_len:start + max_len]
        frames = window[:len(window) // step * step].reshape(-1, step)
        cut = start + min_len + int(np.argmin((frames.astype(np.float64) ** 2).mean(axis=1))) * step
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


def _is_word(token: str) -> bool:
    # <s>, </s>, <sil> and fillers such as [NOISE] or ++BREATH++ are not words.
    return bool(token) and token[0] not in "<[+"


def recognize(samples: np.ndarray) -> Transcript:
    """Recognise English speech in float32 mono samples at 16 kHz."""
    samples = np.asarray(samples, np.float32).reshape(-1)
    duration = len(samples) / SAMPLE_RATE
    if samples.size == 0:
        return Transcript("", [], 0.0, ENGINE_NAME)
    try:
        decoder = _pool.get_nowait()
    except queue.Empty:
        decoder = _new_decoder()
    words: list[Word] = []
    try:
        for a, b in _chunks(samples):
            pcm = (np.clip(samples[a:b], -1.0, 1.0) * 32767.0).astype("<i2")
            decoder.start_utt()
            decoder.process_raw(pcm.tobytes(), full_utt=True)
            decoder.end_utt()
            offset = a / SAMPLE_RATE
            for seg in decoder.seg():
                token = _ALT_PRONUNCIATION.sub("", seg.word)
                if _is_word(token):
                    words.append(Word(token.lower(), offset + seg.start_frame / FRAMES_PER_SECOND,
                                      offset + (seg.end_frame + 1) / FRAMES_PER_SECOND))
    finally:
        _pool.put(decoder)
    return Transcript(" ".join(w.text for w in words), words, duration, ENGINE_NAME)

