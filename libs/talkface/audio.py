"""Speech audio to mouth motion: decode, measure loudness, recognise phones, make visemes.

The output is an `api.MouthTrack` (one value per video frame). Everything runs on a
10 ms analysis grid first and is then pooled into video frames:

1. loudness (RMS in dB against the clip's own speaking level) gives `energy`;
2. PocketSphinx all-phone decoding (phones.py) labels the grid with English phones, each
   mapped to a viseme target (open, width, press) in the manner of Rhubarb Lip Sync. It
   runs on pieces of about 2.5 s cut at quiet points, and `mouth_track_stream` gives the
   track span by span as pieces come in, so the engine renders while the rest of the
   speech is recognised (in its recogniser process, recogniser.py);
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
from collections.abc import Callable, Iterator
from typing import Optional

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import lfilter

from libs.talkface import api
from libs.talkface.phones import Phones, Recogniser, recognise_in_turn

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
    return energy_at(db, speaking_level(db, floor_db), floor_db, head_db)


def speaking_level(db: np.ndarray, floor_db: float = 40.0) -> float:
    """The speaking level (dBFS) of frame levels `db`: a high percentile of the frames that are
    not near-silent, never below SILENCE_DBFS + floor_db."""
    if db.size == 0:
        return SILENCE_DBFS + floor_db
    top = float(np.max(db))
    voiced = db[db > top - 50.0]
    ref = float(np.percentile(voiced, 90)) if voiced.size else top
    return max(ref, SILENCE_DBFS + floor_db)


def energy_at(db: np.ndarray, ref: float, floor_db: float = 40.0, head_db: float = 4.0) -> np.ndarray:
    """Frame levels (dBFS) to 0..1 against the speaking level `ref` (see _energy_from_db)."""
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
    n_frames = max(n_frames, 0)
    return _pooler(_frame_edges(fps, n_frames), grid.size, 0, n_frames, 0)(grid)


def _frame_edges(fps: float, n_frames: int) -> np.ndarray:
    """Grid span of every video frame: frame i covers [edges[i], edges[i + 1])."""
    return np.round(np.arange(n_frames + 1) * (GRID_HZ / float(fps))).astype(int)


def _pooler(edges: np.ndarray, n_grid: int, f0: int, f1: int, offset: int) -> Callable[[np.ndarray], np.ndarray]:
    """_pool for frames [f0, f1) of a grid of `n_grid` points, given a window of it that
    starts at grid point `offset` (and reaches past those frames' spans)."""
    starts = edges[f0:f1]
    inside = starts < n_grid
    starts = starts[inside]
    ends = np.minimum(np.maximum(edges[f0 + 1:f1 + 1][inside], starts + 1), n_grid)

    def pool(grid: np.ndarray) -> np.ndarray:
        out = np.zeros(f1 - f0, np.float32)
        csum = np.concatenate([[0.0], np.cumsum(grid, dtype=np.float64)])
        out[:starts.size] = (csum[ends - offset] - csum[starts - offset]) / (ends - starts)
        return out

    return pool


_FULL_SCALE_POWER = _full_scale_power()

# --------------------------------------------------------------------------- phones

# Viseme targets per ARPAbet phone: (open 0..1, width -1..1, press 0..1, F/V 0..1), after
# Rhubarb Lip Sync's classes: closed MBP; F/V with the lower lip under the upper teeth;
# most consonants slightly open with the teeth close; open vowels wide, close vowels
# (IY, IH, UW) barely open; rounded OW/UW/W narrow, IY/EY/EH spread. Openings are those
# of read speech (calibrated on LibriVox recordings with their forced alignments): the
# jaw drops for AA/AE/AO/AY/AW, much less for IY/IH, which look spread rather than open.
_CLOSED = (0.0, 0.0, 1.0, 0.0)
_FV = (0.1, 0.1, 0.0, 1.0)
VISEMES: dict[str, tuple[float, float, float, float]] = {
    "M": _CLOSED, "B": _CLOSED, "P": _CLOSED,
    "F": _FV, "V": _FV,
    "UW": (0.35, -1.0, 0.0, 0.0), "W": (0.12, -1.0, 0.0, 0.0), "OW": (0.6, -0.8, 0.0, 0.0),
    "UH": (0.45, -0.6, 0.0, 0.0), "OY": (0.65, -0.6, 0.0, 0.0),
    "AA": (1.0, 0.0, 0.0, 0.0), "AE": (0.9, 0.5, 0.0, 0.0), "AH": (0.8, 0.0, 0.0, 0.0),
    "AO": (0.9, -0.4, 0.0, 0.0), "AY": (0.9, 0.1, 0.0, 0.0), "AW": (0.9, -0.3, 0.0, 0.0),
    "EH": (0.6, 0.6, 0.0, 0.0), "EY": (0.5, 0.7, 0.0, 0.0), "ER": (0.45, -0.3, 0.0, 0.0),
    "IY": (0.3, 1.0, 0.0, 0.0), "IH": (0.35, 0.8, 0.0, 0.0), "Y": (0.3, 0.7, 0.0, 0.0),
    "T": (0.4, 0.3, 0.0, 0.0), "D": (0.4, 0.3, 0.0, 0.0), "N": (0.4, 0.2, 0.0, 0.0), "L": (0.45, 0.2, 0.0, 0.0),
    "S": (0.35, 0.4, 0.0, 0.0), "Z": (0.35, 0.4, 0.0, 0.0), "TH": (0.4, 0.2, 0.0, 0.0), "DH": (0.4, 0.2, 0.0, 0.0),
    "SH": (0.4, -0.5, 0.0, 0.0), "ZH": (0.4, -0.5, 0.0, 0.0), "CH": (0.4, -0.5, 0.0, 0.0),
    "JH": (0.4, -0.5, 0.0, 0.0),
    "R": (0.4, -0.5, 0.0, 0.0), "K": (0.45, 0.1, 0.0, 0.0), "G": (0.45, 0.1, 0.0, 0.0), "NG": (0.4, 0.1, 0.0, 0.0),
    "HH": (0.55, 0.0, 0.0, 0.0),
}
# Tuned on espeak-ng speech rendered by the engine and measured by analysis.py (see
# tests/quality): correlation of lip opening with loudness against closures on M/B/P
# and narrow lips on rounded vowels.
PHONE_WEIGHT = 0.8  # recognised phone vs acoustic estimate, where a phone was heard
OPEN_TAU_S = 0.010  # smoothing time constants: lips open and close fast, and the
WIDTH_TAU_S = 0.020  # spreading/rounding gesture is a little slower
PRESS_TAU_S = 0.010
PRESS_BOOST = 1.2  # so a closure still reaches full pressure after smoothing
PRESS_UNSEEN = 0.75  # a recognised M/B/P with no acoustic sign of a closure
MIN_CLOSURE = 7  # grid steps (10 ms): the shortest closure a recognised M/B/P gets
GAIN_KNEE = 1.3  # loudness scale of the opening: never saturates, so louder syllables open wider
LABIAL_TILT_DB = 5.0  # a stop burst with more low than high energy than this is labial
MAX_CLOSURE_FRAMES = 12  # a stop closure lasts at most 120 ms; longer gaps are pauses
MURMUR_OVER_TYPICAL_DB = 3.0  # a murmur stands out this far from the speaker's vowels
MURMUR_OTHER = 0.0  # lip closure on a murmur the recogniser heard as n, d, g, ...


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


def _at_least(x: np.ndarray, steps: int) -> np.ndarray:
    """Runs of x > 0 widened, about their middle, to at least `steps` grid steps: the
    recogniser cuts a closure short or shifts it by a frame or two, while lips stay shut
    for 50-100 ms on every M, B and P."""
    out = x.copy()
    on = np.flatnonzero(np.diff(np.concatenate([[0], (x > 0).astype(np.int8), [0]])))
    for a, b in zip(on[::2], on[1::2]):
        if b - a < steps:
            extra = steps - (b - a)
            lo, hi = max(0, a - extra // 2), min(len(x), b + extra - extra // 2)
            out[lo:hi] = np.maximum(out[lo:hi], x[a:b].max())
    return out


def _phone_targets(phones, n: int):
    """Viseme targets on the grid (open, width, press, F/V); NaN open and width where no
    phone (silence or an unknown label)."""
    open_t = np.full(n, np.nan, np.float32)
    width_t = np.full(n, np.nan, np.float32)
    press_t = np.zeros(n, np.float32)
    fv_t = np.zeros(n, np.float32)
    for a, b, label in phones:
        target = VISEMES.get(label)
        if target is None:
            continue
        a, b = max(0, a), min(n, b)
        open_t[a:b], width_t[a:b], press_t[a:b], fv_t[a:b] = target
    return open_t, width_t, press_t, fv_t


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


# Phones are recognised piece by piece, cut at the quietest 10 ms near every CHUNK_S (the
# first piece shorter), so a caller can render the start while the rest is recognised.
FIRST_CHUNK_S = 1.0
CHUNK_S = 2.5
CUT_SEARCH_S = 0.4  # how far from the nominal cut the quietest point is looked for
SETTLE_S = 0.3  # the smoothing's reach: frames this close to unrecognised speech wait
CONTEXT_S = 2.0  # grid a span's track is computed over on each side (the smoothing settles)
MIN_COVERAGE = 0.4  # phones covering less of a piece's speech than this are ignored

def _cuts(db: np.ndarray) -> list[int]:
    """Grid indices where the pieces start, and the grid's end."""
    n = len(db)
    search = int(CUT_SEARCH_S * GRID_HZ)
    cuts, step = [0], FIRST_CHUNK_S
    while True:
        nominal = cuts[-1] + int(step * GRID_HZ)
        if nominal + search >= n:
            break
        lo = max(cuts[-1] + 1, nominal - search)
        cuts.append(lo + int(np.argmin(db[lo:nominal + search])))
        step = CHUNK_S
    cuts.append(n)
    return cuts


class _TrackBuilder:
    """The mouth track of one clip, span by span, as the phones of its pieces come in."""

    def __init__(self, samples: np.ndarray, fps: float, n_frames: int, features: Optional[_Features] = None):
        # a live session passes features whose energy is measured against its running level
        f = features if features is not None else _Features(samples)
        self.f, self.n, self.fps, self.n_frames = f, len(f), float(fps), int(n_frames)
        self.ac_open, self.ac_width, self.murmur = _acoustic_targets(f)
        self.labial = _labial_closures(f)
        self.gain = _gain(f.energy)
        self.ph_open = np.full(self.n, np.nan, np.float32)
        self.ph_width = np.full(self.n, np.nan, np.float32)
        self.ph_press = np.zeros(self.n, np.float32)
        self.ph_fv = np.zeros(self.n, np.float32)
        self.trust = np.ones(self.n, np.float32)
        self.edges = _frame_edges(self.fps, self.n_frames)

    def add_phones(self, phones: Phones, a: int, b: int) -> None:
        """The phones recognised in grid [a, b); ignored there if they cover too little of
        the speech (recognition found little where there plainly is some: another language)."""
        o, w, p, v = _phone_targets(phones, self.n)
        speaking = self.f.energy[a:b] > 0.5
        known = ~np.isnan(o[a:b])
        coverage = float(known[speaking].mean()) if speaking.any() else 0.0
        if coverage < MIN_COVERAGE:
            log.debug("phone coverage %.2f in grid %d-%d: acoustic articulation only", coverage, a, b)
            return
        self.ph_open[a:b], self.ph_width[a:b], self.ph_press[a:b] = o[a:b], w[a:b], _at_least(p, MIN_CLOSURE)[a:b]
        self.ph_fv[a:b] = v[a:b]
        self.trust[a:b] = _murmur_trust(phones, self.n)[a:b]

    def frames_before(self, grid_end: int) -> int:
        """How many frames end at or before grid index `grid_end`."""
        return int(np.searchsorted(self.edges[1:], grid_end, side="right"))

    def span(self, f0: int, f1: int) -> api.MouthTrack:
        """Frames [f0, f1) from the phones added so far (acoustics alone elsewhere)."""
        c = int(CONTEXT_S * GRID_HZ)
        w0 = max(0, min(int(self.edges[f0]), self.n) - c)
        w1 = min(self.n, int(self.edges[f1]) + 1 + c)
        sl = slice(w0, w1)
        energy = self.f.energy[sl]
        ph_open = self.ph_open[sl]
        known = ~np.isnan(ph_open)
        # Recognised phones and the acoustic estimate are blended, not switched: the phone
        # gives the viseme class, the acoustics correct a wrong label's excesses.
        wgt = np.where(known, PHONE_WEIGHT, 0.0)
        open_t = wgt * np.nan_to_num(ph_open) + (1 - wgt) * self.ac_open[sl]
        width_t = wgt * np.nan_to_num(self.ph_width[sl]) + (1 - wgt) * self.ac_width[sl]
        # Lips shut where the sound says so: a labial stop's closure and burst, or a voiced
        # murmur (m, b), unless the recogniser heard a phone that has a murmur of its own.
        acoustic_press = np.maximum(self.labial[sl], self.murmur[sl] * self.trust[sl])
        # A recognised M/B/P presses however loud it is; fully with some sign of a closure
        # within 40 ms (murmur, silence, a labial burst), else most of the way (the
        # recogniser also hears "m" in a "th", but misses more real closures than that).
        evidence = maximum_filter1d(np.maximum(acoustic_press, (energy < 0.3).astype(np.float32)), size=9)
        press_t = np.maximum(self.ph_press[sl] * np.maximum(evidence, PRESS_UNSEEN), acoustic_press)
        fv_t = np.clip(_damped(maximum_filter1d(self.ph_fv[sl], size=3), PRESS_TAU_S) * PRESS_BOOST, 0.0, 1.0)

        gain = self.gain[sl]
        open_g = open_t * gain
        width_g = width_t * np.minimum(1.0, gain * 1.5)  # the lips relax towards rest in silence

        press_s = np.clip(_damped(press_t, PRESS_TAU_S) * PRESS_BOOST, 0.0, 1.0)
        open_s = np.clip(_damped(open_g, OPEN_TAU_S), 0.0, 1.0) * (1.0 - press_s)
        width_s = np.clip(_damped(width_g, WIDTH_TAU_S), -1.0, 1.0)

        # Mean over each video frame's span: a closure shorter than a frame shows as a
        # partial press, so the vowels around it keep their opening.
        pool = _pooler(self.edges, self.n, f0, f1, w0)
        return api.MouthTrack(open=pool(open_s), width=pool(width_s), press=pool(press_s),
                              energy=pool(energy), fps=self.fps, fv=pool(fv_t * (1.0 - press_s)))


class MouthTrackStream:
    """The mouth track of one clip in consecutive spans of frames, each as soon as it is final.

    `energy` (loudness per frame, which head motion follows) is known at once; iterating
    yields (first frame, track of the span), the spans covering frames 0..n_frames. Phones
    are recognised in pieces by `recognise` (all pieces are handed over at once, so a
    recogniser may work ahead); a span is final once the pieces it depends on are in, and
    it is the same whichever recogniser ran them. `close()` stops early.
    """

    def __init__(self, samples: np.ndarray, fps: float, n_frames: int, *, use_phones: bool = True,
                 phones: Optional[Phones] = None, recognise: Recogniser = recognise_in_turn):
        samples = np.asarray(samples, np.float32).reshape(-1)
        n_frames = max(int(n_frames), 0)
        if n_frames == 0 or samples.size == 0:
            zeros = np.zeros(n_frames, np.float32)
            self.energy = zeros
            self._spans = iter([(0, api.MouthTrack(zeros, zeros.copy(), zeros.copy(), zeros.copy(), float(fps)))])
            return
        b = _TrackBuilder(samples, fps, n_frames)
        self.energy = _pool(b.f.energy, fps, n_frames)
        if phones is not None or not use_phones:
            b.add_phones(phones or [], 0, b.n)
            self._spans = iter([(0, b.span(0, n_frames))])
        else:
            self._spans = self._recognised(samples, b, recognise)

    @classmethod
    def whole(cls, track: api.MouthTrack) -> "MouthTrackStream":
        """A stream of one ready track (a forced alignment's, say)."""
        stream = cls.__new__(cls)
        stream.energy = np.asarray(track.energy, np.float32)
        stream._spans = iter([(0, track)])
        return stream

    @staticmethod
    def _recognised(samples: np.ndarray, b: _TrackBuilder, recognise: Recogniser) -> Iterator[tuple[int, api.MouthTrack]]:
        cuts = _cuts(b.f.db)
        pieces = [samples[a * HOP:e * HOP] for a, e in zip(cuts[:-1], cuts[1:])]
        done = 0
        results = recognise(pieces)
        try:
            for k, found in enumerate(results):
                a, e = cuts[k], cuts[k + 1]
                b.add_phones([(s + a, t + a, label) for s, t, label in found], a, e)
                last = k == len(pieces) - 1
                upto = b.n_frames if last else b.frames_before(e - int(SETTLE_S * GRID_HZ))
                if upto > done:
                    yield done, b.span(done, upto)
                    done = upto
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> "MouthTrackStream":
        return self

    def __next__(self) -> tuple[int, api.MouthTrack]:
        return next(self._spans)

    def close(self) -> None:
        """Stop recognising (a job cut short)."""
        close = getattr(self._spans, "close", None)
        if close is not None:
            close()


def mouth_track_stream(samples: np.ndarray, fps: float, n_frames: int, *, use_phones: bool = True,
                       phones: Optional[Phones] = None,
                       recognise: Recogniser = recognise_in_turn) -> MouthTrackStream:
    """The clip's MouthTrackStream; `mouth_track` is this stream joined."""
    return MouthTrackStream(samples, fps, n_frames, use_phones=use_phones, phones=phones, recognise=recognise)


def mouth_track(
    samples: np.ndarray,
    fps: float,
    n_frames: int,
    *,
    use_phones: bool = True,
    phones: Optional[Phones] = None,
) -> api.MouthTrack:
    """Articulation per video frame from 16 kHz mono speech.

    `use_phones=False` skips recognition (the acoustic estimate alone, for speech that
    is known not to be English); `phones` passes a ready alignment on the 10 ms grid as
    (start, end_exclusive, ARPAbet), e.g. from a forced alignment, instead of
    recognising one.
    """
    spans = [t for _, t in mouth_track_stream(samples, fps, n_frames, use_phones=use_phones, phones=phones)]
    if len(spans) == 1:
        return spans[0]
    joined = {k: np.concatenate([getattr(t, k) for t in spans]) for k in ("open", "width", "press", "energy")}
    fv = [t.fv if t.fv is not None else np.zeros(len(t.open), np.float32) for t in spans]  # type: ignore[arg-type]
    return api.MouthTrack(**joined, fps=float(fps), fv=np.concatenate(fv))  # type: ignore[arg-type]
