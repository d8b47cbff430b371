"""The shade of a shut lid on a deep-set eye: a per-colour gain and offset, and applying it.

A blink (eyes.py) brings the upper lid's own skin down over the eye. Where the whole socket
lies in the brow's shadow (lid skin much darker than the skin under the eye: eyes.SHADOWED),
that skin is nearly as dark as the iris, so a shut eye would read as a dark band, not a lid.
A real lid closing there bulges forward into the light, so its shade is brought toward the
skin under the eye: per colour channel, c -> gain * c + offset, the lid's median going to
`LID_TONE` of the under-eye skin's brightness, its hue halfway from its own to that skin's,
and its texture (pores, lash streaks) kept, its contrast scaled by the gain: the square root
of the full ratio (which would triple the grain of a dark lid).

The tone is computed once per portrait (`lid_tone`); per frame, eyes.remap gives each frame
pixel a weight (0 .. 1.5: how shut the lid is there, times its column's weight, fading out
towards the brow, the lashes and the corners), and `apply` blends the rendered pixels by
it. Both render paths (numpy and torch) run the same `apply`.
"""

from __future__ import annotations

from typing import Any, Optional

import cv2
import numpy as np
from scipy.ndimage import median_filter

LID_TONE = 0.7  # a shut lid's median brightness (luma) over the under-eye skin's


def _samples(rgb: np.ndarray, e: Any, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The portrait's colours (n, 3) at eye-local positions (u, v) of eye e."""
    x = (e.origin[0] + u * e.across[0] + v * e.down[0]).astype(np.float32).reshape(-1, 1)
    y = (e.origin[1] + u * e.across[1] + v * e.down[1]).astype(np.float32).reshape(-1, 1)
    return cv2.remap(rgb, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3).astype(np.float64)


def lid_tone(rgb: np.ndarray, e: Any, samples: int) -> Optional[tuple]:
    """The shade of eye e's shut lid: ((2, 3) float32 [gain, offset] per colour, (samples,)
    float32 weight per column), or None where the lid is not darker than `LID_TONE` of
    the skin under the eye. The gain and offset bring the skin the shut lid stretches over
    the eye (each column's, between its `start` and `reach` above the margin, from the
    column `lend` along) to that tone mid-eye; the columns' weights bring each column's
    median there too, so a column whose skin comes from a lighter or darker spot (the
    fold, a lash) is not a streak down the lid."""
    cols = np.arange(samples)
    t = np.linspace(0.0, 1.0, 8)[None, :]
    u = np.repeat(e.u0 + e.step * cols + e.lend, 8)
    v = e.upper[:, None] + e.lift[:, None] - e.start[:, None] - t * (e.reach[:, None] - e.start[:, None])
    lid = _samples(rgb, e, u, v.reshape(-1)).reshape(samples, 8, 3)
    mid = slice(samples // 4, 3 * samples // 4)
    under = _samples(rgb, e, np.repeat(e.u0 + e.step * cols[mid], 8),
                     (e.lower[mid, None] + (0.06 + 0.14 * t) * e.width).reshape(-1))
    lid_c, under_c = np.median(lid[mid].reshape(-1, 3), 0), np.median(under, 0)
    # the under-eye skin's brightness; its hue only halfway (a lid is browner than a cheek)
    luma = np.array([0.299, 0.587, 0.114])
    target = LID_TONE * float(under_c @ luma) * (0.5 * under_c / max(float(under_c @ luma), 1.0)
                                                 + 0.5 * lid_c / max(float(lid_c @ luma), 1.0))
    if np.all(lid_c >= target):
        return None
    gain = np.maximum(np.sqrt(np.maximum(target, 1.0) / np.maximum(lid_c, 1.0)), 1.0)
    offset = target - gain * lid_c
    # per column: the weight that takes its median luma to the target's
    col = np.median(lid, 1) @ luma
    lift = col * (float(gain @ luma) - 1.0) + float(offset @ luma)
    weight = np.clip((float(target @ luma) - col) / np.maximum(lift, 1.0), 0.0, 1.5)
    weight = median_filter(weight, size=3, mode="nearest")
    return np.stack([gain, offset]).astype(np.float32), weight.astype(np.float32)


def apply(xp: Any, pixels, weight, tone) -> Any:
    """`pixels` (..., 3) uint8 (numpy, or torch: `xp`) with eye tone `tone` ((2, 3) float32
    of the same backend) blended in by `weight` (...) float32 0..1; float32 arithmetic in
    the same order on both backends, rounded half to even as both round."""
    w = weight[..., None]
    p = pixels.astype(xp.float32) if xp is np else pixels.float()
    out = p * (1.0 + w * (tone[0] - 1.0)) + w * tone[1]
    out = xp.clip(xp.round(out), 0.0, 255.0)
    return out.astype(np.uint8) if xp is np else out.to(xp.uint8)
