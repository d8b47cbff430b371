"""Emotions as facial action units (FACS): the fields, the recipes, and the portrait's own expression.

Each action unit (AU) is a displacement field of the rest mesh in face units (see
motion.FaceFrame), built from ActionFields' handles; each emotion is a recipe of AU
weights. Before an emotion is applied, the portrait's own expression is estimated from
its landmarks (how far its mouth corners sit above or below the lips' seam) and taken
out, so a smiling portrait can look sad or angry. Only the mouth actions that speech
drives may open the lips: every AU here leaves the inner lips where they were, so with
no speech the mouth stays closed whatever the emotion. The brow and lid AUs are smooth
in the band between brow and eye, where glasses frames sit, so the frames move as a
whole and do not bend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import face as F
from .api import EMOTIONS

if TYPE_CHECKING:
    from .motion import ActionFields

# Emotion recipes: AU -> weight at intensity 1 (emo_scale 6, DICE-Talk's default).
# "spread", "press" and "jaw" are mouth actions that speech also drives (see
# motion.mouth_weights): spread and press give way while the mouth opens, and jaw only
# adds to an opening speech makes (it never opens a silent mouth).
EMOTION_ACTIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU6": 1.0, "AU12": 1.0, "spread": 0.3},
    "sad": {"AU1": 1.3, "AU4": 0.3, "AU15": 1.0, "AU17": 0.5, "AU43": 0.3},
    "angry": {"AU4": 1.0, "AU5": 0.35, "AU7": 1.0, "AU23": 1.0, "press": 0.5},
    "disgusted": {"AU9": 1.2, "AU10": 1.2, "AU4": 0.4, "AU7": 0.4, "AU15": 0.3},
    "fear": {"AU1": 1.4, "AU2": 0.8, "AU4": 0.3, "AU5": 1.0, "AU20": 1.0},
    "contempt": {"AU14": 1.0, "AU7": 0.2},
    "surprised": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "jaw": 0.3},
}
assert set(EMOTION_ACTIONS) == set(EMOTIONS)

# AUs of the lids: they give way to a blink (weighted by 1 - blink).
LID_AUS = ("AU5", "AU7", "AU43")
MOUTH_ACTIONS = ("jaw", "spread", "press")

# Where a neutral face's mouth corners sit above the inner lips' seam (face heights), and
# how far one unit of AU12 / AU15 moves them (the corner handles' own displacement).
NEUTRAL_CORNER_LIFT = -0.005
AU12_LIFT = 0.040
AU15_DROP = 0.040
# A resting mouth's width (face heights), and how much one unit of the lip spread action
# (motion.ActionFields' "spread": 16 % wider) adds to it.
NEUTRAL_MOUTH_WIDTH = 0.37
# Up to this sine of the head's yaw the own expression is read in full, none from twice it.
TRUSTED_YAW_SIN = 0.2
SPREAD_WIDTH = 0.16 * NEUTRAL_MOUTH_WIDTH


def au_fields(af: ActionFields) -> dict[str, np.ndarray]:
    """Every AU's displacement field of the rest face `af`, in face units (468 x 2)."""
    n = len(af.f)
    z = np.zeros((n, 2))
    return {
        # brows: inner raise, outer raise, lower and draw together
        "AU1": af._brows(outer=(0.0, -0.006), inner=(0.005, -0.045)),
        "AU2": af._brows(outer=(0.0, -0.050), inner=(0.0, -0.012)),
        "AU4": af._brows(outer=(0.004, 0.012), inner=(0.030, 0.034)),
        # lids: upper raise, cheek raise (with the lower lid), tighten, droop
        "AU5": af._lids(upper=-0.011, lower=0.002),
        "AU6": af._handles(F.RIGHT_CHEEK + F.LEFT_CHEEK, [(0.0, -0.016)] * (2 * len(F.RIGHT_CHEEK)), 0.05)
        + af._lids(upper=0.0, lower=-0.004),
        "AU7": af._lids(upper=0.003, lower=-0.008),
        "AU43": af._lids(upper=0.008, lower=0.0),
        # nose and upper lip
        "AU9": _nose_wrinkle(af),
        "AU10": _upper_lip_raise(af),
        # mouth corners and lips
        "AU12": af._corners(du=0.015, dv=-AU12_LIFT, sigma=0.07),
        "AU14": af._corners(du=0.022, dv=-0.040, sigma=0.055, sides=(1,)),
        "AU15": af._corners(du=-0.004, dv=AU15_DROP, sigma=0.07),
        "AU17": _chin_raise(af),
        "AU20": af._corners(du=0.032, dv=0.008, sigma=0.08),
        "AU23": _lip_tighten(af),
    } if n else {"AU1": z}


def _lip_points(contours, mid_only: bool = True):
    for c in contours:
        yield from (c[1:-1] if mid_only else c)


def _nose_wrinkle(af: ActionFields) -> np.ndarray:
    """AU9: the nose wings pulled up and a little in, the skin beside the nose with them,
    the upper lip following part of the way (its lower edge with it: the lips stay as
    they were against each other)."""
    f = af.f
    idx = [F.NOSE_WINGS[0], F.NOSE_WINGS[1], F.NOSE_TIP, 98, 327, 49, 279]
    disps = [(0.005, -0.022), (-0.005, -0.022), (0.0, -0.008), (0.004, -0.020), (-0.004, -0.020),
             (0.005, -0.016), (-0.005, -0.016)]
    out = af._handles(idx, disps, 0.035)
    # nothing above the lower lids moves (the eyes and glasses stay)
    below_eyes = np.clip((f[:, 1] - f[F.RIGHT_EYE_BOTTOM, 1] - 0.03) / 0.06, 0.0, 1.0)
    out *= below_eyes[:, None]
    return out + 0.4 * _upper_lip_raise(af)


def _upper_lip_raise(af: ActionFields) -> np.ndarray:
    """AU10: the upper lip raised, most in the middle. Its inner edge and the lower lip
    rise by the same amount, so lips that were together stay together (the mouth does
    not open in silence); the outline rises further, which thickens the visible upper
    lip and shortens the skin between it and the nose, as the real action does."""
    f = af.f
    u = f[:, 0]
    half = af.mouth_width / 2
    out = np.zeros_like(f)
    inner_rise = -0.013
    for contour, rise in ((F.LIPS_OUTER_UPPER, -0.026), (F.LIPS_INNER_UPPER, inner_rise),
                          (F.LIPS_INNER_LOWER, inner_rise), (F.LIPS_OUTER_LOWER, 0.6 * inner_rise)):
        for i in contour:
            t = min(1.0, abs(u[i]) / max(half, 1e-6))
            out[i, 1] = rise * (1.0 - 0.6 * t * t)
    lips = list(F.LIPS_ALL)
    spread = af._handles(lips, out[lips], 0.04)
    # the skin between the lip and the nose follows the lip, the nose itself stays
    below_nose = np.clip((f[:, 1] - f[F.NOSE_TIP, 1]) / 0.05, 0.0, 1.0)
    spread *= below_nose[:, None]
    spread[lips] = out[lips]
    return spread


def _chin_raise(af: ActionFields) -> np.ndarray:
    """AU17: the chin boss pushes the lower lip up against the upper one (a pout of
    sadness); both lips rise together, so they stay closed."""
    f = af.f
    idx = list(F.LIPS_OUTER_LOWER[2:-2]) + [F.CHIN, 199, 200, 18]
    disps = [(0.0, -0.006)] * (len(F.LIPS_OUTER_LOWER) - 4) + [(0.0, -0.004), (0.0, -0.010), (0.0, -0.010),
                                                                 (0.0, -0.008)]
    out = af._handles(idx, disps, 0.04)
    below_mouth = np.clip((f[:, 1] - 0.01) / 0.03, 0.0, 1.0)
    return out * below_mouth[:, None]


def _lip_tighten(af: ActionFields) -> np.ndarray:
    """AU23: the lips narrowed and thinned (their outlines drawn towards the seam), the
    inner edges staying where they meet."""
    f = af.f
    u = f[:, 0]
    half = af.mouth_width / 2
    out = np.zeros_like(f)
    for contour, dv in ((F.LIPS_OUTER_UPPER, 0.006), (F.LIPS_OUTER_LOWER, -0.007)):
        for i in contour[1:-1]:
            t = min(1.0, abs(u[i]) / max(half, 1e-6))
            out[i, 1] = dv * (1.0 - t * t)
    lips = list(F.LIPS_ALL)
    for i in lips:
        out[i, 0] -= 0.05 * u[i]  # narrower, about the middle
    spread = af._handles(lips, out[lips], 0.03)
    spread[lips] = out[lips]
    return spread


def own_expression(af: ActionFields, jaw_rest: float = 0.0) -> dict[str, float]:
    """The portrait's own AUs, estimated from its rest mesh (with the jaw where it rests).

    A smile lifts the mouth corners above the seam of the lips (AU12, with the cheeks,
    AU6) and, broad, widens the mouth (the lip spread); a down-turned mouth drops them
    below it (AU15). Measured with the mouth shut
    as the engine rests it, since an open mouth moves the seam."""
    f = af.f.copy()
    if jaw_rest and "jaw" in af.fields:
        f += jaw_rest * af.frame.to_face(af.fields["jaw"] + af.frame.origin)
    seam = (f[F.INNER_LIP_UPPER_MID, 1] + f[F.INNER_LIP_LOWER_MID, 1]) / 2.0
    corners = (f[F.MOUTH_CORNERS[0], 1] + f[F.MOUTH_CORNERS[1], 1]) / 2.0
    lift = float(seam - corners) - NEUTRAL_CORNER_LIFT  # face heights, up = positive
    # a turned face's corners are read through its turn (the far one foreshortened, the
    # lips' curve seen from the side): trust the reading less, and undo less of it
    lift *= float(np.clip(1.0 - (abs(af.yaw_sin) - TRUSTED_YAW_SIN) / TRUSTED_YAW_SIN, 0.0, 1.0))
    own: dict[str, float] = {}
    if lift > 0:
        own["AU12"] = min(lift / AU12_LIFT, 1.5)
        own["AU6"] = 0.6 * own["AU12"]
        # a broad smile also stretches the mouth wider than a resting one
        wide = (af.mouth_width - NEUTRAL_MOUTH_WIDTH) / SPREAD_WIDTH
        if wide > 0:
            own["spread"] = min(wide, 1.0) * min(own["AU12"], 1.0)
    elif lift < 0:
        own["AU15"] = min(-lift / AU15_DROP, 1.5)
    return own


def emotion_weights(emotion: str, intensity: float, own: dict[str, float]) -> dict[str, float]:
    """AU (and mouth action) weights for `emotion` at `intensity` (1 = DICE-Talk's
    default), the portrait's `own` AUs taken out first.

    The neutralisation grows with the intensity up to 1 (emo_scale 0 changes nothing, so
    the portrait keeps its own face); an AU the emotion itself raises keeps at least half
    of its own weight beyond the portrait's (a smiling portrait asked to be happy smiles
    more, not less)."""
    if emotion not in EMOTION_ACTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    k = max(float(intensity), 0.0)
    undo = min(k, 1.0)
    target = {name: k * w for name, w in EMOTION_ACTIONS[emotion].items()}
    out = dict(target)
    for name, w in own.items():
        t = target.get(name, 0.0)
        out[name] = max(t - undo * w, 0.5 * t) if t > 0 else t - undo * w
    if target.get("AU12", 0.0) <= 0 and own.get("AU12", 0.0) > 0:
        # lips a smile held apart close (the press at rest), fully once it is a clear smile
        out["close"] = undo * float(np.clip((own["AU12"] - 0.3) / 0.4, 0.0, 1.0))
    return {name: w for name, w in out.items() if w}


def drape_lips(press: np.ndarray) -> np.ndarray:
    """The lip press field (pixels) with each lip's outline following half of its inner
    edge's travel: lips closed over teeth that a smile showed roll down (and up) as a
    whole instead of one thin lip stretching over the gap."""
    out = np.array(press, copy=True)
    for inner, outer in ((F.LIPS_INNER_UPPER, F.LIPS_OUTER_UPPER), (F.LIPS_INNER_LOWER, F.LIPS_OUTER_LOWER)):
        for i, o in zip(inner[1:-1], outer[1:-1]):
            out[o] = out[o] + 0.5 * press[i]
    return out
