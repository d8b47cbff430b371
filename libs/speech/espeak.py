"""Text-to-speech with espeak-ng (through ctypes), returning samples and phoneme timing.

espeak-ng keeps one global synthesiser per process, so every call goes through a module
lock; the library is loaded and initialised once, on first use.
"""

from __future__ import annotations

import ctypes
import io
import logging
import threading
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of the text
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class SpeechError(RuntimeError):
    """espeak-ng could not be loaded, could not select the voice or failed to speak."""


@dataclass
class Speech:
    """Synthesised speech: mono int16 samples and the phonemes espeak spoke, in time order.

    `phonemes` holds (start_s, end_s, symbol) with espeak-ng's own phoneme mnemonics
    (for example "m", "b", "A:", "u:", "i:", "aI"); pauses are not listed.
    """

    samples: np.ndarray
    sample_rate: int
    phonemes: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


_lock = threading.Lock()
_lib = None
_sample_rate = 0
# The callback of the synthesis in progress appends here; guarded by _lock.
_chunks: list[np.ndarray] = []
_events: list[tuple[int, float, str]] = []


def _on_synth(wav, numsamples, events):
    if numsamples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
        ev = events[i]
        if ev.type == _EVENT_PHONEME:
            name = ev.id.string.decode("utf-8", "replace")
            _events.append((_EVENT_PHONEME, ev.audio_position / 1000.0, name))
        elif ev.type in (_EVENT_END, _EVENT_MSG_TERMINATED):
            _events.append((ev.type, ev.audio_position / 1000.0, ""))
        i += 1
    return 0  # 0 = go on synthesising


# Kept referenced for the life of the process: espeak holds the raw pointer.
_callback_ref = _Callback(_on_synth)


def _ensure_loaded():
    global _lib, _sample_rate
    if _lib is not None:
        return _lib
    try:
        import espeakng_loader
    except ImportError as exc:  # pragma: no cover - a packaging problem, not a runtime one
        raise SpeechError("espeakng-loader is not installed") from exc
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_Callback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.espeak_GetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    data_path = espeakng_loader.get_data_path().encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_PHONEME_EVENTS)
    if rate <= 0:
        raise SpeechError(f"espeak_Initialize failed ({rate})")
    lib.espeak_SetSynthCallback(_callback_ref)
    _sample_rate = rate
    _lib = lib
    log.debug("espeak-ng loaded, %d Hz", rate)
    return lib


def synthesize(text: str, voice: str = "en", rate_wpm: Optional[int] = None, pitch: Optional[int] = None) -> Speech:
    """Speak `text` with espeak-ng voice `voice` ("en", "cmn", ...).

    `rate_wpm` is words per minute (espeak accepts 80..450; its default is 175) and
    `pitch` 0..100 (default 50). Raises SpeechError on an unknown voice or a failure.
    """
    if rate_wpm is not None and not 80 <= rate_wpm <= 450:
        raise ValueError("rate_wpm must be within 80..450")
    if pitch is not None and not 0 <= pitch <= 100:
        raise ValueError("pitch must be within 0..100")
    with _lock:
        lib = _ensure_loaded()
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise SpeechError(f"unknown espeak-ng voice {voice!r}")
        # Always set both: re-selecting the voice already in use keeps the previous
        # caller's rate and pitch (GetParameter(..., 0) is the default value).
        for param, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch)):
            lib.espeak_SetParameter(param, int(value) if value is not None else lib.espeak_GetParameter(param, 0), 0)
        _chunks.clear()
        _events.clear()
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        err = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        lib.espeak_Synchronize()
        if err != _EE_OK:
            raise SpeechError(f"espeak_Synth failed ({err})")
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        events = list(_events)
        rate = _sample_rate
        _chunks.clear()
        _events.clear()
    return Speech(samples=samples.astype(np.int16, copy=False), sample_rate=rate,
                  phonemes=_phoneme_spans(events, len(samples) / float(rate)))


def _phoneme_spans(events: list[tuple[int, float, str]], total_s: float) -> list[tuple[float, float, str]]:
    """Turn point events into spans: a phoneme lasts until the next phoneme or the end.

    Pauses ("_", "_:", "_|") end the phoneme before them but are not listed; stress
    marks are stripped so callers match plain symbols.
    """
    order = sorted(range(len(events)), key=lambda i: (events[i][1], i))
    events = [events[i] for i in order]
    spans = []
    for i, (kind, t, name) in enumerate(events):
        if kind != _EVENT_PHONEME:
            continue
        end = total_s
        for kind2, t2, _ in events[i + 1:]:
            if kind2 in (_EVENT_PHONEME, _EVENT_END, _EVENT_MSG_TERMINATED):
                end = t2
                break
        symbol = name.strip().lstrip("',=")
        if not symbol or symbol.startswith("_") or end <= t:
            continue
        spans.append((t, min(end, total_s), symbol))
    return spans


# espeak-ng's English phoneme mnemonics (voices en, en-us) to ARPAbet, for callers that
# reason in CMU-dictionary terms (visemes, tests); unlisted symbols map to None.
_ARPABET = {
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V",
    "T": "TH", "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH",
    "tS": "CH", "dZ": "JH", "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R", "j": "Y",
    "w": "W", "t#": "T", "d#": "D", "n-": "N", "l-": "L", "r-": "R", "?": None,
    "a": "AE", "aa": "AE", "a#": "AH", "A:": "AA", "A@": "AA", "0": "AA", "V": "AH",
    "@": "AH", "@2": "AH", "@5": "AH", "3": "ER", "3:": "ER", "@L": "L",
    "E": "EH", "e@": "EH", "eI": "EY", "I": "IH", "I2": "IH", "I#": "IH", "i": "IY", "i:": "IY",
    "i@": "IY", "i@3": "IY", "O": "AO", "O:": "AO", "O@": "AO", "o@": "AO", "oU": "OW",
    "u:": "UW", "U": "UH", "U@": "UH", "aI": "AY", "aI@": "AY", "aU": "AW", "OI": "OY",
}


def to_arpabet(symbol: str) -> Optional[str]:
    """ARPAbet name of an English espeak-ng phoneme symbol, None when it has none."""
    return _ARPABET.get(symbol.lstrip("',="))


def wav_bytes(speech: Speech) -> bytes:
    """`speech` as the bytes of a 16-bit mono PCM WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(speech.sample_rate)
        w.writeframes(np.ascontiguousarray(speech.samples, dtype="<i2").tobytes())
    return buf.getvalue()


def write_wav(speech: Speech, path: str | Path) -> None:
    """Write `speech` as a 16-bit mono PCM WAV file."""
    Path(path).write_bytes(wav_bytes(speech))
