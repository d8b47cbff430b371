"""Voice profiles: measure a speaker's pitch, tempo and spectral envelope, and steer espeak-ng to them.

This is the "voice clone" of talkserve, and it is not a neural clone: espeak-ng is a
formant synthesiser whose voice is fixed by its voice files. What a profile changes is
what espeak-ng exposes plus a filter after it:

- pitch level: the median fundamental frequency (YIN) picks espeak-ng's `pitch`
  parameter through a calibration curve measured on espeak-ng itself, and a voice whose
  median is above `FEMALE_F0_HZ` gets espeak-ng's female variant (shorter vocal tract);
- speaking rate: syllable nuclei per second of speech pick the words-per-minute rate,
  again against espeak-ng's own measured syllable rate;
- spectral envelope: the long-term average spectrum of the reference, compared band by
  band with that of the synthesised sentence, becomes an equaliser (at most ±12 dB), so
  a dark, bright, thin or boomy recording colours the synthetic voice the same way.

What it does not change: the pitch range and intonation contour (measured and reported;
`libs.speech.espeak.synthesize` does not expose espeak-ng's range parameter), the
timbre of individual vowels and consonants, accent, and voice quality (breathiness,
creak). Two speakers with similar pitch and tempo will sound alike here.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.signal import find_peaks, firwin2, lfilter, resample_poly

from libs.speech.espeak import Speech, synthesize

log = logging.getLogger(__name__)

ENGINE_NAME = "espeak-ng-profile-1"
PROFILE_VERSION = 1
ANALYSIS_RATE = 16000
HOP = 160  # 10 ms frames
_WIN = 640  # 40 ms: two periods of a 50 Hz voice for YIN
_NFFT = 1024
F0_MIN_HZ, F0_MAX_HZ = 60.0, 500.0
YIN_THRESHOLD = 0.15
# Band centres of the envelope, about a third of an octave apart (Hz).
ENVELOPE_HZ = tuple(round(float(f), 1) for f in np.geomspace(125.0, 7000.0, 18))
MAX_EQ_DB = 12.0
# Above this median pitch espeak-ng's female variant is used: its formants are scaled
# for a shorter vocal tract, which a pitch change alone would not do.
FEMALE_F0_HZ = 165.0
DEFAULT_RATE_WPM = 175
MIN_VOICED_SECONDS = 0.5

# Default and high-voice espeak-ng voices per language. The Klatt variant is the
# default English voice: PocketSphinx recognises it far better than the default formant
# voice (word error rate 0.26 against 0.64 on twelve tuning sentences), which is what
# the chat's own round trips and the tests rely on.
VOICES = {"en": ("en-us+klatt4", "en-us+f3"), "cmn": ("cmn", "cmn+f3")}
_CALIBRATION_TEXT = {
    "en": "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
          "It is easy to tell the depth of a well.",
    "cmn": "今天天气很好，我们一起去公园散步吧。明天早上八点在学校门口见面。",
}


class ProfileError(ValueError):
    """The recording holds too little voiced speech to measure a profile."""


@dataclass
class VoiceProfile:
    """What talkserve measures of a voice (see the module docstring for what it drives)."""

    f0_median_hz: float
    f0_p10_hz: float
    f0_p90_hz: float
    voiced_fraction: float
    syllables_per_second: float
    spectral_tilt_db_per_octave: float
    envelope_db: list[float]
    envelope_hz: list[float] = field(default_factory=lambda: list(ENVELOPE_HZ))
    speech_seconds: float = 0.0
    version: int = PROFILE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VoiceProfile":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class SynthesisSettings:
    """The espeak-ng settings and the equaliser one synthesis used."""

    voice: str
    pitch: int
    rate_wpm: int
    eq_db: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- analysis


def _to_analysis_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    x = x.astype(np.float32, copy=False).reshape(-1)
    if sample_rate != ANALYSIS_RATE:
        g = math.gcd(int(sample_rate), ANALYSIS_RATE)
        x = resample_poly(x, ANALYSIS_RATE // g, int(sample_rate) // g).astype(np.float32)
    return x


def _frames(x: np.ndarray, win: int) -> np.ndarray:
    n = max(1, int(np.ceil(len(x) / HOP)))
    padded = np.zeros(n * HOP + win, np.float32)
    padded[(win - HOP) // 2:(win - HOP) // 2 + len(x)] = x
    idx = np.arange(win)[None, :] + HOP * np.arange(n)[:, None]
    return padded[idx]


def yin(x: np.ndarray, sample_rate: int = ANALYSIS_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Fundamental frequency per 10 ms frame by YIN (de Cheveigné & Kawahara, 2002).

    Returns (f0 in Hz, 0 where unvoiced; aperiodicity, the CMND minimum, 1 = noise).
    """
    max_lag = int(sample_rate / F0_MIN_HZ)
    min_lag = int(sample_rate / F0_MAX_HZ)
    w = _WIN - max_lag  # integration window; frame = window + the largest lag
    frames = _frames(x, _WIN).astype(np.float64)
    nfft = 1 << int(np.ceil(np.log2(2 * _WIN)))
    spec = np.fft.rfft(frames, nfft, axis=1)
    head = np.fft.rfft(frames[:, :w], nfft, axis=1)
    # r[t] = sum_j x_j x_{j+t} over the window: correlation of the head with the frame.
    r = np.fft.irfft(np.conj(head) * spec, nfft, axis=1)[:, :max_lag + 1]
    sq = np.cumsum(np.pad(frames ** 2, ((0, 0), (1, 0))), axis=1)
    energy0 = sq[:, w] - sq[:, 0]
    lags = np.arange(max_lag + 1)
    energy_t = sq[:, lags + w] - sq[:, lags]
    d = energy0[:, None] + energy_t - 2.0 * r
    d[:, 0] = 0.0
    cum = np.cumsum(d[:, 1:], axis=1) / np.arange(1, max_lag + 1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] / np.maximum(cum, 1e-12)
    f0 = np.zeros(len(frames))
    aper = np.ones(len(frames))
    for i in range(len(frames)):
        row = cmnd[i, min_lag:]
        below = np.nonzero(row < YIN_THRESHOLD)[0]
        if below.size:
            k = below[0]
            while k + 1 < row.size and row[k + 1] < row[k]:
                k += 1  # slide down to the local minimum of this dip
        else:
            k = int(np.argmin(row))
        aper[i] = row[k]
        if row[k] >= YIN_THRESHOLD:
            continue
        tau = k + min_lag
        if 1 <= tau < max_lag:
            a, b, c = cmnd[i, tau - 1], cmnd[i, tau], cmnd[i, tau + 1]
            denom = a - 2 * b + c
            tau = tau + (0.5 * (a - c) / denom if abs(denom) > 1e-12 else 0.0)
        f0[i] = sample_rate / tau
    return f0, aper


def _band_weights(freqs: np.ndarray) -> np.ndarray:
    """Gaussian band filters a third of an octave wide on a log axis."""
    logf = np.log2(np.maximum(freqs, 1.0))[None, :]
    centres = np.log2(np.asarray(ENVELOPE_HZ))[:, None]
    w = np.exp(-0.5 * ((logf - centres) / (1.0 / 6.0)) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def _speech_frames(db: np.ndarray) -> np.ndarray:
    """Frames within 35 dB of the recording's loud speech and above digital silence."""
    if db.size == 0:
        return np.zeros(0, bool)
    ref = float(np.percentile(db, 95))
    return (db > ref - 35.0) & (db > -70.0)


def envelope_db(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Long-term average spectrum (dB, mean removed) at ENVELOPE_HZ over the masked frames."""
    frames = _frames(x, 512) * np.hanning(512).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, _NFFT, axis=1)) ** 2
    if mask is not None and mask.any():
        power = power[mask[:len(power)]]
    freqs = np.fft.rfftfreq(_NFFT, 1.0 / ANALYSIS_RATE)
    ltas = power.mean(axis=0) + 1e-12
    bands = 10.0 * np.log10(_band_weights(freqs) @ ltas + 1e-12)
    return bands - bands.mean()


def _tilt(env: np.ndarray) -> float:
    f = np.asarray(ENVELOPE_HZ)
    sel = (f >= 200) & (f <= 5000)
    slope, _ = np.polyfit(np.log2(f[sel]), env[sel], 1)
    return float(slope)


def syllable_rate(x: np.ndarray, f0: np.ndarray, speech: np.ndarray) -> float:
    """Syllable nuclei per second of speech: loudness peaks of the vowel band that are voiced."""
    frames = _frames(x, 400) * np.hanning(400).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, 512, axis=1)) ** 2
    freqs = np.fft.rfftfreq(512, 1.0 / ANALYSIS_RATE)
    band = power[:, (freqs >= 300) & (freqs <= 2500)].sum(axis=1) + 1e-10
    env = 10.0 * np.log10(band)
    env = np.convolve(env, np.ones(5) / 5.0, mode="same")  # 50 ms: one bump per syllable
    n = min(len(env), len(f0), len(speech))
    env, voiced, speech = env[:n], f0[:n] > 0, speech[:n]
    peaks, _ = find_peaks(env, prominence=3.0, distance=9)
    near_voice = np.convolve(voiced.astype(float), np.ones(5), mode="same") > 0
    top = float(np.percentile(env[speech], 95)) if speech.any() else float(env.max())
    nuclei = [p for p in peaks if near_voice[p] and speech[p] and env[p] > top - 25.0]
    seconds = speech.sum() * HOP / ANALYSIS_RATE
    return len(nuclei) / seconds if seconds > 0 else 0.0


def extract_profile(samples: np.ndarray, sample_rate: int) -> VoiceProfile:
    """Measure the voice profile of a speech recording (mono samples, int16 or float)."""
    x = _to_analysis_rate(samples, sample_rate)
    frames = _frames(x, 400)
    db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    speech = _speech_frames(db)
    f0, _ = yin(x)
    n = min(len(f0), len(speech))
    f0, speech = f0[:n], speech[:n]
    voiced = (f0 > 0) & speech
    if voiced.sum() * HOP / ANALYSIS_RATE < MIN_VOICED_SECONDS:
        raise ProfileError("the recording holds too little voiced speech to measure a voice "
                           f"(at least {MIN_VOICED_SECONDS} s are needed)")
    values = f0[voiced]
    # Octave errors of YIN sit far from the bulk; the median of the bulk is robust to them.
    med = float(np.median(values))
    values = values[(values > med / 1.8) & (values < med * 1.8)]
    env = envelope_db(x, speech)
    return VoiceProfile(
        f0_median_hz=round(float(np.median(values)), 2),
        f0_p10_hz=round(float(np.percentile(values, 10)), 2),
        f0_p90_hz=round(float(np.percentile(values, 90)), 2),
        voiced_fraction=round(float(voiced.sum() / max(speech.sum(), 1)), 4),
        syllables_per_second=round(syllable_rate(x, f0, speech), 3),
        spectral_tilt_db_per_octave=round(_tilt(env), 3),
        envelope_db=[round(float(v), 2) for v in env],
        speech_seconds=round(float(speech.sum() * HOP / ANALYSIS_RATE), 2),
    )


# --------------------------------------------------------------------------- synthesis


def detect_language(text: str) -> str:
    """"cmn" when the text holds Chinese characters, else "en"."""
    return "cmn" if any("\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff" for c in text) else "en"


@dataclass(frozen=True)
class Calibration:
    """How one espeak-ng voice responds to its parameters, measured on itself."""

    voice: str
    pitch_params: tuple[int, ...]
    f0_medians: tuple[float, ...]
    syllables_per_second: float  # at DEFAULT_RATE_WPM


_calibration_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _calibrate(voice: str, language: str) -> Calibration:
    params = (0, 25, 50, 75, 100)
    medians = []
    sps = 0.0
    for p in params:
        speech = synthesize(_CALIBRATION_TEXT[language], voice=voice, rate_wpm=DEFAULT_RATE_WPM, pitch=p)
        x = _to_analysis_rate(speech.samples, speech.sample_rate)
        f0, _ = yin(x)
        medians.append(float(np.median(f0[f0 > 0])))
        if p == 50:
            frames = _frames(x, 400)
            db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
            speech_mask = _speech_frames(db)
            n = min(len(f0), len(speech_mask))
            sps = syllable_rate(x, f0[:n], speech_mask[:n])
    # Keep the curve increasing so it can be inverted.
    medians = list(np.maximum.accumulate(medians))
    log.info("calibrated espeak-ng voice %s: f0 %s Hz at pitch %s, %.2f syllables/s", voice,
             [round(m) for m in medians], params, sps)
    return Calibration(voice, params, tuple(medians), sps)


def calibration(voice: str, language: str) -> Calibration:
    """The (cached) calibration of an espeak-ng voice."""
    with _calibration_lock:
        return _calibrate(voice, language)


def choose_voice(language: str, profile: VoiceProfile | None) -> str:
    """The espeak-ng voice for a language, with the female variant for a high voice."""
    default, high = VOICES[language]
    if profile is not None and profile.f0_median_hz > FEMALE_F0_HZ:
        return high
    return default


def pitch_param_for(cal: Calibration, f0_hz: float) -> int:
    """espeak-ng pitch parameter (0..100) whose median f0 is nearest `f0_hz`."""
    return int(round(float(np.interp(f0_hz, cal.f0_medians, cal.pitch_params))))


def rate_for(cal: Calibration, syllables_per_second: float) -> int:
    """Words per minute that make espeak-ng speak `syllables_per_second`."""
    if syllables_per_second <= 0 or cal.syllables_per_second <= 0:
        return DEFAULT_RATE_WPM
    wpm = DEFAULT_RATE_WPM * syllables_per_second / cal.syllables_per_second
    return int(round(min(max(wpm, 80), 450)))


def eq_gains(target_env: list[float], speech_env: np.ndarray) -> np.ndarray:
    """Equaliser gains (dB at ENVELOPE_HZ) that move `speech_env` to `target_env`, smoothed and clamped."""
    diff = np.asarray(target_env, np.float64) - np.asarray(speech_env, np.float64)
    diff = np.convolve(np.pad(diff, 1, mode="edge"), np.ones(3) / 3.0, mode="valid")
    diff -= diff.mean()  # loudness is not part of the profile
    return np.clip(diff, -MAX_EQ_DB, MAX_EQ_DB)


def apply_eq(samples: np.ndarray, sample_rate: int, gains_db: np.ndarray) -> np.ndarray:
    """Filter int16 samples with a linear-phase FIR through `gains_db` at ENVELOPE_HZ."""
    nyq = sample_rate / 2.0
    centres = [f for f in ENVELOPE_HZ if f < nyq]
    g = 10.0 ** (np.asarray(gains_db[:len(centres)]) / 20.0)
    freqs = [0.0, *centres, nyq]
    gains = [g[0], *g, g[-1]]
    taps = firwin2(511, freqs, gains, fs=sample_rate)
    x = samples.astype(np.float64)
    y = lfilter(taps, [1.0], np.concatenate([x, np.zeros(len(taps) // 2)]))[len(taps) // 2:]
    # Keep the loudness of the unfiltered speech, without clipping.
    rms_in = np.sqrt(np.mean(x ** 2)) + 1e-9
    rms_out = np.sqrt(np.mean(y ** 2)) + 1e-9
    y *= rms_in / rms_out
    peak = np.abs(y).max()
    if peak > 32000:
        y *= 32000 / peak
    return y.astype(np.int16)


def synthesize_like(text: str, language: str = "en", profile: VoiceProfile | None = None,
                    pitch_semitones: float = 0.0) -> tuple[Speech, SynthesisSettings]:
    """Speak `text` in `language` ("en" or "cmn") with espeak-ng, matched to `profile` if given.

    `pitch_semitones` shifts the pitch from the profile's (or espeak-ng's default) level.
    """
    if language not in VOICES:
        raise ValueError(f"unsupported language {language!r}; expected one of {sorted(VOICES)}")
    if not -12.0 <= pitch_semitones <= 12.0:
        raise ValueError("pitch_semitones must be within -12..12")
    voice = choose_voice(language, profile)
    if profile is None and pitch_semitones == 0.0:
        return synthesize(text, voice=voice), SynthesisSettings(voice, 50, DEFAULT_RATE_WPM)
    cal = calibration(voice, language)
    base_f0 = profile.f0_median_hz if profile is not None else float(np.interp(50, cal.pitch_params, cal.f0_medians))
    pitch = pitch_param_for(cal, base_f0 * 2.0 ** (pitch_semitones / 12.0))
    rate = rate_for(cal, profile.syllables_per_second) if profile is not None else DEFAULT_RATE_WPM
    speech = synthesize(text, voice=voice, rate_wpm=rate, pitch=pitch)
    settings = SynthesisSettings(voice, pitch, rate)
    if profile is not None and profile.envelope_db and speech.samples.size:
        x = _to_analysis_rate(speech.samples, speech.sample_rate)
        frames = _frames(x, 400)
        db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        gains = eq_gains(profile.envelope_db, envelope_db(x, _speech_frames(db)))
        speech = Speech(apply_eq(speech.samples, speech.sample_rate, gains), speech.sample_rate, speech.phonemes)
        settings.eq_db = [round(float(v), 2) for v in gains]
    return speech, settings
