"""Speech audio to mouth motion: decode, measure loudness, recognise phones, make visemes.

The output is an `api.MouthTrack` (one value per video frame). Everything runs on a
10 ms analysis grid first and is then pooled into video frames:

1. loudness (RMS in dB against the clip's own speaking level) gives `energy`;
2. PocketSphinx all-phone decoding labels the grid with English phones, each mapped to a
   viseme target (open, width, press) in the manner of Rhubarb Lip Sync;
3. acoustic cues that hold in any language are blended in, and replace the phones
   entirely when recognition is useless (other languages): the first formant rises
   with jaw opening, the second falls with lip rounding; lips shut on a voiced murmur
   (m, b) and on the silent closure before a labial burst (p, b);
4. targets are scaled by loudness so silence stays closed, then smoothed forward and
   backward with a critically damped filter, which moves the lips ahead of the sound
   as real coarticulation does.

Recognised M/B/P press the lips shut however loud they are, provided the sound shows
some sign of a closure nearby (PocketSphinx on synthetic speech also hears "m" in "th").
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import lfilter

from libs.talkface import api

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # 10 ms analysis grid: PocketSphinx's own frame rate
GRID_HZ = SAMPLE_RATE // HOP
_WIN = 400  # 25 ms analysis window
_NFFT = 512

# --------------------------------------------------------------------------- decoding


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Decode any audio (or video-with-audio) file to float32 mono samples at 16 kHz.

    Raises api.BadAudioError when the file cannot be decoded, has no audio stream or
    holds no samples.
    """
    import av  # imported here so the rest of the module works without PyAV

    chunks: list[np.ndarray] = []
    declared_s = None
    try:
        with av.open(str(path), mode="r") as container:
            streams = container.streams.audio
            if not streams:
                raise api.BadAudioError(f"no audio stream in {os.path.basename(str(path))}")
            stream = streams[0]
            declared_s = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush the resampler's tail
                chunks.append(out.to_ndarray().reshape(-1))
    except api.BadAudioError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise api.BadAudioError(f"audio file not found: {path}") from exc
        raise api.BadAudioError(f"cannot decode audio {os.path.basename(str(path))}: {exc}") from exc
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if declared_s:
        # AAC decoders hand back the encoder's padding of the last frame (up to 46 ms);
        # the container's declared duration says where the sound really ends.
        declared = int(round(declared_s * SAMPLE_RATE))
        if 0 < declared < samples.size:
            samples = samples[:declared]
    if samples.size == 0:
        raise api.BadAudioError(f"no audio samples in {os.path.basename(str(path))}")
    if not np.all(np.isfinite(samples)):
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    return samples


# --------------------------------------------------------------------------- features


def _frames(samples: np.ndarray, first: int = 0, count: Optional[int] = None) -> np.ndarray:
    """Hann-windowed 25 ms frames centred on the 10 ms grid points first..first+count."""
    n = max(1, int(np.ceil(len(samples) / HOP)))
    count = n - first if count is None else min(count, n - first)
    pad_left = (_WIN - HOP) // 2
    lo = first * HOP - pad_left  # sample under the first frame's first window point
    chunk = np.zeros((count - 1) * HOP + _WIN, np.float32)
    a, b = max(lo, 0), min(lo + chunk.size, len(samples))
    if b > a:
        chunk[a - lo:b - lo] = samples[a:b]
    idx = np.arange(_WIN)[None, :] + HOP * np.arange(count)[:, None]
    return chunk[idx] * _HANN


_HANN = np.hanning(_WIN).astype(np.float32)
_BLOCK = 2048  # grid frames per FFT block: keeps memory flat for long audio


def _full_scale_power() -> float:
    """Speech-band power of a full-scale 1 kHz sine in one analysis frame (0 dBFS)."""
    t = np.arange(_WIN + HOP) / SAMPLE_RATE
    frame = _frames(np.sin(2 * np.pi * 1000.0 * t).astype(np.float32), 1, 1)[0]
    power = np.abs(np.fft.rfft(frame, _NFFT)) ** 2
    freqs = np.fft.rfftfreq(_NFFT, 1.0 / SAMPLE_RATE)
    return float(power[(freqs >= 80) & (freqs < 5000)].sum())


# Band edges (Hz) of the measurements below.
_BANDS = {"speech": (80, 5000), "low": (80, 400), "f2_high": (1500, 3500), "f2_low": (250, 1500),
          "murmur": (80, 250), "above_murmur": (250, 400), "burst_low": (80, 800),
          "burst_high": (3500, 8000)}


class _Features:
    """Per-10 ms acoustic measurements of one clip."""

    def __init__(self, samples: np.ndarray):
        n = max(1, int(np.ceil(len(samples) / HOP)))
        freqs = np.fft.rfftfreq(_NFFT, 1.0 / SAMPLE_RATE)
        masks = {k: (freqs >= lo) & (freqs < hi) for k, (lo, hi) in _BANDS.items()}
        bands = {k: np.empty(n) for k in _BANDS}
        for first in range(0, n, _BLOCK):
            power = np.abs(np.fft.rfft(_frames(samples, first, _BLOCK), _NFFT, axis=1)) ** 2
            for k, m in masks.items():
                bands[k][first:first + power.shape[0]] = power[:, m].sum(axis=1) + 1e-10

        self.db = 10.0 * np.log10(bands["speech"] / _FULL_SCALE_POWER)  # dBFS, speech band
        self.energy = _energy_from_db(self.db)
        # F1 proxy: open vowels put their first formant (600-900 Hz) above the band
        # that holds F1 of close vowels and nasal murmurs.
        self.low_ratio_db = 10.0 * np.log10(bands["low"] / bands["speech"])
        # F2 proxy: spread vowels (high F2) carry energy in 1.5-3.5 kHz, rounded ones
        # (F2 near 800 Hz) do not.
        self.high_mid_db = 10.0 * np.log10(bands["f2_high"] / bands["f2_low"])
        # Nasal murmur / voice bar of a closure: the lowest band (voice fundamental
        # and the nasal resonance near 250 Hz) beats the band where the first formant
        # of even the closest vowel lies.
        self.murmur_db = 10.0 * np.log10(bands["murmur"] / bands["above_murmur"])
        # Spectral tilt, for telling stop bursts apart: a labial release is diffuse and
        # falling (most energy below 800 Hz), an alveolar one rising (above 3.5 kHz),
        # a velar one compact in between (Stevens & Blumstein).
        self.tilt_db = 10.0 * np.log10(bands["burst_low"] / bands["burst_high"])

    def __len__(self):
        return len(self.db)


# Anything quieter than this is silence, however quiet the whole recording is.
SILENCE_DBFS = -70.0


def _energy_from_db(db: np.ndarray, floor_db: float = 40.0, head_db: float = 4.0) -> np.ndarray:
    """Map frame levels (dBFS) to 0..1 against the clip's own speaking level.

    The reference is a high percentile of the frames that are not near-silent, so a
    quiet recording moves the mouth as much as a loud one; `floor_db` below it is 0 and
    `head_db` below it is already 1. The reference never drops below SILENCE_DBFS +
    floor_db, so digital silence and hiss stay at 0.
    """
    if db.size == 0:
        return db.copy()
    top = float(np.max(db))
    voiced = db[db > top - 50.0]
    ref = float(np.percentile(voiced, 90)) if voiced.size else top
    ref = max(ref, SILENCE_DBFS + floor_db)
    return np.clip((db - (ref - floor_db)) / (floor_db - head_db), 0.0, 1.0)


def loudness_envelope(samples: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Loudness per video frame, 0..1 (0 = silence, 1 = the clip's speaking level)."""
    feats = _Features(np.asarray(samples, np.float32))
    return _pool(feats.energy, fps, n_frames)


def _pool(grid: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Mean of a 10 ms-grid signal over each video frame's span [i/fps, (i+1)/fps).

    Frames past the end of the grid get 0; a frame shorter than one grid step takes the
    step it starts in.
    """
    out = np.zeros(max(n_frames, 0), np.float32)
    if grid.size == 0 or n_frames <= 0:
        return out
    edges = np.round(np.arange(n_frames + 1) * (GRID_HZ / float(fps))).astype(int)
    starts = edges[:-1]
    inside = starts < grid.size
    starts = starts[inside]
    ends = np.minimum(np.maximum(edges[1:][inside], starts + 1), grid.size)
    csum = np.concatenate([[0.0], np.cumsum(grid, dtype=np.float64)])
    out[:starts.size] = (csum[ends] - csum[starts]) / (ends - starts)
    return out


_FULL_SCALE_POWER = _full_scale_power()

# --------------------------------------------------------------------------- phones

# Viseme targets per ARPAbet phone: (open 0..1, width -1..1, press 0..1). Classes after
# Rhubarb Lip Sync: closed MBP, labiodental FV, rounded, open, mid, spread, and the
# consonants whose lip shape mostly comes from the neighbouring vowel. Every voiced
# sound but F/V and the closures opens the lips at least half way: in running speech
# the jaw hardly closes between syllables, and a mouth that only opens on open vowels
# looks like mumbling.
_CLOSED = (0.0, 0.0, 1.0)
VISEMES: dict[str, tuple[float, float, float]] = {
    "M": _CLOSED, "B": _CLOSED, "P": _CLOSED,
    "F": (0.15, 0.05, 0.0), "V": (0.15, 0.05, 0.0),
    "UW": (0.55, -1.0, 0.0), "W": (0.5, -1.0, 0.0), "OW": (0.67, -0.8, 0.0),
    "UH": (0.6, -0.6, 0.0), "OY": (0.7, -0.6, 0.0),
    "AA": (1.0, 0.0, 0.0), "AE": (0.94, 0.5, 0.0), "AH": (0.82, 0.0, 0.0),
    "AO": (0.9, -0.4, 0.0), "AY": (0.94, 0.1, 0.0), "AW": (0.9, -0.3, 0.0),
    "EH": (0.76, 0.6, 0.0), "EY": (0.7, 0.7, 0.0), "ER": (0.64, -0.3, 0.0),
    "IY": (0.55, 1.0, 0.0), "IH": (0.6, 0.8, 0.0), "Y": (0.52, 0.7, 0.0),
    "T": (0.55, 0.3, 0.0), "D": (0.55, 0.3, 0.0), "N": (0.52, 0.2, 0.0), "L": (0.6, 0.2, 0.0),
    "S": (0.5, 0.4, 0.0), "Z": (0.5, 0.4, 0.0), "TH": (0.52, 0.2, 0.0), "DH": (0.52, 0.2, 0.0),
    "SH": (0.52, -0.5, 0.0), "ZH": (0.52, -0.5, 0.0), "CH": (0.52, -0.5, 0.0), "JH": (0.52, -0.5, 0.0),
    "R": (0.55, -0.5, 0.0), "K": (0.6, 0.1, 0.0), "G": (0.6, 0.1, 0.0), "NG": (0.58, 0.1, 0.0),
    "HH": (0.7, 0.0, 0.0),
}
_SILENCE = {"SIL", "(NULL)", "<s>", "</s>", "<sil>"}

# Idle decoders, reused by whichever thread needs one next: building one costs ~0.15 s and
# jobs run on fresh threads. A decoder is never used by two threads at once.
_idle_decoders: list = []
_idle_lock = threading.Lock()

# Tuned on espeak-ng speech rendered by the engine and measured by analysis.py (see
# tests/quality): correlation of lip opening with loudness against closures on M/B/P
# and narrow lips on rounded vowels.
PHONE_WEIGHT = 0.6  # recognised phone vs acoustic estimate, where a phone was heard
OPEN_TAU_S = 0.010  # smoothing time constants: lips open and close fast, and the
WIDTH_TAU_S = 0.020  # spreading/rounding gesture is a little slower
PRESS_TAU_S = 0.010
PRESS_BOOST = 1.2  # so a closure still reaches full pressure after smoothing
GAIN_KNEE = 0.7  # loudness (0..1) from which the lips open fully
LABIAL_TILT_DB = 5.0  # a stop burst with more low than high energy than this is labial
MAX_CLOSURE_FRAMES = 12  # a stop closure lasts at most 120 ms; longer gaps are pauses
MURMUR_OVER_TYPICAL_DB = 3.0  # a murmur stands out this far from the speaker's vowels
MURMUR_OTHER = 0.0  # lip closure on a murmur the recogniser heard as n, d, g, ...


def _new_decoder():
    from pocketsphinx import Decoder, get_model_path

    model = get_model_path()
    return Decoder(
        hmm=os.path.join(model, "en-us", "en-us"),
        allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
        # Beams of 1e-10 instead of 1e-20 decode a quarter faster; on the quality set the
        # phones barely change (98.7 % of the sequence) and neither do the scores (lip-sync
        # r 0.678 -> 0.682, M/B/P and rounding both still pass by the same margins).
        lw=2.0, pip=0.3, beam=1e-10, pbeam=1e-10,
        # PocketSphinx's own dither draws from a generator that carries across utterances,
        # so the same audio would give different phones; recognise_phones dithers instead.
        dither=False,
        loglevel="FATAL",
    )


def recognise_phones(samples: np.ndarray) -> list[tuple[int, int, str]]:
    """English phones in 16 kHz speech as (start, end_exclusive, ARPAbet) on the 10 ms grid.

    Silence and noise segments are returned as "SIL". Deterministic: the same samples
    always give the same phones.
    """
    pcm = np.clip(samples, -1.0, 1.0) * 32767.0
    # Digital silence (exact zeros, common in synthetic and padded audio) gives degenerate
    # cepstra and makes the decoder call speech silence; a fixed ±1 LSB dither avoids it.
    pcm += np.random.default_rng(0).uniform(-1.0, 1.0, pcm.shape)
    pcm = np.clip(np.round(pcm), -32768, 32767).astype("<i2")
    with _idle_lock:
        dec = _idle_decoders.pop() if _idle_decoders else None
    if dec is None:
        dec = _new_decoder()
    try:
        dec.start_utt()
        dec.process_raw(pcm.tobytes(), full_utt=True)
        dec.end_utt()
        phones = []
        for seg in dec.seg():
            word = seg.word
            label = "SIL" if word in _SILENCE or word.startswith("+") else word
            phones.append((int(seg.start_frame), int(seg.end_frame) + 1, label))
    finally:
        with _idle_lock:
            _idle_decoders.append(dec)
    return phones


# --------------------------------------------------------------------------- mouth


def _acoustic_targets(f: _Features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Language-independent articulation estimate from formant-band proxies."""
    # Open vowels: low_ratio near -10 dB; close vowels and murmurs: near -2 dB.
    openness = np.clip((-f.low_ratio_db - 1.5) / 7.0, 0.0, 1.0)
    open_t = 0.55 + 0.45 * openness
    # Spread vowels sit near -5 dB, rounded ones near -16 dB.
    width_t = np.clip((f.high_mid_db + 10.5) / 5.0, -1.0, 1.0)
    # A voiced murmur: lips closed (m, b) or very nearly so (n, v), in every language.
    # Fricatives and bursts have almost no low band at all, so the ratio means nothing
    # there: ask also that the band below 400 Hz carries most of the energy.
    # The split at 250 Hz suits low voices; a high voice's fundamental alone fills the
    # lower band, so the threshold rises with the speaker's typical value (on espeak's
    # female voices this halves false closures and misses more real ones).
    loud = f.energy > 0.5
    typical = float(np.median(f.murmur_db[loud])) if loud.any() else 0.0
    murmur = (np.clip((f.murmur_db - max(typical + MURMUR_OVER_TYPICAL_DB, 1.0)) / 3.0, 0.0, 1.0)
              * np.clip((f.low_ratio_db + 5.0) / 2.0, 0.0, 1.0)
              * (f.energy > 0.15))
    return open_t, width_t, murmur


def _labial_closures(f: _Features) -> np.ndarray:
    """Press (0/1) on the closure and release of stops whose burst sounds labial (p, b).

    A stop is a short gap (20-120 ms, at least 30 dB below the speaking level) between
    speech and a burst; the lips are shut for the whole gap when the burst is labial.
    """
    n = len(f)
    press = np.zeros(n, np.float32)
    quiet = f.energy < 0.25
    i = 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        gap = j - i
        # Speech just before the gap, and a burst right after it: a stop releases at
        # once, while a glide or vowel onset (w after a comma) swells over tens of ms.
        if (2 <= gap <= MAX_CLOSURE_FRAMES and i >= 1 and j < n
                and f.energy[max(0, i - 3):i].max() > 0.4 and f.energy[j] > 0.3):
            burst = f.tilt_db[j:min(n, j + 2)].mean()
            if burst > LABIAL_TILT_DB:
                press[i:j + 1] = 1.0
        i = j
    return press


# Non-labial phones with a murmur of their own (nasals, voice bars of d and g, voiced
# fricatives): a murmur under one of these labels is most likely just the phone.
_MURMUR_PHONES = frozenset({"N", "NG", "D", "G", "DH", "Z", "ZH", "JH", "V", "TH", "L"})


def _murmur_trust(phones, n: int) -> np.ndarray:
    """How far a murmur closes the lips under each grid point's recognised phone.

    Fully under silence, labials and vowels (a vowel label on a murmur is the
    recogniser's mistake), by MURMUR_OTHER under phones with a murmur of their own.
    """
    trust = np.ones(n, np.float32)
    for a, b, label in phones:
        if label in _MURMUR_PHONES:
            trust[max(0, a):min(n, b)] = MURMUR_OTHER
    return trust


def _phone_targets(phones, n: int):
    """Viseme targets on the grid; NaN where no phone (silence or an unknown label)."""
    open_t = np.full(n, np.nan, np.float32)
    width_t = np.full(n, np.nan, np.float32)
    press_t = np.zeros(n, np.float32)
    for a, b, label in phones:
        target = VISEMES.get(label)
        if target is None:
            continue
        a, b = max(0, a), min(n, b)
        open_t[a:b], width_t[a:b], press_t[a:b] = target
    return open_t, width_t, press_t


def _damped(x: np.ndarray, tau_s: float) -> np.ndarray:
    """Critically damped second-order smoothing, run forward then backward.

    The backward pass makes it zero-phase, so articulators start moving before a sound
    (anticipatory coarticulation) as much as they linger after it.
    """
    if x.size == 0 or tau_s <= 0:
        return x.astype(np.float32)
    a = float(np.exp(-1.0 / (tau_s * GRID_HZ)))

    def one_pass(v):
        # Two cascaded one-pole low-passes = a critically damped response.
        y = lfilter([1 - a], [1, -a], v, zi=[v[0] * a])[0]
        return lfilter([1 - a], [1, -a], y, zi=[y[0] * a])[0]

    y = one_pass(x.astype(np.float64))
    return one_pass(y[::-1])[::-1].astype(np.float32)


def _gain(energy: np.ndarray) -> np.ndarray:
    """Loudness to opening gain: closed in silence, full from moderate loudness up."""
    e = np.clip(energy / GAIN_KNEE, 0.0, 1.0)
    return e * e * (3.0 - 2.0 * e)  # smoothstep: quiet breath noise barely moves the lips


def mouth_track(
    samples: np.ndarray,
    fps: float,
    n_frames: int,
    *,
    use_phones: bool = True,
    phones: Optional[list[tuple[int, int, str]]] = None,
) -> api.MouthTrack:
    """Articulation per video frame from 16 kHz mono speech.

    `use_phones=False` skips recognition (the acoustic estimate alone, for speech that
    is known not to be English); `phones` passes a ready alignment on the 10 ms grid as
    (start, end_exclusive, ARPAbet), e.g. from a forced alignment, instead of
    recognising one.
    """
    samples = np.asarray(samples, np.float32).reshape(-1)
    if n_frames <= 0:
        empty = np.zeros(0, np.float32)
        return api.MouthTrack(empty, empty, empty, empty, float(fps))
    if samples.size == 0:
        zeros = np.zeros(n_frames, np.float32)
        return api.MouthTrack(zeros, zeros.copy(), zeros.copy(), zeros.copy(), float(fps))

    f = _Features(samples)
    n = len(f)
    ac_open, ac_width, murmur = _acoustic_targets(f)

    if phones is None and use_phones:
        phones = recognise_phones(samples)
    ph_open, ph_width, ph_press = _phone_targets(phones or [], n)
    known = ~np.isnan(ph_open)
    speaking = f.energy > 0.5
    coverage = float(known[speaking].mean()) if speaking.any() else 0.0
    if coverage < 0.4:
        # Recognition found little speech where there plainly is some: do not let a
        # wrong-language phone string drive the lips.
        log.debug("phone coverage %.2f: acoustic articulation only", coverage)
        known[:] = False
        ph_press[:] = 0.0

    # Recognised phones and the acoustic estimate are blended, not switched: the phone
    # gives the viseme class, the acoustics correct a wrong label's excesses.
    w = np.where(known, PHONE_WEIGHT, 0.0)
    open_t = w * np.nan_to_num(ph_open) + (1 - w) * ac_open
    width_t = w * np.nan_to_num(ph_width) + (1 - w) * ac_width
    # Lips shut where the sound says so: a labial stop's closure and burst, or a voiced
    # murmur (m, b), unless the recogniser heard a phone that has a murmur of its own.
    acoustic_press = np.maximum(_labial_closures(f), murmur * _murmur_trust(phones or [], n))
    # A recognised M/B/P presses however loud it is, but only with some sign of a
    # closure within 20 ms (murmur, silence, a labial burst): the recogniser also
    # hears "m" in a "th".
    evidence = maximum_filter1d(np.maximum(acoustic_press, (f.energy < 0.3).astype(np.float32)), size=5)
    press_t = np.maximum(ph_press * evidence, acoustic_press)

    gain = _gain(f.energy)
    open_g = open_t * gain
    width_g = width_t * np.minimum(1.0, gain * 1.5)  # the lips relax towards rest in silence

    press_s = np.clip(_damped(press_t, PRESS_TAU_S) * PRESS_BOOST, 0.0, 1.0)
    open_s = np.clip(_damped(open_g, OPEN_TAU_S), 0.0, 1.0) * (1.0 - press_s)
    width_s = np.clip(_damped(width_g, WIDTH_TAU_S), -1.0, 1.0)

    # Mean over each video frame's span: a closure shorter than a frame shows as a
    # partial press, so the vowels around it keep their opening.
    return api.MouthTrack(
        open=_pool(open_s, fps, n_frames),
        width=_pool(width_s, fps, n_frames),
        press=_pool(press_s, fps, n_frames),
        energy=_pool(f.energy, fps, n_frames),
        fps=float(fps),
    )
