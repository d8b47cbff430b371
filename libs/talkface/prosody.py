"""Head motion from the voice: nods on stressed syllables, tilts over phrases, settling at phrase ends.

People move their heads with what they say, not at random: the head dips on a stressed
syllable (a loud, high-pitched peak of the voice), tilts a little over a phrase and
comes back at its end, and is nearly still in silence. Here:

1. the voice's pitch comes from YIN (de Cheveigné and Kawahara, 2002) on 10 ms steps,
   pooled per video frame as semitones against the speaker's median (NaN unvoiced);
   no library in the environment offers it without heavy dependencies (librosa);
2. stressed syllables are peaks of the loudness envelope, weighted up where the pitch is
   high; phrase ends are where speech gives way to a pause;
3. every event starts a smooth, damped pulse of the head (a nod down and back, a tilt);
   a slow seeded sway keeps the head alive between them. Amounts are a few degrees at
   `dynamic_scale` 1, scaled by it, and softly capped.

All of it is seeded and deterministic. The result is roll, yaw and pitch (radians) and a
small shift (pixels) per frame, what motion.MotionPlan.head applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks, resample_poly

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
F0_MIN, F0_MAX = 70.0, 400.0
# YIN runs on the sound at half its rate: a voice's pitch is far below 4 kHz, and half
# the rate is half the work (60 s of speech: 0.17 s -> 0.09 s of CPU; the pitch agrees
# within 0.005 semitones at the median, 0.03-0.08 at the 95th percentile, on real speech).
_RATE = SAMPLE_RATE // 2
_HOP = HOP // 2
_WIN = _RATE * 3 // 100  # 30 ms: two periods of the lowest pitch
_TAU_MAX = int(_RATE / F0_MIN)
_TAU_MIN = int(_RATE / F0_MAX)
YIN_THRESHOLD = 0.15
VOICED_MAX = 0.35  # a frame whose best period scores above this is unvoiced

# Head amounts at dynamic_scale 1 (degrees).
NOD_DEG = 1.8  # the dip on the strongest stressed syllable
PHRASE_NOD_DEG = 1.6  # the settling dip at a phrase end
TILT_DEG = 0.8  # the tilt held over a phrase
TILT_ACCENT_DEG = 0.3  # and deepened on its stressed syllables
YAW_DEG = 0.4  # slow turning
SWAY_DEG = 0.15  # what is left in silence
CAP_DEG = 4.0  # soft limit at dynamic_scale 1
PAUSE_LOUDNESS = 0.08  # energy below this is a pause between phrases
MIN_PAUSE_S = 0.2
NOD_SHIFT = 0.15  # face heights the face drops per radian of nod (it turns about the neck)


def pitch_track(samples: np.ndarray) -> np.ndarray:
    """F0 (Hz) on the 10 ms grid of 16 kHz mono `samples` (frame k centred on k * 10 ms);
    NaN where unvoiced or silent."""
    x = resample_poly(np.asarray(samples, np.float32), 1, SAMPLE_RATE // _RATE).astype(np.float32)
    n = max(1, int(math.ceil(len(samples) / HOP)))
    span = _WIN + _TAU_MAX + 1
    padded = np.zeros(n * _HOP + span, np.float32)
    padded[_WIN // 2:_WIN // 2 + len(x)] = x
    nfft = 1 << int(math.ceil(math.log2(2 * span)))
    out = np.full(n, np.nan, np.float32)
    rms = np.zeros(n, np.float32)
    for start in range(0, n, 1024):
        idx = np.arange(start, min(n, start + 1024))
        frames = padded[idx[:, None] * _HOP + np.arange(span)[None, :]].astype(np.float64)
        head = frames[:, :_WIN]
        # d(tau) = sum (x_j - x_j+tau)^2 over the window, from one cross-correlation
        r = np.fft.irfft(np.conj(np.fft.rfft(head, nfft)) * np.fft.rfft(frames, nfft), nfft)[:, :_TAU_MAX + 1]
        cs = np.concatenate([np.zeros((len(idx), 1)), np.cumsum(frames ** 2, 1)], 1)
        taus = np.arange(_TAU_MAX + 1)
        e2 = cs[:, taus + _WIN] - cs[:, taus]
        d = np.maximum(cs[:, _WIN:_WIN + 1] + e2 - 2 * r, 0.0)
        cum = np.cumsum(d[:, 1:], 1)
        cmnd = np.ones_like(d)
        cmnd[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
        rng = cmnd[:, _TAU_MIN:_TAU_MAX]
        dip = (rng[:, :-1] < YIN_THRESHOLD) & (rng[:, :-1] <= rng[:, 1:])
        first = np.where(dip.any(1), dip.argmax(1), rng.argmin(1))
        best = rng[np.arange(len(idx)), first]
        tau = first + _TAU_MIN
        # parabolic refinement of the period
        a = cmnd[np.arange(len(idx)), np.maximum(tau - 1, 1)]
        b = cmnd[np.arange(len(idx)), tau]
        c = cmnd[np.arange(len(idx)), np.minimum(tau + 1, _TAU_MAX)]
        den = a - 2 * b + c
        shift = np.where(np.abs(den) > 1e-9, 0.5 * (a - c) / np.where(np.abs(den) > 1e-9, den, 1.0), 0.0)
        f0 = _RATE / (tau + np.clip(shift, -1, 1))
        out[idx] = np.where(best < VOICED_MAX, f0, np.nan)
        rms[idx] = np.sqrt(cs[:, _WIN] / _WIN)
    loud = np.percentile(rms, 95) if n else 0.0
    out[rms < 0.03 * max(float(loud), 1e-6)] = np.nan  # 30 dB under the speech: silence
    return out


def pitch_per_frame(samples: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Pitch per video frame in semitones against the speaker's median (0 = their usual
    pitch), NaN where a frame has no voiced 10 ms step."""
    f0 = pitch_track(samples)
    voiced = np.isfinite(f0)
    out = np.full(n_frames, np.nan, np.float32)
    if voiced.sum() < 5:
        return out
    semis = 12.0 * np.log2(f0 / np.median(f0[voiced]))
    centres = np.arange(len(f0)) * (HOP / SAMPLE_RATE)
    frame = np.floor(centres * fps).astype(int)
    ok = voiced & (frame < n_frames)
    sums = np.bincount(frame[ok], semis[ok], minlength=n_frames)[:n_frames]
    counts = np.bincount(frame[ok], minlength=n_frames)[:n_frames]
    has = counts > 0
    out[has] = (sums[has] / counts[has]).astype(np.float32)
    return out


def phrase_ends(energy: np.ndarray, fps: float) -> list[tuple[float, float]]:
    """(time a phrase ends, how long it was) for every phrase followed by a pause."""
    talking = energy > PAUSE_LOUDNESS
    out = []
    start = None
    quiet = 0
    min_quiet = max(1, int(round(MIN_PAUSE_S * fps)))
    for i, t in enumerate(talking):
        if t:
            if start is None:
                start = i
            quiet = 0
            last_loud = i
        elif start is not None:
            quiet += 1
            if quiet == min_quiet:
                out.append(((last_loud + 1) / fps, (last_loud + 1 - start) / fps))
                start = None
    return out


@dataclass
class HeadMotion:
    """Per frame: roll, yaw, pitch (radians; pitch > 0 nods down), shift (pixels)."""

    roll: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    shift: np.ndarray  # (n, 2)


def _pulse(n: int, fps: float, times: np.ndarray, amounts: np.ndarray, tau_s: float) -> np.ndarray:
    """A sum of smooth one-sided pulses (t/tau) e^(1 - t/tau), peak 1 at tau after each time."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for t0, a in zip(times, amounts):
        d = (t - t0) / tau_s
        on = d > 0
        out[on] += a * d[on] * np.exp(1.0 - d[on])
    return out


def _sway(n: int, fps: float, rng: np.random.Generator, sigma_s: float) -> np.ndarray:
    """Unit-variance smooth seeded noise."""
    sigma = max(sigma_s * fps, 1e-3)
    pad = int(4 * sigma) + 1
    y = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma, mode="nearest")[pad:pad + n]
    return y * math.sqrt(2.0 * math.sqrt(math.pi) * sigma)


def stresses(energy: np.ndarray, semitones: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(frame of each stressed syllable, its strength 0..~1.3): where the loudness stands
    out from its own half-second average (stress is prominence against what is around
    it, not loudness as such), stronger where the pitch is above the speaker's usual."""
    e = gaussian_filter1d(np.asarray(energy, np.float64), max(0.04 * fps, 1e-3), mode="nearest")
    rel = e - gaussian_filter1d(e, max(0.5 * fps, 1e-3), mode="nearest")
    peaks, _ = find_peaks(rel, height=0.05, prominence=0.08, distance=max(1, int(0.2 * fps)))
    if not len(peaks):
        return peaks, np.zeros(0)
    p = np.nan_to_num(np.asarray(semitones, np.float64)[peaks], nan=0.0)
    strength = rel[peaks] * (1.0 + 0.5 * np.clip(p / 3.0, -1.0, 1.0))
    return peaks, strength / max(float(np.percentile(strength, 90)), 1e-6)


def head_motion(energy: np.ndarray, semitones: np.ndarray | None, fps: float, seed: int,
                dynamic_scale: float, face_height: float) -> HeadMotion:
    """The head's motion for a clip with loudness `energy` (0..1) and pitch `semitones`
    (per frame, NaN unvoiced; None when unknown: loudness alone then)."""
    energy = np.clip(np.asarray(energy, np.float64), 0.0, 1.0)
    n = len(energy)
    semis = np.full(n, np.nan) if semitones is None else np.asarray(semitones, np.float64)[:n]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x4EAD]))
    rad = math.pi / 180.0
    peaks, strength = stresses(energy, semis, fps)
    times = peaks / fps - 0.1  # the head leads the voice's peak a little: its dip lands on it
    ends = phrase_ends(energy.astype(np.float32), fps)
    end_t = np.array([t for t, _ in ends])
    # nods: down on stresses (the strongest most), and a settling dip at each phrase end
    pitch = NOD_DEG * _pulse(n, fps, times, np.clip(strength, 0, 1.3) ** 2, 0.16)
    pitch += PHRASE_NOD_DEG * _pulse(n, fps, end_t - 0.15, np.ones(len(end_t)), 0.22)
    # the head rises a little with the voice (slow), falls as it does
    slow = gaussian_filter1d(np.nan_to_num(semis, nan=0.0), max(0.3 * fps, 1e-3), mode="nearest")
    pitch -= 0.15 * np.clip(slow, -4.0, 4.0)
    # tilt: each phrase leans to a side (seeded), deepened on its stresses, back at its end
    starts = [0.0] + list(end_t)
    side = np.zeros(n)
    t = np.arange(n) / fps
    for k, t0 in enumerate(starts):
        t1 = end_t[k] if k < len(end_t) else math.inf
        sign = rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 1.0)
        side[(t >= t0) & (t < t1)] = sign
    talking = gaussian_filter1d((energy > 0.08).astype(np.float64), max(0.25 * fps, 1e-3), mode="nearest")
    roll = TILT_DEG * gaussian_filter1d(side, max(0.35 * fps, 1e-3), mode="nearest") * talking
    accent_sign = side[np.clip(peaks, 0, n - 1)] if len(peaks) else np.zeros(0)
    roll += TILT_ACCENT_DEG * _pulse(n, fps, times, accent_sign * np.clip(strength, 0, 1.3), 0.22)
    yaw = YAW_DEG * _sway(n, fps, rng, 1.0) * (0.4 + 0.6 * talking)
    for arr in (pitch, roll, yaw):
        arr += SWAY_DEG * _sway(n, fps, rng, 0.8)
    dyn = max(0.0, float(dynamic_scale))
    cap = min(CAP_DEG * dyn, 2.0 * CAP_DEG)

    def limited(deg: np.ndarray) -> np.ndarray:
        return (cap * np.tanh(dyn * deg / max(cap, 1e-6)) * rad).astype(np.float32) if cap > 0 else \
            np.zeros(n, np.float32)

    roll_r, yaw_r, pitch_r = limited(roll), limited(yaw), limited(pitch)
    shift = np.stack([np.zeros(n), NOD_SHIFT * face_height * pitch_r], -1).astype(np.float32)
    return HeadMotion(roll_r, yaw_r, pitch_r, shift)
