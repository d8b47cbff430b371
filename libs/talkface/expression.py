"""Facial action-unit measures of one face from its 468 landmarks, for the analysis pass.

Each measure is what a viewer would read an action unit by (brow heights, lid opening,
mouth-corner height, the skin between nose and upper lip, the nose wings), in
inter-ocular distances (outer eye corners) along the face's own axes, so it compares
across frames, sizes and small head turns. Measured on landmarks found on an output
frame, never taken from the engine.
"""

from __future__ import annotations

import numpy as np

from libs.talkface import face as F

_INNER_BROWS = (107, 55, 336, 285)
_OUTER_BROWS = (70, 46, 300, 276)
_EYE_CORNERS = F.RIGHT_EYE_CORNERS + F.LEFT_EYE_CORNERS
_SUBNASALE = 2

MEASURES = ("inner_brow", "outer_brow", "brow_gap", "lid_opening", "corner_height", "corner_tilt",
            "mouth_width", "lip_thickness", "upper_lip", "lip_top", "nose_wings", "opening")


def measure(pts: np.ndarray) -> dict[str, float]:
    """The measures of one face (468 x 2 or 3 landmarks, image pixels); up = positive.

    - inner_brow / outer_brow: height of the brows' inner / outer ends above the line of
      the eye corners (AU1 / AU2 raise them, AU4 lowers them)
    - brow_gap: distance between the brows' inner ends (AU4 draws them together)
    - lid_opening: mean upper-to-lower lid distance of both eyes (AU5 opens, AU7/AU43 narrow)
    - corner_height: mouth corners above the seam of the lips (AU12 up, AU15 down)
    - corner_tilt: the subject's left corner's height above the right one's (AU14 on one side)
    - mouth_width: corner to corner (AU20 and AU12 widen it)
    - lip_thickness: outer lip height minus the inner opening (AU23/24 thin the lips)
    - upper_lip: from below the nose to the top of the upper lip (AU10 shortens it)
    - lip_top: the upper lip's top below the eye-corner line (AU10 raises the lip)
    - nose_wings: the nose wings' height below the eye-corner line (AU9 shortens it)
    - opening: the inner lips' gap at the middle (speech)
    """
    xy = np.asarray(pts, np.float64)[:, :2]
    across = xy[F.LEFT_EYE_CORNERS[0]] - xy[F.RIGHT_EYE_CORNERS[0]]
    iod = max(float(np.linalg.norm(across)), 1e-6)
    across /= iod
    up = np.array([across[1], -across[0]])  # image y grows downwards

    def height(idx) -> float:
        return float(xy[list(idx)].mean(0) @ up)

    eyes = height(_EYE_CORNERS)
    seam = (xy[F.INNER_LIP_UPPER_MID] + xy[F.INNER_LIP_LOWER_MID]) / 2
    corner_r = float((xy[F.MOUTH_CORNERS[0]] - seam) @ up)
    corner_l = float((xy[F.MOUTH_CORNERS[1]] - seam) @ up)
    opening = float((xy[F.INNER_LIP_UPPER_MID] - xy[F.INNER_LIP_LOWER_MID]) @ up)
    outer = float((xy[F.OUTER_LIP_UPPER_MID] - xy[F.OUTER_LIP_LOWER_MID]) @ up)
    lids = np.mean([float((xy[t] - xy[b]) @ up) for t, b in ((F.RIGHT_EYE_TOP, F.RIGHT_EYE_BOTTOM),
                                                             (F.LEFT_EYE_TOP, F.LEFT_EYE_BOTTOM))])
    values = {
        "inner_brow": height(_INNER_BROWS) - eyes,
        "outer_brow": height(_OUTER_BROWS) - eyes,
        "brow_gap": float(np.linalg.norm(xy[107] - xy[336])),
        "lid_opening": float(lids),
        "corner_height": (corner_r + corner_l) / 2,
        "corner_tilt": corner_l - corner_r,
        "mouth_width": float(np.linalg.norm(xy[F.MOUTH_CORNERS[1]] - xy[F.MOUTH_CORNERS[0]])),
        "lip_thickness": outer - opening,
        "upper_lip": float((xy[_SUBNASALE] - xy[F.OUTER_LIP_UPPER_MID]) @ up),
        "lip_top": eyes - height([F.OUTER_LIP_UPPER_MID]),
        "nose_wings": eyes - height(F.NOSE_WINGS),
        "opening": opening,
    }
    return {k: v / iod for k, v in values.items()}


def measure_frames(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """`measure` of every frame of (n, 468, 3) landmarks; NaN where a frame has none."""
    rows = [measure(p) if np.isfinite(p).all() else dict.fromkeys(MEASURES, np.nan) for p in landmarks]
    return {k: np.array([r[k] for r in rows]) for k in MEASURES}
