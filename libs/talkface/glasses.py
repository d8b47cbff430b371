"""Glasses on a portrait: find them, and keep their frames rigid under the emotion's brow and lid actions.

Found by the frame's bridge: between the eyes, at the level of their inner corners,
skin is smooth while a bridge is a sharp horizontal bar; the lower rims under the eyes
make the same kind of edge. Where glasses are worn, every brow and lid action is
replaced, over the band that holds the frames (brows to cheekbones, temple to temple),
by the one affine motion that fits it best: straight rims stay straight and the frames
move, tilt or stretch as one piece instead of bending round the brows. The lids keep
their own motion inside the lenses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from . import face as F

if TYPE_CHECKING:
    from .motion import ActionFields

# Grey-level step (0..255, over 0.01 of the face height) that both the bridge and the
# lower rims must show: Grace Hopper's frames gave 24-41 (at 100 and 200 px face
# heights), the bare faces of the shipped test photos at most 7 on one of the two
# (a fringe or a shadow can make one of them strong, not both).
GLASSES_EDGE = 14.0
# The AUs that move the skin round the eyes.
EYE_AUS = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU43")


def _steps(gray: np.ndarray, af: ActionFields, centre: np.ndarray, width: float, height: float) -> np.ndarray:
    """Mean absolute step down the face, per row, of a patch of the face frame (face units)."""
    fr = af.frame
    step = 0.01
    us = np.arange(centre[0] - width / 2, centre[0] + width / 2, step)
    vs = np.arange(centre[1] - height / 2, centre[1] + height / 2, step)
    uu, vv = np.meshgrid(us, vs)
    xy = fr.origin + (uu[..., None] * fr.ex + vv[..., None] * fr.ey) * fr.height
    patch = cv2.remap(gray, xy[..., 0].astype(np.float32), xy[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    return np.abs(np.diff(patch, axis=0)).mean(1)


def worn(image: np.ndarray, af: ActionFields) -> bool:
    """Whether the face of `af` (landmarks of `image`, RGB) wears glasses."""
    grey = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    # edges a few pixels wide count fully whatever the face's size
    gray = np.asarray(cv2.GaussianBlur(grey, (0, 0), max(0.004 * af.frame.height, 0.5)), np.float32)
    f = af.f
    bridge = (f[F.RIGHT_EYE_CORNERS[1]] + f[F.LEFT_EYE_CORNERS[1]]) / 2
    eye_gap = abs(float(f[F.LEFT_EYE_CORNERS[1], 0] - f[F.RIGHT_EYE_CORNERS[1], 0]))
    score = float(_steps(gray, af, bridge, 0.5 * eye_gap, 0.12).max())
    rims = [float(_steps(gray, af, f[i] + (0.0, 0.06), 0.12, 0.10).max())
            for i in (F.RIGHT_EYE_BOTTOM, F.LEFT_EYE_BOTTOM)]
    return min(score, *rims) > GLASSES_EDGE


def _band(af: ActionFields) -> np.ndarray:
    """0..1 per mesh point: 1 over the frames' band, fading out beyond it."""
    f = af.f
    brows = f[list(F.RIGHT_BROW + F.LEFT_BROW), 1]
    eyes = f[list(F.RIGHT_EYE + F.LEFT_EYE)]
    top = float(brows.min()) - 0.03
    bottom = float(eyes[:, 1].max()) + 0.09
    half = float(np.abs(eyes[:, 0]).max()) + 0.08
    inside_v = np.clip(np.minimum(f[:, 1] - top, bottom - f[:, 1]) / 0.05 + 1.0, 0.0, 1.0)
    inside_u = np.clip((half - np.abs(f[:, 0])) / 0.05 + 1.0, 0.0, 1.0)
    return inside_v * inside_u


def keep_rigid(af: ActionFields) -> None:
    """Replace the eye AUs of `af` by their best affine motion over the frames' band, in place."""
    w = _band(af)
    inside = w >= 1.0
    lids = list(F.RIGHT_EYE + F.LEFT_EYE)
    px = af.rest[:, :2]
    a = np.column_stack([px, np.ones(len(px))])
    for name in EYE_AUS:
        field = af.fields.get(name)
        if field is None:
            continue
        sol, *_ = np.linalg.lstsq(a[inside], field[inside].astype(np.float64), rcond=None)
        fit = a @ sol
        keep = 1.0 - w
        keep[lids] = 1.0  # the lids inside the lenses keep their own motion
        af.fields[name] = (fit * (1.0 - keep[:, None]) + field * keep[:, None]).astype(np.float32)
