"""Turn a portrait's rest landmarks plus speech, emotion and a seed into per-frame landmarks.

The face is moved by a small set of linear "action" fields (one 468x2 pixel
displacement per action, computed once from the rest face): jaw drop, lip spread,
lip rounding, lip press, the emotion's action units (emotions.py: brows, lids, cheeks,
upper lip, nose wings). A frame is the rest mesh plus a weighted
sum of those fields, followed by a small head movement (roll, parallax yaw/pitch from
the mesh depth, translation, scale). The weights per frame come from the MouthTrack,
the emotion, the voice (head motion: prosody.py) and seeded processes (blinks and gaze:
eyes.py, drawn by the warp rather than by moving the lids' points), so the same inputs
and seed always give the same frames.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import emotions as _emo
from . import face as F
from .api import EMOTIONS, MouthTrack
from .eyes import EyeTrack, eye_motion
from .prosody import head_motion as head_motion_from_voice

# The mouth, in face heights (FaceMesh point 10 to 152). Read speech opens the inner lips
# by 0.06-0.09 of the face height at most; a full opening here (open = 1, which only the
# loudest open vowels approach) parts them by JAW_DROP + LIP_OWN_LOWER + LIP_OWN_UPPER =
# 0.09, mostly by turning the jaw, so the chin follows the lower lip.
JAW_DROP = 0.085  # the lower lip's drop from the jaw's turn alone
JAW_PIVOT_DEPTH = 1.0  # the hinge lies this far behind the face outline's sides
LIP_OWN_LOWER = 0.004  # the lips part a little further than the jaw drops
LIP_OWN_UPPER = 0.012
FV_UPPER_LIFT = 0.008  # F/V: upper lip lifts to bare the teeth edges
FV_LIP_BELOW_UPPER = 0.002  # ... and the lower lip's inner edge comes up to just below it
FV_JAW = 0.15  # the jaw's opening during F/V
PRESS_SEAM = 0.6  # where pressed lips meet, from the upper inner lip (0) to the lower (1)


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

    MOUTH = ("jaw", "spread", "round", "press", "fv")

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
        # lips pressed together must not cross when the head turns: each pair of inner
        # lip points takes the same depth for the parallax
        for a, b in zip(F.LIPS_INNER_UPPER, F.LIPS_INNER_LOWER):
            self.depth[[a, b]] = self.depth[[a, b]].mean()
        # the head turns about the top of the neck (behind the face, at the ear lobes'
        # level), so the chin travels little and the crown not too far
        self.pivot = self.frame.origin - 0.1 * self.frame.height * self.frame.ey
        self._bone_setup()
        builders = {
            "jaw": self._jaw,
            "spread": lambda: self._lip_width(+0.16, lift=-0.004, thin=0.003),
            "round": lambda: self._lip_width(-0.24, lift=0.0, pout=0.006, inner_gain=-0.1),
            "press": self._press,
            "fv": self._labiodental,
        }
        for name, build in builders.items():
            if only is None or name in only:
                self._add(name, build())
        if only is None:
            for name, duv in _emo.au_fields(self).items():
                self._add(name, duv)

    def shut_lips(self, jaw_rest: float) -> None:
        """Measure the lip closures (press, F/V) from where a jaw weight of `jaw_rest`
        leaves the lips (a portrait whose jaw is open rests shut), not from the portrait."""
        shut = np.array(self.rest, np.float64, copy=True)
        shut[:, :2] += jaw_rest * self.fields["jaw"]
        again = ActionFields(shut, only=("jaw", "press", "fv"))
        self.fields["press"] = again.fields["press"]
        self.fields["fv"] = again.fields["fv"]

    def gap_per_unit(self) -> float:
        """Face heights the inner lips part by per unit of the jaw action (at the middle)."""
        jaw = self.fields["jaw"]
        a, b = F.INNER_LIP_UPPER_MID, F.INNER_LIP_LOWER_MID
        return max(float((jaw[b] - jaw[a]) @ self.frame.ey) / self.frame.height, 1e-6)

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

    # -- the jaw and the lips ----------------------------------------------------------

    def _bone_setup(self) -> None:
        """The jaw's hinge: an axis through both temporomandibular joints, in 3D.

        The joints sit in front of the ears, deeper than the face outline at that level
        (FaceMesh points 234/93 and 454/323 lie on the cheek's silhouette), so the axis
        is those points pushed back by JAW_PIVOT_DEPTH of the face height. Opening the
        mouth turns the mandible about it: the chin, the lower lip and the lower teeth go
        down and back together, points nearer the ears less. Without depth (2D landmarks)
        every point gets the same drop.
        """
        rest = self.rest
        h = self.frame.height
        if rest.shape[1] > 2:
            p3 = rest[:, :3].astype(np.float64)
        else:
            p3 = np.column_stack([rest[:, :2], np.zeros(len(rest))]).astype(np.float64)
        right = p3[[234, 93]].mean(0)
        left = p3[[454, 323]].mean(0)
        axis = _unit(left - right)
        down = p3[F.CHIN] - p3[F.FOREHEAD]
        down = _unit(down - (down @ axis) * axis)
        back = np.cross(axis, down)
        if back[2] < 0:  # FaceMesh z grows away from the camera
            back = -back
        self._axis = axis
        self._pivot = (left + right) / 2 + JAW_PIVOT_DEPTH * h * back
        self._p3 = p3
        # scale: the lower lip's middle drops JAW_DROP face heights at full opening
        lip = self._bone_raw(p3[[F.INNER_LIP_LOWER_MID]])[0]
        drop = float(lip @ self.frame.ey)
        self._uniform = drop <= 1e-6 or rest.shape[1] <= 2
        self._bone_scale = JAW_DROP * h / (drop if not self._uniform else 1.0)
        # how far the face is turned (sine of the yaw), for drawing the teeth
        self.yaw_sin = float(np.clip(axis[2], -0.9, 0.9))

    def _bone_raw(self, p3: np.ndarray) -> np.ndarray:
        return np.cross(self._axis, p3 - self._pivot)[:, :2]

    def bone(self, p3: np.ndarray) -> np.ndarray:
        """Pixel displacement of points (N x 3, image x, y and FaceMesh z) fixed to the
        mandible, per unit of jaw opening."""
        p3 = np.asarray(p3, np.float64)
        if self._uniform:
            return np.tile(self.frame.ey * JAW_DROP * self.frame.height, (len(p3), 1))
        if p3.shape[1] < 3:
            p3 = np.column_stack([p3[:, :2], np.full(len(p3), float(np.median(self._p3[:, 2])))])
        return self._bone_raw(p3) * self._bone_scale

    def _mandible_weight(self) -> np.ndarray:
        """How much each mesh point rides the mandible: 1 on the middle of the lower lip,
        the chin and the jaw line below the mouth, 0 on the middle of the upper lip and
        above, half at the corners, which both lips approach (the opening is a lens: lips
        part in the middle, not at the corners); the cheeks beside the mouth stretch over
        a wider band."""
        f = self.f
        u, v = f[:, 0], f[:, 1]
        half = self.mouth_width / 2
        beside = _smoothstep((np.abs(u) - half) / 0.15)
        band = 0.03 + 0.1 * beside
        w = _smoothstep((v + 0.01) / band)
        for contour, lower in ((F.LIPS_OUTER_UPPER, False), (F.LIPS_INNER_UPPER, False),
                               (F.LIPS_OUTER_LOWER, True), (F.LIPS_INNER_LOWER, True)):
            for i in contour[1:-1]:
                t = min(1.0, abs(u[i]) / max(half, 1e-6))
                w[i] = 1.0 - 0.75 * t ** 2 if lower else 0.5 * t ** 3
        for i in F.MOUTH_CORNERS + F.INNER_CORNERS:
            w[i] = 0.5
        return w

    def _jaw(self) -> np.ndarray:
        """Full speech opening: the mandible turned (JAW_DROP at the lower lip) plus the
        lips' own parting, which tapers to the corners (a lens-shaped opening)."""
        f = self.f
        u = f[:, 0]
        half = self.mouth_width / 2
        bone = self.bone(self._p3)  # pixels
        out_px = bone * self._mandible_weight()[:, None]
        own = np.zeros_like(f)
        for contour, dv in ((F.LIPS_INNER_LOWER, LIP_OWN_LOWER), (F.LIPS_OUTER_LOWER, LIP_OWN_LOWER / 2),
                            (F.LIPS_INNER_UPPER, -LIP_OWN_UPPER), (F.LIPS_OUTER_UPPER, -LIP_OWN_UPPER / 2)):
            for i in contour[1:-1]:
                t = min(1.0, abs(u[i]) / max(half, 1e-6))
                own[i, 1] = dv * (1.0 - 0.7 * t * t)
        # the corners come a little inwards as the jaw drops
        for i in F.MOUTH_CORNERS + F.INNER_CORNERS:
            own[i, 0] = -np.sign(u[i]) * 0.006
        return out_px / self.frame.height @ np.stack([self.frame.ex, self.frame.ey], 1) + own

    def _lip_width(self, gain: float, lift: float, pout: float = 0.0, thin: float = 0.0,
                   inner_gain: float = 0.0) -> np.ndarray:
        """Horizontal scaling of the lips about the mouth centre (spread > 0, rounding < 0),
        fading above and below the lips and into the cheeks beyond the corners; `pout`
        thickens the lips outwards (rounding), `thin` stretches them thin (spreading), and
        `inner_gain` narrows the inner opening further than the outline (a round opening)."""
        f = self.f
        u, v = f[:, 0], f[:, 1]
        half = self.mouth_width / 2
        vert = np.exp(-(v / 0.09) ** 2)
        beyond = np.maximum(np.abs(u) - half, 0.0)
        horiz = np.exp(-(beyond / 0.1) ** 2)
        out = np.zeros_like(f)
        out[:, 0] = gain * np.clip(u, -1.3 * half, 1.3 * half) * vert * horiz
        corner_w = np.exp(-((np.abs(u) - half) ** 2 + v ** 2) / (2 * 0.05 ** 2))
        out[:, 1] += lift * corner_w
        mid = lambda i: 1.0 - min(1.0, abs(u[i]) / max(half, 1e-6)) ** 2  # type: ignore[operator]  # noqa: E731
        for i in F.LIPS_OUTER_UPPER[1:-1]:
            out[i, 1] += (-pout + thin) * mid(i)
        for i in F.LIPS_OUTER_LOWER[1:-1]:
            out[i, 1] += (pout - thin) * mid(i)
        if inner_gain:
            for i in F.LIPS_INNER_UPPER[1:-1] + F.LIPS_INNER_LOWER[1:-1]:
                out[i, 0] += inner_gain * u[i] * (abs(u[i]) / max(half, 1e-6))
        return out

    def _press(self) -> np.ndarray:
        f = self.f
        out = np.zeros_like(f)
        # inner lips meet a little below their midline (closes any gap the portrait has):
        # the upper lip comes down over the top of the teeth, whose edge FaceMesh tends
        # to take for the lip's
        for a, b in zip(F.LIPS_INNER_UPPER[1:-1], F.LIPS_INNER_LOWER[1:-1]):
            mid = f[a, 1] + PRESS_SEAM * (f[b, 1] - f[a, 1])
            out[a, 1] = mid - f[a, 1]
            out[b, 1] = mid - f[b, 1]
        # and roll inwards a little, which thins the visible lips
        for i in F.LIPS_OUTER_UPPER[2:-2]:
            out[i, 1] += 0.005
        for i in F.LIPS_OUTER_LOWER[2:-2]:
            out[i, 1] -= 0.005
        return out

    def _labiodental(self) -> np.ndarray:
        """F/V: the lower lip comes up under the upper teeth, the upper lip lifts a little
        to show their edges; the jaw stays nearly shut (FV_JAW of the opening, which this
        field already offsets so the lip lands where it should)."""
        f = self.f
        u = f[:, 0]
        half = self.mouth_width / 2
        out = np.zeros_like(f)
        jaw = self.fields.get("jaw")
        jaw_v = (jaw @ self.frame.ey / self.frame.height) if jaw is not None else np.zeros(len(f))
        for a, b in zip(F.LIPS_INNER_UPPER[1:-1], F.LIPS_INNER_LOWER[1:-1]):
            t = min(1.0, abs(u[a]) / max(half, 1e-6))
            lift = FV_UPPER_LIFT * (1.0 - 0.8 * t * t)
            out[a, 1] = -lift
            target = f[a, 1] + FV_LIP_BELOW_UPPER * (1.0 - t * t)
            out[b, 1] = target - f[b, 1] - FV_JAW * jaw_v[b]
        for i in F.LIPS_OUTER_UPPER[2:-2]:
            out[i, 1] -= FV_UPPER_LIFT / 2
        for i in F.LIPS_OUTER_LOWER[2:-2]:
            out[i, 1] -= 0.004 + FV_JAW * jaw_v[i]
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


# Emotion recipes (AU -> weight) live in emotions.py.
EMOTION_ACTIONS = _emo.EMOTION_ACTIONS


def emotion_intensity(emo_scale: float) -> float:
    """DICE-Talk's emo_scale (0..10, default 6) to action weight (6 -> 1.0)."""
    return float(np.clip(emo_scale, 0.0, 10.0)) / 6.0


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
    jaw_rest: float = 0.0  # jaw weight at rest: < 0 shuts a mouth the portrait shows open
    press_rest: float = 0.0  # lips brought together at rest (a portrait caught mid-word)
    eyes: Optional[EyeTrack] = None  # blinks and gaze (eyes.py draws them in the warp)

    def set_mouth(self, first: int, track: MouthTrack) -> None:
        """Drive the mouth of frames first.. from `track` (a span of the speech's track);
        frames past it keep what they had (the rest mouth until set)."""
        m = min(len(np.asarray(track.open)), self.n_frames - first)
        if m <= 0:
            return
        sl = slice(first, first + m)
        for name, w in mouth_weights(track, m, self.jaw_rest, self.press_rest, self.mouth_emotion).items():
            self.weights[name][sl] = w

    def head(self, i: int, pts: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Points (N x 2 pixels, with their depth as ActionFields.depth measures it) moved
        by frame i's head motion."""
        af = self.fields
        fr = af.frame
        pts = np.asarray(pts, np.float64)[:, :2]
        # parallax from the mesh depth gives small yaw and pitch without a 3D model
        pts = pts + np.outer(depth * float(self.yaw[i]), fr.ex) - np.outer(depth * float(self.pitch[i]), fr.ey)
        # roll and scale about the neck (below the chin), then shift
        c, s = math.cos(float(self.roll[i])), math.sin(float(self.roll[i]))
        rot = np.array([[c, -s], [s, c]]) * float(self.scale[i])
        return (pts - af.pivot) @ rot.T + af.pivot + self.shift[i]

    def head_affine(self, i: int) -> np.ndarray:
        """2x3 affine of frame i's head motion for points on the face's outline and beyond
        (no parallax): what the head's ring of hair and ears follows (render.Warper)."""
        c, s = math.cos(float(self.roll[i])), math.sin(float(self.roll[i]))
        rot = np.array([[c, -s], [s, c]]) * float(self.scale[i])
        pivot = self.fields.pivot
        return np.column_stack([rot, pivot - rot @ pivot + self.shift[i]])

    def eye_state(self, i: int) -> Optional[np.ndarray]:
        """Frame i's (lid closure, gaze across, gaze down) for render.Warper, or None."""
        return None if self.eyes is None else self.eyes.state(i)

    def teeth_transforms(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """2x3 affines from the portrait to frame i for what the skull carries (the upper
        teeth) and what the mandible carries (the lower teeth): least-squares fits over
        the lips' points, as fit_affine makes them."""
        src, depth, bone, fit = self._teeth_basis
        jaw = float(self.weights["jaw"][i])
        skull = self.head(i, src, depth)
        mandible = self.head(i, src + jaw * bone, depth)
        return (fit @ skull).T, (fit @ mandible).T

    @functools.cached_property
    def _teeth_basis(self) -> tuple:
        """What teeth_transforms needs of the portrait, the same in every frame: the lips'
        points, their depth, how they ride the jaw, and the least-squares solve over them
        (a frame's affine is this 3 x N matrix times the points' frame positions)."""
        af = self.fields
        anchors = af.rest[list(F.LIPS_ALL)]
        src = np.asarray(anchors[:, :2], np.float64)
        fit = np.linalg.pinv(np.column_stack([src, np.ones(len(src))]))
        return src, af.depth[list(F.LIPS_ALL)], af.bone(anchors), fit

    def points(self, i: int) -> np.ndarray:
        """468x2 float32 landmark positions (image pixels) of frame i."""
        af = self.fields
        pts = af.rest[:, :2].copy()
        for name, w in self.weights.items():
            c = float(w[i])
            if c != 0.0:
                pts += c * af.fields[name]
        return self.head(i, pts, af.depth).astype(np.float32)

def mouth_weights(track: MouthTrack, m: int, jaw_rest: float = 0.0, press_rest: float = 0.0,
                  emotion: tuple = (0.0, 0.0, 0.0)) -> dict[str, np.ndarray]:
    """Weights of the mouth actions for the first `m` frames of `track`.

    Closures win over opening and F/V; F/V holds the jaw nearly shut; `jaw_rest` (< 0
    shuts a jaw the picture shows open) is where the jaw starts from, and `press_rest`
    keeps the lips together at rest until speech parts them; `emotion` is the emotion's
    constant (jaw, spread, press)."""
    press = np.clip(np.asarray(track.press, np.float32)[:m], 0, 1)
    fv = (np.clip(np.asarray(track.fv, np.float32)[:m], 0, 1) * (1.0 - press)
          if track.fv is not None else np.zeros(m, np.float32))
    opening = np.clip(np.asarray(track.open, np.float32)[:m], 0, 1) * (1.0 - press)
    opening = opening * (1.0 - fv) + FV_JAW * fv
    width = np.clip(np.asarray(track.width, np.float32)[:m], -1, 1)
    jaw, spread, pressed = emotion
    # (a breath or a room's hiss opens the mouth by a few hundredths: still at rest)
    rest_press = press_rest * (1.0 - _smoothstep((opening - 0.05) / 0.3)) * (1.0 - fv)
    return {
        # an emotion's jaw (surprise) widens what speech opens, never a silent mouth
        "jaw": (jaw_rest + opening + jaw * opening * (1.0 - opening)).astype(np.float32),
        "spread": (np.maximum(width, 0.0) + spread * (1.0 - np.abs(width))).astype(np.float32),
        "round": np.maximum(-width, 0.0).astype(np.float32),
        # each of press and F/V closes the lips fully at 1: together they must not push
        # the lips across each other (the warp would fold there and show what was between)
        "press": np.clip(press + rest_press + pressed * (1.0 - opening), 0.0, 1.0 - fv).astype(np.float32),
        "fv": fv.astype(np.float32),
    }


# The actions speech drives; set by MotionPlan.set_mouth.
_MOUTH_ACTIONS = ActionFields.MOUTH


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 affine taking the points `src` to `dst` (N x 2 each)."""
    a = np.column_stack([src, np.ones(len(src))])
    sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
    return sol.T.astype(np.float64)


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
    gaze: bool = True,
    head_motion: bool = True,
    voice_pitch: Optional[np.ndarray] = None,
    fields: Optional[ActionFields] = None,
    jaw_rest: float = 0.0,
    press_rest: float = 0.0,
) -> MotionPlan:
    """Plan every frame's face: mouth from `track`, constant emotion, seeded blinks and gaze,
    head motion from the voice (`track.energy`, and `voice_pitch`: semitones per frame, NaN
    unvoiced, see prosody.pitch_per_frame).

    `jaw_rest` < 0 shuts a jaw the portrait shows open by that much of a full opening, and
    `press_rest` brings its lips together at rest (see mouth.MouthInterior)."""
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
    own = _emo.own_expression(af, jaw_rest) if k > 0 else {}
    emo = _emo.emotion_weights(emotion, k, own)
    weights: dict[str, np.ndarray] = {name: np.zeros(n, np.float32) for name in _MOUTH_ACTIONS}

    def put(name, arr):
        weights[name] = weights.get(name, np.zeros(n, np.float32)) + np.asarray(arr, np.float32)

    # speech and an emotion's jaw combine without exceeding full opening
    mouth_emotion = (min(emo.pop("jaw", 0.0), 0.6), emo.pop("spread", 0.0), emo.pop("press", 0.0))
    close = emo.pop("close", 0.0)

    eye_track = eye_motion(energy, fps, seed, blinks=blinks, gaze=gaze)
    # the emotion's AUs summed into one field held through the clip, so a frame costs the
    # same whatever the emotion (the lids' AUs too: a blink covers the eye in the warp,
    # eyes.py, however the lids are set)
    if emo:
        af.fields["emotion"] = sum((w * af.fields[a] for a, w in emo.items()), np.zeros_like(af.fields["jaw"]))
        put("emotion", np.ones(n, np.float32))

    if head_motion and n > 0 and dynamic_scale > 0:
        # the head turns by moving the mesh's points with their depth (parallax), which
        # holds near frontal; a face already turned away (its far side foreshortened)
        # moves less
        frontal = float(np.clip(1.0 - 2.0 * abs(af.yaw_sin), 0.3, 1.0))
        head = head_motion_from_voice(energy, None if voice_pitch is None else per_frame(voice_pitch, np.nan), fps, seed,
                                      dynamic_scale * frontal, af.frame.height)
        roll, yaw, pitch, shift = head.roll, head.yaw, head.pitch, head.shift
        scale = np.ones(n, np.float32)
    else:
        roll = yaw = pitch = np.zeros(n, np.float32)
        shift = np.zeros((n, 2), np.float32)
        scale = np.ones(n, np.float32)
    if jaw_rest:
        af.shut_lips(jaw_rest)
    if close:  # a smile taken out closes the lips it held apart
        af.fields["press"] = _emo.drape_lips(af.fields["press"])
        press_rest = max(press_rest, close)
    plan = MotionPlan(af, weights, roll.astype(np.float32), yaw.astype(np.float32),
                      pitch.astype(np.float32), np.asarray(shift, np.float32),
                      np.asarray(scale, np.float32), n, mouth_emotion, float(jaw_rest), float(press_rest))
    fv = per_frame(track.fv) if track.fv is not None else None
    plan.set_mouth(0, MouthTrack(per_frame(track.open), per_frame(track.width), per_frame(track.press),
                                 energy, fps, fv))
    plan.eyes = eye_track
    return plan


def inner_gap(pts: np.ndarray, frame: FaceFrame) -> float:
    """Pixels between the inner lips along the face's vertical (median of the middle pairs)."""
    up = np.asarray(pts)[list(F.LIPS_INNER_UPPER[3:8]), :2]
    lo = np.asarray(pts)[list(F.LIPS_INNER_LOWER[3:8]), :2]
    return float(np.median((lo - up) @ frame.ey))


def lip_edges_inwards(pts: np.ndarray, frame: FaceFrame, cap: float = 0.025) -> np.ndarray:
    """The landmarks with the inner lip contours moved a little into the lips.

    FaceMesh puts the inner contours of an open mouth on the last dark pixels of the
    interior, so the shaded rim of each lip still belongs to the opening; warping from
    these adjusted points squeezes that rim away together with the opening when the
    mouth is shut. At most `cap` of the face height; closed mouths are returned unchanged.
    """
    pts = np.array(pts, np.float32, copy=True)
    gap = inner_gap(pts, frame)
    if gap <= 0.01 * frame.height:
        return pts
    ey = frame.ey.astype(np.float32)
    for inner, outer in ((F.LIPS_INNER_UPPER, F.LIPS_OUTER_UPPER), (F.LIPS_INNER_LOWER, F.LIPS_OUTER_LOWER)):
        for i, o in zip(inner[2:-2], outer[2:-2]):
            thick = abs(float((pts[o, :2] - pts[i, :2]) @ ey))
            step = min(0.5 * thick, 0.3 * gap, cap * frame.height)
            sign = -1.0 if inner is F.LIPS_INNER_UPPER else 1.0
            pts[i, :2] += sign * step * ey
    return pts
