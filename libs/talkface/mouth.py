"""The inside of the mouth: the portrait's own teeth as layers, or teeth drawn to match it.

Whatever shows between the inner lips of a frame is drawn here, over the warped face:
a cavity in shadow (with the tongue low in it on wide openings), the lower teeth, which
ride the mandible, and the upper teeth, which stay with the skull; the lips themselves
(the warp's) frame it.

Where the portrait shows its teeth, they are cut out of it (pixels between its inner lips
lighter and less coloured than the lip beside them, split into the row that hangs from the
upper lip and the row on the lower one) and move as layers, so a frame shows the person's
own teeth, pixel for pixel, wherever they are visible. The dark gap between the two rows
tells how far the portrait's jaw is open; a portrait caught mid-word is shut to rest with
its lips together (MotionPlan.jaw_rest / press_rest), and speech opens it again from
there, its own tongue riding the jaw under the lower teeth.

Where the portrait shows none, the rows are drawn once, in the portrait's own space:
incisal edges that follow the lip line and the smile's curve, teeth spaced as a dental
arch turned with the face, darker towards the corners where the arch turns away and in
the shadow of the upper lip; colours from the whites of the person's own eyes (teeth are
lit by the same light), the lips and the skin, so a grey photo gives grey teeth; grain
like the photo's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from . import face as F
from .jit import compiled

_UPPER = list(F.LIPS_INNER_UPPER)
_LOWER = list(F.LIPS_INNER_LOWER)

# In face heights: where the drawn incisal edges sit against the rest lip line.
UPPER_TEETH_SHOW = 0.013  # upper incisors reach this far below the upper lip's rest line
LOWER_TEETH_DROP = 0.003  # lower incisors' edges sit just below the lower lip's rest line
HIDDEN = 0.035  # how far the rows reach up/down behind the lips
OPEN_GAP = 0.012  # inner lips further apart than this show the mouth's inside
SHUT_TOLERANCE = 0.012  # a dark gap between the teeth rows narrower than this is a closed bite

# Edges of the teeth along the dental arch (degrees from the middle): central incisors,
# laterals, canines, premolars; the arch's visible end.
_TOOTH_EDGES_DEG = (0.0, 15.0, 28.0, 40.0, 51.0, 61.0)
_ARCH_END_DEG = 70.0


def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@compiled
def _shade(out: np.ndarray, top: np.ndarray, gap: np.ndarray, across: np.ndarray, fh: float,
           cavity: np.ndarray, tongue: np.ndarray) -> None:
    """The inside of an opening into `out` (rh, rw, 3) float32: a cavity darkest in the
    middle and in the corners, the tongue low in a wide opening. Per column x: the upper
    lip's row `top[x]` (in out's rows), the lips' `gap[x]` and `across[x]` (1 in the
    middle of the mouth, 0 at its corners)."""
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            depth = min(max((y - top[x]) / gap[x], 0.0), 1.0)
            light = (0.65 + 0.35 * across[x]) * (0.75 + 0.25 * abs(2.0 * depth - 1.0))
            wide = min(max((gap[x] / fh - 0.03) / 0.03, 0.0), 1.0)
            low = min(max((depth - 0.5) / 0.4, 0.0), 1.0)
            t = low * low * (3.0 - 2.0 * low) * wide * wide * (3.0 - 2.0 * wide) * across[x]
            a, b = light * (1.0 - t), (0.6 + 0.4 * depth) * t
            for ch in range(3):
                out[y, x, ch] = a * cavity[ch] + b * tongue[ch]


@compiled
def _blend(frame: np.ndarray, out: np.ndarray, mask: np.ndarray, tile: np.ndarray, grain: float) -> None:
    """`out` plus `grain` times the noise `tile`, blended over the uint8 `frame` by `mask`,
    in place."""
    for y in range(frame.shape[0]):
        for x in range(frame.shape[1]):
            a, g = mask[y, x], grain * tile[y, x]
            for ch in range(3):
                f = np.float32(frame[y, x, ch])
                v = f + (out[y, x, ch] + g - f) * a + 0.5
                frame[y, x, ch] = np.uint8(min(max(v, 0.0), 255.0))


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the interior's kernels now, not in the first job."""
    out = np.zeros((2, 2, 3), np.float32)
    one = np.ones(2, np.float32)
    _shade(out, one, one, one, np.float32(1.0), one[:1].repeat(3), one[:1].repeat(3))
    # as draw calls it: into a box of the frame, with the mask or a tile of the noise
    frame, mask = np.zeros((4, 4, 3), np.uint8), np.ones((2, 2), np.float32)
    _blend(frame[1:3, 1:3], out, mask, mask, np.float32(0.0))
    _blend(frame[1:3, 1:3], out, mask, np.ones((4, 4), np.float32)[1:3, 1:3], np.float32(0.0))


def _poly_mask(polygon: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Anti-aliased float32 mask (0..1) of a polygon in a (h, w) patch at (x0, y0)."""
    m = np.zeros((h, w), np.uint8)
    p = np.round((np.asarray(polygon, np.float64) - (x0, y0)) * 8).astype(np.int32)
    cv2.fillPoly(m, [p], 255, lineType=cv2.LINE_AA, shift=3)
    return m.astype(np.float32) * (1.0 / 255.0)


def _curve_basis(n: int, steps: int) -> np.ndarray:
    """The matrix taking n contour points to the points of a Catmull-Rom curve through
    them (`steps` pieces between neighbours, ends continued straight)."""
    t = np.arange(steps) / steps
    w = 0.5 * np.stack([-t + 2 * t ** 2 - t ** 3, 2 - 5 * t ** 2 + 3 * t ** 3,
                        t + 4 * t ** 2 - 3 * t ** 3, -t ** 2 + t ** 3], 1)  # (steps, 4)
    # the points with one more at each end (2 p0 - p1, ..., 2 p[n-1] - p[n-2])
    ext = np.zeros((n + 2, n))
    ext[1:-1] = np.eye(n)
    ext[0, 0], ext[0, 1], ext[-1, -1], ext[-1, -2] = 2, -1, 2, -1
    rows = [w @ ext[k - 1:k + 3] for k in range(1, n)]
    return np.concatenate(rows + [np.eye(n)[-1:]])


_BASIS = {n: _curve_basis(n, 4) for n in (len(_UPPER),)}


def _curve(points: np.ndarray) -> np.ndarray:
    """A smooth curve through a lip contour, so the opening is not a polygon with
    FaceMesh's few corners."""
    p = np.asarray(points, np.float64)
    return _BASIS[len(p)] @ p


def opening_polygon(pts: np.ndarray) -> np.ndarray:
    """The outline of the opening between the inner lips, smoothed (corners stay sharp)."""
    pts = np.asarray(pts, np.float64)[:, :2]
    upper, lower = _curve(pts[_UPPER]), _curve(pts[_LOWER])
    return np.concatenate([upper, lower[-2:0:-1]])


def _contour_y(contour: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The contour's y at each x (linear between its points, flat beyond its ends)."""
    c = contour[np.argsort(contour[:, 0])]
    return np.interp(xs, c[:, 0], c[:, 1])


def _is_grey(image: np.ndarray, box: tuple) -> bool:
    x0, y0, x1, y1 = box
    patch = image[y0:y1, x0:x1].astype(np.int16)
    if patch.size == 0:
        return False
    spread = np.abs(patch[..., 0] - patch[..., 1]) + np.abs(patch[..., 1] - patch[..., 2])
    return float(np.percentile(spread, 99)) <= 6.0


def _grain(image: np.ndarray, box: tuple) -> float:
    """The photo's grain: robust std of what a small blur removes, over the face."""
    x0, y0, x1, y1 = box
    g = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    if min(g.shape) < 8:
        return 0.0
    hp = g - cv2.GaussianBlur(g, (0, 0), 1.0)
    return float(np.clip(1.4826 * np.median(np.abs(hp - np.median(hp))), 0.0, 6.0))


@dataclass
class _Layer:
    """An RGBA picture in the portrait's space over `box`, moved by one affine per frame."""

    rgba: np.ndarray  # (h, w, 4) float32, colour 0..255, alpha 0..1
    box: tuple  # x0, y0 of the layer in the portrait


@dataclass
class Colours:
    """The palette of one face (RGB, 0..255)."""

    teeth: np.ndarray
    cavity: np.ndarray
    tongue: np.ndarray
    grey: bool


def face_colours(image: np.ndarray, rest: np.ndarray, fh: float, teeth: Optional[np.ndarray] = None,  # noqa: ARG001 - callers pass the face height
                 cavity: Optional[np.ndarray] = None, tongue: Optional[np.ndarray] = None) -> Colours:
    """Colours for a drawn mouth inside, from the portrait itself.

    Teeth are lit like the whites of the eyes, a little darker (they sit in the mouth's
    shade) and warmer; the cavity is the lips' colour deep in shadow, the tongue the lips'
    colour in half shade. Where the portrait shows its own (`teeth`, `cavity`, `tongue`:
    analyse_portrait_mouth's), those are used. A grey photo gives grey colours."""
    pts = rest[:, :2]
    lo, hi = pts[list(F.FACE_OVAL)].min(0), pts[list(F.FACE_OVAL)].max(0)
    h, w = image.shape[:2]
    box = (max(0, int(lo[0])), max(0, int(lo[1])), min(w, int(hi[0]) + 1), min(h, int(hi[1]) + 1))
    grey = _is_grey(image, box)
    lips = _region_pixels(image, [np.concatenate([pts[list(F.LIPS_OUTER_UPPER)], pts[_UPPER][::-1]]),
                                  np.concatenate([pts[list(F.LIPS_OUTER_LOWER)], pts[_LOWER][::-1]])])
    lip = np.median(lips, 0) if len(lips) else np.array([150.0, 90.0, 85.0])
    skin_px = _region_pixels(image, [pts[list(F.RIGHT_CHEEK)], pts[list(F.LEFT_CHEEK)]])
    skin = np.median(skin_px, 0) if len(skin_px) else lip
    if teeth is None:
        eyes = _region_pixels(image, [pts[list(F.RIGHT_EYE)], pts[list(F.LEFT_EYE)]])
        sclera = None
        if len(eyes) >= 12:
            luma = eyes @ np.array([0.299, 0.587, 0.114])
            sat = eyes.max(1) - eyes.min(1)
            bright = eyes[(luma >= np.percentile(luma, 75)) & (sat <= np.percentile(sat, 60))]
            if len(bright):
                sclera = np.median(bright, 0)
        skin_y = float(skin @ np.array([0.299, 0.587, 0.114]))
        if sclera is None or float(sclera @ np.array([0.299, 0.587, 0.114])) < 0.9 * skin_y:
            # closed eyes, dark glasses: skin lightened towards a neutral white
            sclera = 0.35 * skin + 0.65 * np.full(3, min(235.0, 1.3 * skin_y))
        # ivory: the eye's white taking a little of the skin's warmth (the mouth's light
        # comes off the lips and cheeks)
        teeth = 0.7 * sclera * np.array([0.97, 0.95, 0.9]) + 0.3 * skin * (float(sclera.mean()) / max(float(skin.mean()), 1.0))
        # teeth in a photo are lighter than the skin around them, even in the mouth's shade
        lift = 1.2 * skin_y / max(float(teeth @ np.array([0.299, 0.587, 0.114])), 1.0)
        teeth = np.clip(teeth * max(1.0, lift), 0, 240)
    # the inside of a mouth is the lips' colour deep in shadow, never lighter than a
    # quarter of the lips (a portrait's own darkest mouth pixels help, when it has some)
    deep = lip * np.array([0.18, 0.09, 0.09])
    cavity = deep if cavity is None else 0.5 * deep + 0.5 * np.minimum(np.asarray(cavity, np.float64), lip * 0.3)
    tongue = lip * np.array([0.55, 0.4, 0.4]) if tongue is None else tongue
    teeth, cavity, tongue = (np.asarray(c, np.float32) for c in (teeth, cavity, tongue))
    if grey:
        teeth, cavity, tongue = (np.full(3, float(c.mean()), np.float32) for c in (teeth, cavity, tongue))
    return Colours(teeth, cavity, tongue, grey)


def _region_pixels(image: np.ndarray, polys: list) -> np.ndarray:
    h, w = image.shape[:2]
    m = np.zeros((h, w), np.uint8)
    for p in polys:
        cv2.fillPoly(m, [np.round(np.asarray(p)).astype(np.int32)], 1)
    return image[m.astype(bool)].reshape(-1, 3).astype(np.float64)


@dataclass
class PortraitMouth:
    """What the portrait shows between its inner lips."""

    open: bool  # the inner lips are apart
    teeth: Optional[np.ndarray]  # (h, w) float32 0..1 mask of visible teeth over `box`, or None
    upper: Optional[np.ndarray]  # the part of `teeth` on the upper row
    box: tuple
    dark_gap: float  # face heights of dark cavity between the rows (the jaw's opening)
    teeth_colour: Optional[np.ndarray]
    cavity_colour: Optional[np.ndarray]
    tongue: Optional[np.ndarray] = None  # (h, w) float32 mask over `box`: low between rows apart, neither teeth nor shadow
    tongue_colour: Optional[np.ndarray] = None


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)


def _teeth_and_shadow(image: np.ndarray, pts: np.ndarray, box: tuple) -> tuple:
    """Masks over `box` of pixels that look like teeth and like the dark inside of the
    mouth, judged against the colours of the middles of the two lips."""
    x0, y0, x1, y1 = box
    lab = _lab(image[y0:y1, x0:x1])
    light = lab[..., 0]
    chroma = np.hypot(lab[..., 1] - 128.0, lab[..., 2] - 128.0)
    lips = []
    for outer, inner in ((F.LIPS_OUTER_UPPER, F.LIPS_INNER_UPPER), (F.LIPS_OUTER_LOWER, F.LIPS_INNER_LOWER)):
        o, i = pts[list(outer[2:-2])], pts[list(inner[2:-2])]
        px = _region_pixels(image, [np.concatenate([o + 0.3 * (i - o), (o + 0.7 * (i - o))[::-1]])])
        colour = np.median(px, 0) if len(px) else np.array([150.0, 90.0, 85.0])
        lab_lip = _lab(colour[None, None])[0, 0]
        lips.append((float(lab_lip[0]), float(np.hypot(lab_lip[1] - 128.0, lab_lip[2] - 128.0))))
    lightest = max(l for l, _ in lips)
    darkest = min(l for l, _ in lips)
    least_chroma = min(c for _, c in lips)
    if least_chroma <= 8.0:
        # a grey photo: lightness is all there is, and teeth are lighter than either lip
        return light > lightest + 15.0, light < 0.62 * darkest
    # Teeth are lighter than their lip and less coloured (a lip's highlight keeps its
    # colour). Each row is judged against its own lip: the upper teeth often lie in the
    # shadow of the upper lip, darker than a lit lower lip (a photo caught mid-word).
    xs = np.arange(x0, x1, dtype=np.float64)
    mid = 0.5 * (_contour_y(pts[_UPPER], xs) + _contour_y(pts[_LOWER], xs))
    upper_half = np.arange(y0, y1, dtype=np.float64)[:, None] < mid[None, :]
    (l_up, c_up), (l_lo, c_lo) = lips
    lip_light = np.where(upper_half, l_up, l_lo)
    lip_chroma = np.where(upper_half, c_up, c_lo)
    return (light > lip_light + 8.0) & (chroma < 0.85 * lip_chroma), light < 0.62 * darkest


def refine_inner_lips(image: np.ndarray, rest: np.ndarray, fh: float) -> np.ndarray:
    """The landmarks with the inner-lip contours of an open mouth moved to where the lips
    really end (FaceMesh often draws them across the teeth or into a lip).

    Each inner point moves along the vertical: from a point on teeth or shadow out to the
    first lip pixel, from a point on lip in to the first teeth or shadow pixel; at most
    half its lip's thickness outwards and a third of the gap inwards, smoothed along the
    contour, less at its ends. A closed mouth is returned unchanged."""
    pts = np.array(rest, np.float64, copy=True)
    xy = pts[:, :2]
    gap = float(np.median((xy[_LOWER][2:-2] - xy[_UPPER][2:-2])[:, 1]))
    if gap < OPEN_GAP * fh:
        return pts
    h, w = image.shape[:2]
    outer = xy[list(F.LIPS_OUTER)]
    box = (max(0, int(outer[:, 0].min()) - 2), max(0, int(outer[:, 1].min()) - 2),
           min(w, int(outer[:, 0].max()) + 3), min(h, int(outer[:, 1].max()) + 3))
    teeth, dark = _teeth_and_shadow(image, xy, box)
    inner_px = teeth | dark
    bx, by = box[:2]
    for inner, outer_c, out_dir in ((F.LIPS_INNER_UPPER, F.LIPS_OUTER_UPPER, -1),
                                    (F.LIPS_INNER_LOWER, F.LIPS_OUTER_LOWER, 1)):
        moves = np.zeros(len(inner))
        for k in range(1, len(inner) - 1):
            i, o = inner[k], outer_c[k]
            x, y = int(round(xy[i, 0])) - bx, int(round(xy[i, 1])) - by
            if not (0 <= x < inner_px.shape[1] and 0 <= y < inner_px.shape[0]):
                continue
            col = inner_px[:, x]
            reach_out = int(0.5 * abs(xy[i, 1] - xy[o, 1]))
            reach_in = int(gap / 3)
            if col[y]:
                step, limit = out_dir, reach_out  # on teeth or shadow: out to the lip
                found = next((d for d in range(1, limit + 1)
                              if not (0 <= y + d * step < len(col)) or not col[y + d * step]), limit)
                moves[k] = out_dir * (found - 0.5)
            else:
                step, limit = -out_dir, reach_in  # on lip: in to the opening
                found = next((d for d in range(1, limit + 1)  # type: ignore[assignment]
                              if 0 <= y + d * step + step < len(col) and col[y + d * step]
                              and col[y + d * step + step]), None)
                moves[k] = -out_dir * (found - 0.5) if found else 0.0
        smooth = np.array([np.median(moves[max(1, k - 1):min(len(inner) - 1, k + 2)]) if 0 < k < len(inner) - 1
                           else 0.0 for k in range(len(inner))])
        smooth[[1, -2]] *= 0.5
        pts[list(inner), 1] += smooth
    return pts


def analyse_portrait_mouth(image: np.ndarray, rest: np.ndarray, fh: float) -> PortraitMouth:
    """Find the portrait's visible teeth, which row each belongs to, and how far apart
    the two rows are."""
    pts = rest[:, :2].astype(np.float64)
    up, lo = pts[_UPPER], pts[_LOWER]
    gap = float(np.median((lo[2:-2] - up[2:-2])[:, 1]))
    h, w = image.shape[:2]
    poly = opening_polygon(pts)
    x0, y0 = max(0, int(math.floor(poly[:, 0].min()))), max(0, int(math.floor(poly[:, 1].min())))
    x1, y1 = min(w, int(math.ceil(poly[:, 0].max())) + 1), min(h, int(math.ceil(poly[:, 1].max())) + 1)
    box = (x0, y0, x1, y1)
    none = PortraitMouth(False, None, None, box, 0.0, None, None)
    if gap < OPEN_GAP * fh or x1 - x0 < 4 or y1 - y0 < 3:
        return none
    inside = _poly_mask(poly, x0, y0, x1 - x0, y1 - y0) > 0.5
    if inside.sum() < 12:
        return none
    teeth, dark = _teeth_and_shadow(image, pts, box)
    patch = image[y0:y1, x0:x1]
    dark &= inside
    cavity_colour = np.median(patch[dark].astype(np.float32), 0) if dark.sum() >= 6 else None
    # what lies low in the opening that is neither teeth nor shadow: the tongue, when the
    # rows are apart (judged below)
    xs = np.arange(x0, x1, dtype=np.float64)
    low = np.arange(y0, y1, dtype=np.float64)[:, None] >= 0.5 * (_contour_y(up, xs) + _contour_y(lo, xs))[None, :]
    tongue = inside & low & ~teeth & ~dark
    teeth &= inside
    if teeth.sum() < max(6, 0.08 * inside.sum()):
        # an open mouth without teeth to be seen (in shadow, or a small photo)
        return PortraitMouth(True, None, None, box, max(0.0, gap / fh - SHUT_TOLERANCE), None, cavity_colour)
    # close small holes (gaps between teeth, glints)
    teeth = cv2.morphologyEx(teeth.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)
    teeth &= inside
    upper = np.zeros_like(teeth)
    mid_x = (up[0, 0] + up[-1, 0]) / 2 - x0
    half = max(1.0, abs(up[-1, 0] - up[0, 0]) / 2)
    dark_gaps = []
    for c in np.nonzero(inside.any(0))[0]:
        rows = np.nonzero(inside[:, c])[0]
        top, bottom = rows[0], rows[-1]
        span = bottom - top + 1
        col = teeth[top:bottom + 1, c]
        central = abs(c - mid_x) < 0.5 * half
        if central:
            # the jaw is open as far as the shadow between the rows shows
            dark_gaps.append(float(dark[top:bottom + 1, c].sum()) / fh)
        if not col.any():
            continue
        # the two rows are parted by the longest run of non-teeth inside the column; teeth
        # that run on without one are the upper row (a smile shows little of the lower)
        idx = np.nonzero(col)[0]
        holes = np.diff(idx) - 1
        k = int(np.argmax(holes)) if holes.size else -1
        if k >= 0 and holes[k] >= max(2, 0.15 * span):
            cut = idx[k] + 1
        elif idx[0] > 0.5 * span:  # a single run low in the mouth: the lower row
            cut = 0
        else:
            cut = span
        upper[top:top + cut, c] = col[:cut]
    teeth_colour = np.median(patch[teeth].astype(np.float32), 0)
    dark_gap = float(np.median(dark_gaps)) if dark_gaps else 0.0
    if dark_gap > SHUT_TOLERANCE and tongue.sum() >= max(12, 0.05 * inside.sum()):
        tongue_mask, tongue_colour = tongue.astype(np.float32), np.median(patch[tongue].astype(np.float32), 0)
    else:
        tongue_mask = tongue_colour = None
    return PortraitMouth(True, teeth.astype(np.float32), upper.astype(np.float32), box,
                         max(0.0, dark_gap - SHUT_TOLERANCE), teeth_colour, cavity_colour, tongue_mask, tongue_colour)


class MouthInterior:
    """Draws the inside of the mouth of one portrait (or one video frame) into frames.

    `rest` are the portrait's landmarks (468 x 3); `yaw_sin` how far the face is turned
    (ActionFields.yaw_sin); `softness` the blur (pixels) of drawn parts, larger when the
    portrait was enlarged; `seed` fixes the grain.
    """

    def __init__(self, image: np.ndarray, rest: np.ndarray, face_height: float, *, yaw_sin: float = 0.0,
                 softness: float = 0.55, seed: int = 0):
        self.fh = float(face_height)
        self.rest = np.asarray(rest, np.float64)
        pts = self.rest[:, :2]
        self.found = analyse_portrait_mouth(image, self.rest, self.fh)
        self.colours = face_colours(image, self.rest, self.fh, self.found.teeth_colour, self.found.cavity_colour,
                                    self.found.tongue_colour)
        lo, hi = pts[list(F.FACE_OVAL)].min(0), pts[list(F.FACE_OVAL)].max(0)
        h, w = image.shape[:2]
        self.grain = _grain(image, (max(0, int(lo[0])), max(0, int(lo[1])), min(w, int(hi[0])), min(h, int(hi[1]))))
        self.softness = float(softness)
        self.yaw_sin = float(yaw_sin)
        self._noise = np.random.default_rng(seed).standard_normal((256, 256)).astype(np.float32)
        self.upper, self.lower = self._layers(image)  # lists of layers, drawn in order

    # ------------------------------------------------------------------ layers

    def _layer_box(self, image: np.ndarray) -> tuple:
        pts = self.rest[:, :2]
        outer = pts[list(F.LIPS_OUTER)]
        pad = HIDDEN * self.fh + 3
        h, w = image.shape[:2]
        x0 = max(0, int(math.floor(outer[:, 0].min() - 2)))
        x1 = min(w, int(math.ceil(outer[:, 0].max() + 3)))
        y0 = max(0, int(math.floor(pts[_UPPER][:, 1].min() - pad)))
        y1 = min(h, int(math.ceil(pts[_LOWER][:, 1].max() + pad)))
        return x0, y0, x1, y1

    def _layers(self, image: np.ndarray) -> tuple:
        """(what the skull carries, what the mandible carries), each a list of layers.

        A portrait whose lips are apart gives its whole opening to the skull's layer,
        less the lower teeth when a dark gap shows them apart from the upper ones (those
        ride the mandible); so the rest pose is the portrait's own mouth, pixel for pixel.
        Teeth it does not show are drawn."""
        box = self._layer_box(image)
        drawn_up, drawn_lo = self._drawn_rows(box)
        found = self.found
        if not found.open or found.teeth is None:
            return [drawn_up], [drawn_lo]
        x0, y0, x1, y1 = box
        poly = opening_polygon(self.rest)
        inside = _poly_mask(poly, x0, y0, x1 - x0, y1 - y0)
        lower = np.zeros_like(inside)
        upper = np.zeros_like(inside)
        if found.teeth is not None:
            fx0, fy0, fx1, fy1 = found.box
            lower[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = np.clip(found.teeth - found.upper, 0, 1)
            upper[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = found.upper
        keep = np.clip(inside - lower, 0, 1)
        if found.dark_gap > 0:
            # a jaw caught open: the skull keeps the upper teeth and what is above them;
            # the tongue and the shadow between the rows are drawn afresh as it moves
            rows = np.arange(inside.shape[0])[:, None]
            has = upper.max(0) > 0.5
            last = np.where(has, inside.shape[0] - 1 - np.argmax(upper[::-1] > 0.5, axis=0), -1)
            keep = keep * (rows <= last[None, :])
        skull = self._own(image, box, keep, hang=True)
        mandible = self._own(image, box, lower, hang=False) if lower.sum() >= 4 else drawn_lo
        if found.dark_gap > 0:
            # where its own upper teeth were not made out, drawn ones stand in (in their
            # colour); its own tongue, where it shows one, rides the jaw under the lower teeth
            return [drawn_up, skull], self._tongue(image, box) + [mandible]
        return [skull], [mandible]

    def _tongue(self, image: np.ndarray, box: tuple) -> list:
        """The portrait's own tongue as a layer (none when it shows none), its edge softened
        into the drawn cavity around it."""
        found = self.found
        if found.tongue is None:
            return []
        x0, y0, x1, y1 = box
        fx0, fy0, fx1, fy1 = found.box
        alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
        alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = found.tongue
        alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0) * alpha  # inside only, fading at the edge
        return [_Layer(np.dstack([image[y0:y1, x0:x1].astype(np.float32), alpha]), (x0, y0))]

    def _own(self, image: np.ndarray, box: tuple, alpha: np.ndarray, hang: bool) -> _Layer:
        """The portrait's pixels under `alpha` as a layer, continued behind the lip they
        border (up from the top edge when `hang`, else down from the bottom edge) by
        repeating that edge's pixels a little darker, so a lip that moves off them finds
        more of the same behind it."""
        x0, y0, x1, y1 = box
        alpha = alpha.astype(np.float32).copy()
        rgb = image[y0:y1, x0:x1].astype(np.float32).copy()
        teeth = self._teeth_in(box)
        cols = np.nonzero(alpha.max(0) > 0.5)[0]
        near = {}
        for c in cols:
            on = np.nonzero(teeth[:, c] & (alpha[:, c] > 0.5))[0]
            if len(on):
                # the tooth nearest the lip, a little darker in the lip's shade
                near[c] = rgb[on[0] if hang else on[-1], c] * (0.85 if hang else 0.8)
        if not near:
            return _Layer(np.dstack([rgb, alpha]), (x0, y0))  # only teeth go on behind a lip
        known = np.array(sorted(near))
        for c in cols:
            if not known[0] <= c <= known[-1]:
                continue
            # columns without a tooth of their own (a gap, a glint) take their neighbour's
            colour = near.get(c)
            if colour is None:
                colour = near[int(known[np.argmin(np.abs(known - c))])]  # type: ignore[index]
            rows = np.nonzero(alpha[:, c] > 0.5)[0]
            if hang:
                alpha[:rows[0], c] = 1.0
                rgb[:rows[0], c] = colour
            else:
                alpha[rows[-1] + 1:, c] = 1.0
                rgb[rows[-1] + 1:, c] = colour
        return _Layer(np.dstack([rgb, alpha]), (x0, y0))

    def _teeth_in(self, box: tuple) -> np.ndarray:
        """The portrait's teeth mask (bool) over `box`."""
        x0, y0, x1, y1 = box
        out = np.zeros((y1 - y0, x1 - x0), bool)
        found = self.found
        if found.teeth is not None:
            fx0, fy0, fx1, fy1 = found.box
            out[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = found.teeth > 0.5
        return out

    def _arch(self, s: np.ndarray) -> tuple:
        """For positions across the mouth (-1..1 corner to corner, as seen), the angle along
        the dental arch (degrees) and how squarely that part faces the camera (0..1)."""
        yaw = math.asin(self.yaw_sin)
        phis = np.radians(np.linspace(-_ARCH_END_DEG, _ARCH_END_DEG, 141))
        # a horseshoe arch seen from the front, turned by the face's yaw
        x = np.sin(phis) * math.cos(yaw) + 0.55 * (1 - np.cos(phis)) * math.sin(yaw)
        lo, hi = x.min(), x.max()
        seen = 2 * (x - lo) / max(hi - lo, 1e-6) - 1
        order = np.argsort(seen)
        phi = np.interp(s, seen[order], phis[order])
        facing = np.clip(np.cos(phi + yaw), 0.0, 1.0)
        return np.degrees(phi), facing

    def _drawn_rows(self, box: tuple) -> tuple:
        """Upper and lower teeth drawn in the portrait's space."""
        x0, y0, x1, y1 = box
        pts = self.rest[:, :2]
        up, lo = pts[_UPPER], pts[_LOWER]
        xs = np.arange(x0, x1, dtype=np.float64)
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]
        left, right = up[0, 0], up[-1, 0]
        cx, half = (left + right) / 2, max(abs(right - left) / 2, 1.0)
        s = np.clip((xs - cx) / half, -1.2, 1.2)
        phi, facing = self._arch(np.clip(s, -1, 1))
        fh = self.fh
        colour = self.colours.teeth.astype(np.float32)
        # the gaps between teeth: thin, soft, darker lines at the arch's tooth edges
        edges = np.array([e * sgn for e in _TOOTH_EDGES_DEG for sgn in ((1,) if e == 0 else (1, -1))])
        dphi = np.abs(phi[:, None] - edges[None, :]).min(1)
        px_per_deg = np.abs(np.gradient(xs)) / np.maximum(np.abs(np.gradient(phi)), 1e-6)
        line = np.exp(-((dphi * px_per_deg) / 0.55) ** 2)
        ends = _smooth((_ARCH_END_DEG - np.abs(phi)) / 16.0)
        light = (0.75 + 0.25 * facing) * (1 - 0.18 * line)
        rows = []
        for upper in (True, False):
            if upper:
                lip_y = _contour_y(up, xs)
                edge = lip_y + UPPER_TEETH_SHOW * fh * (1 - 0.5 * np.clip(s, -1, 1) ** 2)
                inside = _smooth((edge[None, :] - ys) / max(self.softness, 0.3) + 0.5) \
                    * _smooth((ys - (lip_y - HIDDEN * fh)[None, :]) / 2.0)
                # the upper lip's shadow on the teeth just under it
                shade = 1 - 0.25 * np.exp(-np.maximum(ys - lip_y[None, :], 0) / (0.005 * fh))
                width = ends
                tone = 1.0
            else:
                lip_y = _contour_y(lo, xs)
                edge = lip_y + LOWER_TEETH_DROP * fh
                inside = _smooth((ys - edge[None, :]) / max(self.softness, 0.3) + 0.5) \
                    * _smooth(((lip_y + HIDDEN * fh)[None, :] - ys) / 2.0)
                shade = 1 - 0.3 * np.exp(-np.maximum(ys - edge[None, :], 0) / (0.008 * fh))
                width = ends * _smooth((40.0 - np.abs(phi)) / 14.0)  # lower incisors are narrower
                tone = 0.85  # in the upper teeth's shade
            alpha = (inside * width[None, :]).astype(np.float32)
            rgb = colour[None, None, :] * (light[None, :] * shade * tone)[..., None]
            rgb = self._soften(rgb.astype(np.float32))
            rows.append(_Layer(np.dstack([rgb, alpha]), (x0, y0)))
        return rows[0], rows[1]

    def _soften(self, rgb: np.ndarray) -> np.ndarray:
        if self.softness > 0.3:
            rgb = cv2.GaussianBlur(rgb, (0, 0), self.softness)
        return rgb

    # ------------------------------------------------------------------ frames

    @property
    def shut_rest(self) -> tuple[float, float]:
        """(face heights of jaw opening to shut at rest, whether to bring the lips together)."""
        gap = self.found.dark_gap
        return gap, 1.0 if gap > 0 else 0.0

    def draw(self, frame: np.ndarray, pts: np.ndarray, skull: np.ndarray, mandible: np.ndarray,
             index: int = 0) -> None:
        """Paint what shows between the inner lips of `pts` (468 x 2, frame pixels) into
        `frame`, in place; `skull` and `mandible` are the 2x3 affines from the portrait to
        this frame of the upper and the lower teeth."""
        pts = np.asarray(pts, np.float64)[:, :2]
        up, lo = pts[_UPPER], pts[_LOWER]
        if float(np.max((lo[1:-1] - up[1:-1])[:, 1])) <= 0.3:
            return
        poly = opening_polygon(pts)
        h, w = frame.shape[:2]
        x0 = max(0, int(math.floor(poly[:, 0].min())) - 2)
        y0 = max(0, int(math.floor(poly[:, 1].min())) - 2)
        x1 = min(w, int(math.ceil(poly[:, 0].max())) + 3)
        y1 = min(h, int(math.ceil(poly[:, 1].max())) + 3)
        rw, rh = x1 - x0, y1 - y0
        if rw < 3 or rh < 3:
            return
        mask = _poly_mask(poly, x0, y0, rw, rh)
        if mask.max() <= 0.0:
            return
        if self.softness > 0.45:
            mask = cv2.GaussianBlur(mask, (0, 0), 0.7 * self.softness)
        fh = self.fh
        if not self.found.open or self.found.teeth is None:
            # a portrait with its lips together (or its teeth in shadow): its own mouth
            # stays as it is at rest, and the drawn inside comes in as the lips part
            rest_gap = float(np.median((self.rest[_LOWER][3:8] - self.rest[_UPPER][3:8])[:, 1]))
            now = float(np.median((lo[3:8] - up[3:8])[:, 1]))
            mask *= float(_smooth((now - rest_gap) / (0.008 * fh)))
            if mask.max() <= 0.0:
                return
        xs = np.arange(x0, x1, dtype=np.float32)
        top = _contour_y(up, xs).astype(np.float32)
        gap = np.maximum(_contour_y(lo, xs).astype(np.float32) - top, 0.5)
        cx = float(up[0, 0] + up[-1, 0]) / 2
        half = max(abs(float(up[-1, 0] - up[0, 0])) / 2, 1.0)
        across = 1 - np.clip((xs - cx) / half, -1, 1) ** 2
        c = self.colours
        out = np.empty((rh, rw, 3), np.float32)
        _shade(out, top - y0, gap, across, np.float32(fh), c.cavity, c.tongue)
        for layers, affine in ((self.lower, mandible), (self.upper, skull)):
            for layer in layers:
                self._composite(out, layer, affine, x0, y0)
        grain, tile = 0.0, mask
        if self.grain > 0.3:
            # the photo's grain, a little less than over its skin (JPEG smooths dark areas)
            ox, oy = (index * 37) % 128, (index * 61) % 128
            if self._noise[oy:oy + rh, ox:ox + rw].shape == (rh, rw):
                grain, tile = 0.6 * self.grain, self._noise[oy:oy + rh, ox:ox + rw]
        _blend(frame[y0:y1, x0:x1], out, mask, tile, np.float32(grain))

    @staticmethod
    def _composite(out: np.ndarray, layer: _Layer, affine: np.ndarray, x0: int, y0: int) -> None:
        lx, ly = layer.box
        # the layer's pixels to the ROI's: portrait -> frame, then into the ROI
        m = np.array(affine, np.float64).copy()
        m[:, 2] += m[:, 0] * lx + m[:, 1] * ly - (x0, y0)
        warped = cv2.warpAffine(layer.rgba, m, (out.shape[1], out.shape[0]), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        a = warped[..., 3:4]
        out += (warped[..., :3] - out) * a
