"""Turn a portrait's rest landmarks plus speech, emotion and a seed into per-frame landmarks.

The face is moved by a small set of linear "action" fields (one 468x2 pixel
displacement per action, computed once from the rest face): jaw drop, lip spread,
lip rounding, lip press, the emotion actions (mouth corners, cheeks, brows, lids,
upper lip, nose wings), lid raise and blink. A frame is the rest mesh plus a weighted
sum of those fields, followed by a small head movement (roll, parallax yaw/pitch from
the mesh depth, translation, scale). The weights per frame come from the MouthTrack,
the emotion and seeded random processes (blinks, head motion), so the same inputs and
seed always give the same frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import face as F
from .api import EMOTIONS, MouthTrack

# Head motion amplitudes (one standard deviation at full energy, dynamic_scale 1).
# Kept small: the face must stay the portrait's (identity is judged by SSIM against it).
_ROLL_DEG = 0.45
_YAW_DEG = 0.9
_PITCH_DEG = 0.7
_SHIFT = 0.003  # of the face height
_SCALE = 0.0012
_HEAD_SMOOTH_S = 0.6


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else v


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class FaceFrame:
    """A face-aligned coordinate frame: origin at the mouth centre, unit = face height.

    `ex` points from the subject's right eye to the left (image left to right on a
    frontal face), `ey` down the face.
    """

    origin: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    height: float

    @classmethod
    def from_landmarks(cls, pts: np.ndarray) -> "FaceFrame":
        xy = pts[:, :2].astype(np.float64)
        ex = _unit(xy[F.LEFT_EYE_CORNERS[0]] - xy[F.RIGHT_EYE_CORNERS[0]])
        ey = np.array([-ex[1], ex[0]])
        origin = (xy[F.MOUTH_CORNERS[0]] + xy[F.MOUTH_CORNERS[1]]) / 2.0
        height = abs(float((xy[F.CHIN] - xy[F.FOREHEAD]) @ ey))
        return cls(origin, ex, ey, max(height, 1.0))

    def to_face(self, xy: np.ndarray) -> np.ndarray:
        d = xy[..., :2] - self.origin
        return np.stack([d @ self.ex, d @ self.ey], -1) / self.height

    def to_pixels(self, duv: np.ndarray) -> np.ndarray:
        """Face-unit displacements (u right, v down) to pixel displacements."""
        return (duv[..., :1] * self.ex + duv[..., 1:2] * self.ey) * self.height


class ActionFields:
    """The linear displacement fields of one rest face, in pixels (each 468x2 float32)."""

    MOUTH = ("jaw", "spread", "round", "press")

    def __init__(self, rest: np.ndarray, only: Optional[tuple] = None):
        rest = np.asarray(rest, np.float64)
        self.rest = rest
        self.frame = FaceFrame.from_landmarks(rest)
        self.f = self.frame.to_face(rest)  # 468x2 face coordinates
        f = self.f
        self.mouth_width = float(np.linalg.norm(f[F.MOUTH_CORNERS[1]] - f[F.MOUTH_CORNERS[0]]))
        self.fields: dict[str, np.ndarray] = {}
        # depth relative to the face outline (FaceMesh z; 0 when only x, y are known)
        self.depth = (rest[:, 2] - float(np.median(rest[list(F.FACE_OVAL), 2]))
                      if rest.shape[1] > 2 else np.zeros(len(rest)))
        self.pivot = rest[F.CHIN, :2] + 0.25 * self.frame.height * self.frame.ey
        builders = {
            "jaw": self._jaw,
            "spread": lambda: self._lip_width(+0.085, lift=-0.004),
            "round": lambda: self._lip_width(-0.16, lift=0.0, pout=0.006),
            "press": self._press,
            "blink": self._blink,
            "lid_raise": lambda: self._lids(upper=-0.012, lower=0.004),
            "lid_tight": lambda: self._lids(upper=0.004, lower=-0.007),
            # emotion actions
            "corner_up": lambda: self._corners(du=0.015, dv=-0.040, sigma=0.07),
            "corner_down": lambda: self._corners(du=-0.004, dv=0.030, sigma=0.07) + self._handles(
                [F.OUTER_LIP_LOWER_MID, F.INNER_LIP_LOWER_MID], [(0, -0.006)] * 2, 0.05),
            "corner_stretch": lambda: self._corners(du=0.022, dv=0.010, sigma=0.08),
            "smirk_left": lambda: self._corners(du=0.014, dv=-0.025, sigma=0.06, sides=(1,)),
            "cheek_raise": lambda: self._handles(F.RIGHT_CHEEK + F.LEFT_CHEEK,
                                                 [(0.0, -0.014)] * (2 * len(F.RIGHT_CHEEK)), 0.05),
            "brow_raise": lambda: self._brows(outer=(0, -0.045), inner=(0, -0.045)),
            "brow_inner_raise": lambda: self._brows(outer=(0, 0.0), inner=(0.004, -0.028)),
            "brow_lower": lambda: self._brows(outer=(0, 0.012), inner=(0.012, 0.032)),
            "upper_lip_raise": self._upper_lip_raise,
        }
        for name, build in builders.items():
            if only is None or name in only:
                self._add(name, build())

    def _add(self, name: str, duv: np.ndarray) -> None:
        self.fields[name] = self.frame.to_pixels(duv).astype(np.float32)

    # -- building blocks (all in face units) -----------------------------------------

    def _handles(self, idx, disps, sigma, mask=None) -> np.ndarray:
        """Gaussian spread of handle displacements: each vertex takes the weighted mean of
        the handles' displacements, scaled by its strongest handle weight (handles move
        exactly by their own displacement)."""
        idx = list(idx)
        d = np.asarray(disps, np.float64)
        dist2 = ((self.f[:, None, :] - self.f[None, idx, :]) ** 2).sum(-1)
        w = np.exp(-dist2 / (2 * sigma * sigma))
        w[w < 1e-3] = 0.0
        total = w.sum(1, keepdims=True)
        mean = (w @ d) / np.maximum(total, 1e-9)
        out = mean * w.max(1, keepdims=True)
        if mask is not None:
            out *= mask[:, None]
        return out

    def _jaw(self) -> np.ndarray:
        f = self.f
        u, v = f[:, 0], f[:, 1]
        half = self.mouth_width / 2
        # Jaw rotation: everything below the mouth line moves down; the side of the jaw
        # moves less the nearer it is to the hinge in front of the ears.
        below = _smoothstep((v + 0.01) / 0.07)
        side = 1.0 - 0.6 * _smoothstep((np.abs(u) - half * 1.1) / 0.25)
        w = below * side
        out = np.zeros_like(f)
        out[:, 1] = 0.07 * w
        upper = set(F.LIPS_OUTER_UPPER + F.LIPS_INNER_UPPER)
        lower = set(F.LIPS_OUTER_LOWER + F.LIPS_INNER_LOWER)
        for i in upper | lower:
            out[i] = 0.0
        for i in lower:
            out[i, 1] = 0.07
        # lips part more than the jaw drops: the lower lip drops further, the upper lifts
        for i in F.LIPS_INNER_LOWER[1:-1]:
            out[i, 1] += 0.022
        for i in F.LIPS_OUTER_LOWER[1:-1]:
            out[i, 1] += 0.010
        for i in F.LIPS_INNER_UPPER[1:-1]:
            out[i, 1] -= 0.014
        for i in F.LIPS_OUTER_UPPER[1:-1]:
            out[i, 1] -= 0.005
        # taper the lip openings towards the corners so the opening is lens-shaped
        for contour in (F.LIPS_INNER_UPPER, F.LIPS_INNER_LOWER, F.LIPS_OUTER_UPPER, F.LIPS_OUTER_LOWER):
            for i in contour[1:-1]:
                t = min(1.0, abs(u[i]) / max(half, 1e-6))
                lip = out[i, 1] - (0.07 if i in lower else 0.0)
                out[i, 1] -= lip * (t ** 2) * 0.6
        # the corners go half way down and a little inwards
        for i in F.MOUTH_CORNERS + F.INNER_CORNERS:
            out[i] = (-np.sign(u[i]) * 0.008, 0.035)
        return out

    def _lip_width(self, gain: float, lift: float, pout: float = 0.0) -> np.ndarray:
        f = self.f
        u, v = f[:, 0], f[:, 1]
        half = self.mouth_width / 2
        # horizontal scaling about the mouth centre, fading above/below the lips and
        # into the cheeks beyond the corners
        vert = np.exp(-(v / 0.09) ** 2)
        beyond = np.maximum(np.abs(u) - half, 0.0)
        horiz = np.exp(-(beyond / 0.1) ** 2)
        out = np.zeros_like(f)
        out[:, 0] = gain * np.clip(u, -1.3 * half, 1.3 * half) * vert * horiz
        corner_w = np.exp(-((np.abs(u) - half) ** 2 + v ** 2) / (2 * 0.05 ** 2))
        out[:, 1] += lift * corner_w
        if pout:
            # rounded lips push outwards from the mouth centre, mostly vertically
            for i in F.LIPS_OUTER_UPPER[2:-2]:
                out[i, 1] -= pout
            for i in F.LIPS_OUTER_LOWER[2:-2]:
                out[i, 1] += pout
        return out

    def _press(self) -> np.ndarray:
        f = self.f
        out = np.zeros_like(f)
        # inner lips meet at their common midline (closes any gap the portrait has)
        for a, b in zip(F.LIPS_INNER_UPPER[1:-1], F.LIPS_INNER_LOWER[1:-1]):
            mid = (f[a, 1] + f[b, 1]) / 2
            out[a, 1] = mid - f[a, 1]
            out[b, 1] = mid - f[b, 1]
        # and roll inwards a little, which thins the visible lips
        for i in F.LIPS_OUTER_UPPER[2:-2]:
            out[i, 1] += 0.006
        for i in F.LIPS_OUTER_LOWER[2:-2]:
            out[i, 1] -= 0.006
        return out

    def _corners(self, du, dv, sigma, sides=(0, 1)) -> np.ndarray:
        idx, disps = [], []
        for side in sides:
            sign = -1.0 if side == 0 else 1.0  # 0: the subject's right corner, image left
            for i in (F.MOUTH_CORNERS[side], F.INNER_CORNERS[side]):
                idx.append(i)
                disps.append((sign * du, dv))
        return self._handles(idx, disps, sigma)

    def _eye_mask(self) -> np.ndarray:
        """1 well above the upper lids, 0 at and below them: keeps brow actions off the eyes."""
        v = self.f[:, 1]
        u = self.f[:, 0]
        top = np.where(u < 0, self.f[F.RIGHT_EYE_TOP, 1], self.f[F.LEFT_EYE_TOP, 1])
        return _smoothstep((top - v - 0.01) / 0.05)

    def _brows(self, outer, inner) -> np.ndarray:
        idx, disps = [], []
        for upper, lower, sign in ((F.RIGHT_BROW_UPPER, F.RIGHT_BROW_LOWER, 1.0),
                                   (F.LEFT_BROW_UPPER, F.LEFT_BROW_LOWER, -1.0)):
            n = len(upper)
            for k in range(n):
                t = k / (n - 1)  # 0 at the outer end, 1 at the inner end
                du = ((1 - t) * outer[0] + t * inner[0]) * sign  # + = towards the nose
                dv = (1 - t) * outer[1] + t * inner[1]
                for i in (upper[k], lower[k]):
                    idx.append(i)
                    disps.append((du, dv))
        return self._handles(idx, disps, 0.06, mask=self._eye_mask())

    def _eye_pairs(self):
        for up, lo, up_ring, lo_ring in (
            (F.RIGHT_EYE_UPPER, F.RIGHT_EYE_LOWER, F.RIGHT_EYE_UPPER_RING, F.RIGHT_EYE_LOWER_RING),
            (F.LEFT_EYE_UPPER, F.LEFT_EYE_LOWER, F.LEFT_EYE_UPPER_RING, F.LEFT_EYE_LOWER_RING),
        ):
            yield up[1:-1], lo[1:-1], up_ring, lo_ring

    def _nearest(self, i, among):
        return min(among, key=lambda j: float(np.sum((self.f[i] - self.f[j]) ** 2)))

    def _blink(self) -> np.ndarray:
        f = self.f
        out = np.zeros_like(f)
        for up, lo, up_ring, lo_ring in self._eye_pairs():
            for a, b in zip(up, lo):
                gap = f[b] - f[a]
                # the lids meet low in the eye: the upper lid does most of the travel
                out[a] = 0.82 * gap
                out[b] = -0.18 * gap
            # the skin just outside the lids follows part of the way
            for i in up_ring:
                out[i] = 0.45 * out[self._nearest(i, up)]
            for i in lo_ring:
                out[i] = 0.3 * out[self._nearest(i, lo)]
        return out

    def _lids(self, upper: float, lower: float) -> np.ndarray:
        f = self.f
        out = np.zeros_like(f)
        for up, lo, up_ring, lo_ring in self._eye_pairs():
            n = len(up)
            for k, (a, b) in enumerate(zip(up, lo)):
                t = math.sin(math.pi * (k + 1) / (n + 1))  # most in the middle of the lid
                out[a, 1] = upper * t
                out[b, 1] = lower * t
            for i in up_ring:
                out[i] = 0.6 * out[self._nearest(i, up)]
            for i in lo_ring:
                out[i] = 0.5 * out[self._nearest(i, lo)]
        return out

    def _upper_lip_raise(self) -> np.ndarray:
        idx = list(F.LIPS_OUTER_UPPER[2:-2]) + list(F.LIPS_INNER_UPPER[2:-2]) + list(F.NOSE_WINGS)
        disps = [(0, -0.018)] * (len(idx) - 2) + [(0, -0.012)] * 2
        below_nose = _smoothstep((self.f[:, 1] - self.f[F.NOSE_TIP, 1] + 0.02) / 0.03)
        return self._handles(idx, disps, 0.035, mask=np.maximum(below_nose, 0.3))


# Emotion recipes: action -> weight at intensity 1 (emo_scale 6, DICE-Talk's default).
EMOTION_ACTIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"corner_up": 1.0, "cheek_raise": 1.0, "lid_tight": 0.5, "spread": 0.3},
    "sad": {"corner_down": 1.0, "brow_inner_raise": 1.0, "lid_raise": -0.4},
    "surprised": {"brow_raise": 1.0, "lid_raise": 1.0, "jaw": 0.3},
    "angry": {"brow_lower": 1.0, "lid_tight": 1.0, "press": 0.5, "corner_down": 0.3},
    "disgusted": {"upper_lip_raise": 1.0, "brow_lower": 0.5, "lid_tight": 0.8, "corner_down": 0.4},
    "fear": {"brow_raise": 0.6, "brow_inner_raise": 0.8, "lid_raise": 1.0, "corner_stretch": 1.0,
             "jaw": 0.2},
    "contempt": {"smirk_left": 1.0, "lid_tight": 0.3},
}
assert set(EMOTION_ACTIONS) == set(EMOTIONS)


def emotion_intensity(emo_scale: float) -> float:
    """DICE-Talk's emo_scale (0..10, default 6) to action weight (6 -> 1.0)."""
    return float(np.clip(emo_scale, 0.0, 10.0)) / 6.0


def blink_curve(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """0..1 lid closure per frame: blinks every 2-6 s, each ~0.25 s (fast close, slower open)."""
    out = np.zeros(n_frames, np.float32)
    t = float(rng.uniform(0.6, 2.5))
    total = n_frames / fps
    close_s, hold_s, open_s = 0.08, 0.04, 0.15
    times = np.arange(n_frames) / fps
    while t < total:
        d = times - t
        closing = (d >= 0) & (d < close_s)
        out[closing] = np.maximum(out[closing], d[closing] / close_s)
        hold = (d >= close_s) & (d < close_s + hold_s)
        out[hold] = 1.0
        opening = (d >= close_s + hold_s) & (d < close_s + hold_s + open_s)
        out[opening] = np.maximum(out[opening], 1.0 - (d[opening] - close_s - hold_s) / open_s)
        # blink intervals are right-skewed around ~3.5 s; never closer than 1.5 s
        t += 1.5 + float(rng.gamma(2.0, 1.0))
    # a blink often lands between two video frames; soften so it shows as partial closure
    return np.clip(out, 0.0, 1.0) ** 0.8


def _smooth_noise(n: int, fps: float, rng: np.random.Generator, sigma_s: float) -> np.ndarray:
    """Unit-variance, smooth random signal (seeded white noise, Gaussian low-pass)."""
    from scipy.ndimage import gaussian_filter1d

    sigma = max(sigma_s * fps, 1e-3)
    pad = int(4 * sigma) + 1
    x = rng.standard_normal(n + 2 * pad)
    y = gaussian_filter1d(x, sigma, mode="nearest")[pad:pad + n]
    # theoretical std of Gaussian-filtered unit white noise: independent of clip length
    y = y * math.sqrt(2.0 * math.sqrt(math.pi) * sigma)
    # soft limit at ~2 sigma: no rare large excursion
    return (2.0 * np.tanh(y / 2.0)).astype(np.float32)


@dataclass
class MotionPlan:
    """Per-frame action weights and head pose; `points(i)` builds frame i's landmarks.

    Only small per-frame arrays are kept, so memory does not grow with the mesh per frame.
    """

    fields: ActionFields
    weights: dict  # action name -> (n_frames,) float32
    roll: np.ndarray  # radians
    yaw: np.ndarray
    pitch: np.ndarray
    shift: np.ndarray  # (n, 2) pixels
    scale: np.ndarray  # (n,) multiplicative
    n_frames: int
    mouth_emotion: tuple = (0.0, 0.0, 0.0)  # the emotion's constant jaw, spread and press

    def set_mouth(self, first: int, track: MouthTrack) -> None:
        """Drive the mouth of frames first.. from `track` (a span of the speech's track);
        frames past it keep what they had (closed at rest until set)."""
        m = min(len(np.asarray(track.open)), self.n_frames - first)
        if m <= 0:
            return
        press = np.clip(np.asarray(track.press, np.float32)[:m], 0, 1)
        opening = np.clip(np.asarray(track.open, np.float32)[:m], 0, 1) * (1.0 - press)
        width = np.clip(np.asarray(track.width, np.float32)[:m], -1, 1)
        jaw, spread, pressed = self.mouth_emotion
        sl = slice(first, first + m)
        w = self.weights
        w["jaw"][sl] = opening + jaw * (1.0 - opening)
        w["spread"][sl] = np.maximum(width, 0.0) + spread * (1.0 - np.abs(width))
        w["round"][sl] = np.maximum(-width, 0.0)
        w["press"][sl] = np.clip(press + pressed * (1.0 - opening), 0.0, 1.0)

    def points(self, i: int) -> np.ndarray:
        """468x2 float32 landmark positions (image pixels) of frame i."""
        af = self.fields
        pts = af.rest[:, :2].copy()
        for name, w in self.weights.items():
            c = float(w[i])
            if c != 0.0:
                pts += c * af.fields[name]
        fr = af.frame
        # parallax from the mesh depth gives small yaw and pitch without a 3D model
        z = af.depth
        pts += np.outer(z * float(self.yaw[i]), fr.ex) - np.outer(z * float(self.pitch[i]), fr.ey)
        # roll and scale about the neck (below the chin), then shift
        pivot = af.pivot
        c, s = math.cos(float(self.roll[i])), math.sin(float(self.roll[i]))
        rot = np.array([[c, -s], [s, c]]) * float(self.scale[i])
        pts = (pts - pivot) @ rot.T + pivot + self.shift[i]
        return pts.astype(np.float32)

    def mouth_open_px(self, i: int) -> float:
        """How far the inner lips are apart beyond the rest gap in frame i (pixels)."""
        af = self.fields
        f = af.fields
        w = self.weights
        a, b = F.INNER_LIP_UPPER_MID, F.INNER_LIP_LOWER_MID
        d = 0.0
        for name in w:
            d += float(w[name][i]) * float((f[name][b] - f[name][a]) @ af.frame.ey)
        return d


# The actions speech drives; set by MotionPlan.set_mouth.
_MOUTH_ACTIONS = ("jaw", "spread", "round", "press")


def plan_motion(
    rest: np.ndarray,
    track: MouthTrack,
    n_frames: int,
    *,
    emotion: str = "neutral",
    emo_scale: float = 0.0,
    seed: int = 0,
    dynamic_scale: float = 1.0,
    blinks: bool = True,
    head_motion: bool = True,
    fields: Optional[ActionFields] = None,
) -> MotionPlan:
    """Plan every frame's face: mouth from `track`, constant emotion, seeded blinks and head motion."""
    if emotion not in EMOTION_ACTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    af = fields or ActionFields(rest)
    fps = float(track.fps)
    n = int(n_frames)

    def per_frame(x, fill=0.0):
        a = np.asarray(x, np.float32).reshape(-1)[:n]
        if a.size < n:
            a = np.concatenate([a, np.full(n - a.size, fill, np.float32)])
        return a

    energy = np.clip(per_frame(track.energy), 0, 1)

    k = emotion_intensity(emo_scale)
    emo = {name: k * w for name, w in EMOTION_ACTIONS[emotion].items()}
    weights: dict[str, np.ndarray] = {name: np.zeros(n, np.float32) for name in _MOUTH_ACTIONS}

    def put(name, arr):
        weights[name] = weights.get(name, np.zeros(n, np.float32)) + np.asarray(arr, np.float32)

    # speech and a constant emotional jaw combine without exceeding full opening
    mouth_emotion = (min(emo.pop("jaw", 0.0), 0.6), emo.pop("spread", 0.0), emo.pop("press", 0.0))

    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x7A1C]))
    blink = blink_curve(n, fps, rng) if blinks else np.zeros(n, np.float32)
    lid_raise = emo.pop("lid_raise", 0.0)
    put("blink", blink)
    if lid_raise:
        put("lid_raise", lid_raise * (1.0 - blink))
    for name, w in emo.items():
        put(name, np.full(n, w, np.float32))

    if head_motion and n > 0 and dynamic_scale > 0:
        from scipy.ndimage import gaussian_filter1d

        e = gaussian_filter1d(energy, max(0.4 * fps, 1e-3), mode="nearest") if n > 1 else energy
        amp = float(dynamic_scale) * (0.3 + 0.7 * np.clip(e / max(float(e.max()), 0.3), 0, 1))
        noise = [_smooth_noise(n, fps, rng, _HEAD_SMOOTH_S) for _ in range(6)]
        roll = np.radians(_ROLL_DEG) * amp * noise[0]
        yaw = np.radians(_YAW_DEG) * amp * noise[1]
        pitch = np.radians(_PITCH_DEG) * amp * noise[2]
        shift = np.stack([noise[3], noise[4]], -1) * (_SHIFT * af.frame.height) * amp[:, None]
        scale = 1.0 + _SCALE * amp * noise[5]
    else:
        roll = yaw = pitch = np.zeros(n, np.float32)
        shift = np.zeros((n, 2), np.float32)
        scale = np.ones(n, np.float32)
    plan = MotionPlan(af, weights, roll.astype(np.float32), yaw.astype(np.float32),
                      pitch.astype(np.float32), np.asarray(shift, np.float32),
                      np.asarray(scale, np.float32), n, mouth_emotion)
    plan.set_mouth(0, MouthTrack(per_frame(track.open), per_frame(track.width), per_frame(track.press),
                                 energy, fps))
    return plan


def inner_gap(pts: np.ndarray, frame: FaceFrame) -> float:
    """Pixels between the inner lips along the face's vertical (median of the middle pairs)."""
    up = np.asarray(pts)[list(F.LIPS_INNER_UPPER[3:8]), :2]
    lo = np.asarray(pts)[list(F.LIPS_INNER_LOWER[3:8]), :2]
    return float(np.median((lo - up) @ frame.ey))


def close_mouth(pts: np.ndarray, fields: ActionFields) -> tuple:
    """Landmarks with the mouth shut, and the jaw weight that shut it.

    The jaw is raised by as much of the jaw action as the inner-lip gap holds, then any
    gap left (lips apart without the jaw) is closed by meeting at the midline. Used to
    take the original speech off a video frame before driving it from new audio.
    """
    pts = np.asarray(pts, np.float64)[:, :2]
    fr = fields.frame
    jaw = fields.fields["jaw"]
    a, b = F.INNER_LIP_UPPER_MID, F.INNER_LIP_LOWER_MID
    per_unit = float((jaw[b] - jaw[a]) @ fr.ey)
    gap = inner_gap(pts, fr)
    # a hair of gap is just FaceMesh noise on a closed mouth
    o_src = max(0.0, gap - 0.004 * fr.height) / max(per_unit, 1e-6)
    o_src = min(o_src, 1.5)
    closed = pts - o_src * jaw
    for u, l in zip(F.LIPS_INNER_UPPER[1:-1], F.LIPS_INNER_LOWER[1:-1]):
        du = float((closed[l] - closed[u]) @ fr.ey)
        if du > 0:
            closed[u] += 0.5 * du * fr.ey
            closed[l] -= 0.5 * du * fr.ey
    return closed.astype(np.float32), o_src


def lip_edges_inwards(pts: np.ndarray, frame: FaceFrame) -> np.ndarray:
    """The landmarks with the inner lip contours moved a little into the lips.

    FaceMesh puts the inner contours of an open mouth on the last dark pixels of the
    interior, so the shaded rim of each lip still belongs to the opening; warping from
    these adjusted points squeezes that rim away together with the opening when the
    mouth is shut. Closed mouths are returned unchanged.
    """
    pts = np.array(pts, np.float32, copy=True)
    gap = inner_gap(pts, frame)
    if gap <= 0.01 * frame.height:
        return pts
    ey = frame.ey.astype(np.float32)
    for inner, outer in ((F.LIPS_INNER_UPPER, F.LIPS_OUTER_UPPER), (F.LIPS_INNER_LOWER, F.LIPS_OUTER_LOWER)):
        for i, o in zip(inner[2:-2], outer[2:-2]):
            thick = abs(float((pts[o, :2] - pts[i, :2]) @ ey))
            step = min(0.3 * thick, 0.3 * gap, 0.025 * frame.height)
            sign = -1.0 if inner is F.LIPS_INNER_UPPER else 1.0
            pts[i, :2] += sign * step * ey
    return pts
