"""The eyes: blinks that bring the lids' skin down over the eye, and small gaze shifts.

A blink is not a squeeze of the eye. The eyeball stays where it is and the upper lid
slides down over it (the lower lid comes up a little to meet it), so what a blinking
frame shows is lid skin with the lashes at its edge, never the iris pressed into a band.
It is done where the warp looks the portrait up (render.Warper's backward map): a frame
pixel that the warp sends to the portrait's eye region is sent on, in the portrait, to
where a closing lid would show it from, column by column across the eye:

- above the margin, the lid's skin band (from the top of the visible lid down to the
  lashes) stretches down by the lid's travel, and the band of lashes at the margin moves
  down by the travel unstretched: the person's own lashes at the new margin;
- between the new margins, the eye as it is (the iris covered where the lid has come,
  not moved), shifted by the gaze;
- below, the lower lid's skin band stretches up by its (smaller) travel.

On a deep-set eye the top of the visible lid is found on the portrait, column by column
(`lid_skin`): going up from the lid's brightest skin, where it darkens into the brow's hair,
at most `UPPER_BAND` above the margin. On deep-set eyes the brow comes down to a few
hundredths of the eye's width above the lashes, and FaceMesh draws its lower edge up in
the hair, so only the picture tells: a band reaching into the brow would pull its hair down
over the eye (a dark hairy band, not a lid). What stretches is then the lid's own skin.
Where the whole socket is in the brow's shadow (obama_speaking), that skin is itself
dark, so a shut lid would be too (a dark band): its shade is blended toward the skin under
the eye (lid_tone.py), by a weight `remap` gives each frame pixel of the shut lid's skin.

The lid's travel is the eye's opening times the closure (0 open .. 1 shut), `UPPER_SHARE`
of it by the upper lid, so a shut eye is skin from corner to corner and no glint is left.
The same function runs on numpy arrays (the numba path) and on torch tensors (the torch
path, all frames of a chunk at once): see `remap`.

Gaze: the eye's content between the lids moves by a few hundredths of the eye's width
(a bump that is 1 over the iris and 0 at the corners, so the corners stay put). The plan
(`eye_motion`) is seeded: blinks every 3-5 s, more often at the end of long phrases,
150-250 ms each; gaze held at the camera with short glances aside, jumps in one frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Optional

import cv2
import numpy as np

from . import face as F
from .lid_tone import lid_tone
from .prosody import PAUSE_LOUDNESS, phrase_ends

UPPER_SHARE = 0.82  # of the lids' travel done by the upper lid
UPPER_BAND = 0.24  # eye widths of lid skin above the margin that stretch over the eye, at most
MIN_BAND = 0.08  # eye widths of it at least (where the brow comes lower, a little of it comes along)
BROW_DARKER = 0.85  # the lid's skin ends where the picture falls below this share of its brightest
LASH_DARKER = 0.6  # on a deep-set eye, lashes and the fold: darker than this share of the lid's brightest
SHADOWED = 0.8  # lid skin over under-eye skin (luma) below which the lid is a deep-set eye's
LASH_BAND = 0.03  # eye widths of lashes just above the margin, moved unstretched
LASH_SKIP = 0.1  # eye widths above the margin where a shut lid's skin starts (above the lashes)
LOWER_BAND = 0.14  # eye widths of lower-lid skin that stretch up
LOWER_REACH = 0.035  # eye widths the eye reaches below FaceMesh's lower contour, mid-eye
_SAMPLES = 48  # margin positions tabulated across each eye
TONE_FADE = 0.14  # eye widths above the open eye's margin over which a shadowed lid's tone fades out
TONE_LASHES = 0.02  # eye widths above the lashes over which it fades into them
EDGE = 0.75  # pixels over which the source runs across from one part of the lids to the next

# Blink timing (seconds): closing, held shut, opening; and the gaps between blinks.
BLINK_CLOSE, BLINK_HOLD, BLINK_OPEN = 0.07, 0.04, 0.11
BLINK_MIN_GAP, BLINK_MAX_GAP = 1.8, 6.0
GAZE_ASIDE = 0.045  # eye widths: how far a glance aside moves the iris, at most


@dataclass(frozen=True)
class _Eye:
    """One eye's geometry in the portrait: origin, axes, width and its margins tabulated."""

    origin: np.ndarray  # (2,) the middle between the corners
    across: np.ndarray  # (2,) unit, image left to right along the eye
    down: np.ndarray  # (2,) unit, down the face
    width: float
    u0: float  # first tabulated position along `across`
    step: float
    upper: np.ndarray  # (_SAMPLES,) the upper margin's position along `down`
    lower: np.ndarray  # (_SAMPLES,)
    reach: np.ndarray  # (_SAMPLES,) how far above the margin the lid's skin goes (pixels)
    start: np.ndarray  # (_SAMPLES,) pixels above the margin where a shut lid's skin starts
    lend: np.ndarray  # (_SAMPLES,) along the eye to the column a shut lid's skin comes from (pixels)
    lift: np.ndarray  # (_SAMPLES,) that column's margin over this one's (pixels along `down`)
    tone: Optional[np.ndarray] = None  # (2, 3) a shadowed lid's [gain, offset] (lid_tone.py)
    toned: Optional[np.ndarray] = None  # (_SAMPLES,) how much of it each column takes


def _eye(upper_pts: np.ndarray, lower_pts: np.ndarray) -> _Eye:
    c0, c1 = upper_pts[0], upper_pts[-1]
    across = (c1 - c0) / max(float(np.linalg.norm(c1 - c0)), 1e-6)
    if across[0] < 0:
        across = -across
    down = np.array([-across[1], across[0]])
    origin = (c0 + c1) / 2
    width = float(np.linalg.norm(c1 - c0))

    def local(p):
        d = p - origin
        return d @ across, d @ down

    uu, vu = local(upper_pts)
    ul, vl = local(lower_pts)
    u0, u1 = float(min(uu.min(), ul.min())), float(max(uu.max(), ul.max()))
    grid = np.linspace(u0, u1, _SAMPLES)
    top = np.interp(grid, *_sorted(uu, vu))
    bottom = np.interp(grid, *_sorted(ul, vl))
    # FaceMesh draws the lower contour a little inside the lid's edge (on the iris's foot)
    bottom = bottom + LOWER_REACH * width * np.sin(np.linspace(0.0, math.pi, _SAMPLES))
    bottom = np.maximum(bottom, top)  # the lower margin is never above the upper one
    # the corners: both margins meet, so the lids have nowhere to travel there
    top[[0, -1]] = bottom[[0, -1]] = (top[[0, -1]] + bottom[[0, -1]]) / 2
    reach = np.full(_SAMPLES, UPPER_BAND * width, np.float32)
    start = np.full(_SAMPLES, LASH_SKIP * width, np.float32)
    return _Eye(origin, across, down, width, u0, (u1 - u0) / (_SAMPLES - 1),
                top.astype(np.float32), bottom.astype(np.float32), reach, start,
                np.zeros(_SAMPLES, np.float32), np.zeros(_SAMPLES, np.float32))


def lid_skin(grey: np.ndarray, e: _Eye) -> tuple:
    """(reach, start, lend, lift), each (_SAMPLES,) pixels: how far above eye e's upper
    margin the portrait `grey` (float32) shows the lid's skin, where a shut lid's skin
    starts, and the offsets to the column it comes from (see _Eye).

    A lid in the light (what shows above the lashes not much darker than the skin under
    the eye: `SHADOWED`) keeps e's (`UPPER_BAND`, `LASH_SKIP`): its brow or glasses' rim
    is above that. A deep-set eye's, in the brow's shadow: per column, up from the lid's
    brightest point (between the lashes and 0.2 eye widths) to where the picture falls
    below `BROW_DARKER` of it, smoothed across the eye, within `MIN_BAND` .. `UPPER_BAND`;
    its skin starts above the last pixel below the brightest that is darker than
    `LASH_DARKER` of it: thick lashes and the fold's shadow reach higher there,
    and stretched over the eye they would draw dark streaks down it; a column that shows
    no lid skin at all there (dark up to the brow) takes it from the nearest that does."""
    from scipy.ndimage import median_filter

    w = e.width
    depth = np.arange(0.04, UPPER_BAND + 1e-6, 0.01) * w  # rows of the profile, above the margin
    u = e.u0 + e.step * np.arange(_SAMPLES)

    def profile(v: np.ndarray) -> np.ndarray:
        x = (e.origin[0] + u[:, None] * e.across[0] + v * e.down[0]).astype(np.float32)
        y = (e.origin[1] + u[:, None] * e.across[1] + v * e.down[1]).astype(np.float32)
        return cv2.remap(grey, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    prof = profile(e.upper[:, None] - depth[None, :])
    reach = np.full(_SAMPLES, UPPER_BAND * w)
    found = np.zeros(_SAMPLES, bool)  # a lid's skin at least MIN_BAND deep
    clear = np.zeros(_SAMPLES)  # above the last dark pixel (lashes, the fold) below the brightest
    search = depth <= 0.2 * w  # the lid's skin is below this; higher up may be the brow already
    for j in range(_SAMPLES):
        p = prof[j]
        k = int(np.argmax(np.where(search, p, -1.0)))
        dark = np.nonzero(p[k:] < BROW_DARKER * p[k])[0]
        if len(dark):
            reach[j] = depth[k + int(dark[0])] - 0.5 * 0.01 * w
        found[j] = reach[j] >= MIN_BAND * w
        lashes = np.nonzero(p[:k] < LASH_DARKER * p[k])[0]
        clear[j] = depth[int(lashes[-1]) + 1] if len(lashes) else 0.0
    mid = slice(_SAMPLES // 4, 3 * _SAMPLES // 4)
    lid = float(np.median(prof[mid][:, (depth >= LASH_SKIP * w) & search]))
    under = float(np.median(profile(e.lower[:, None] + np.linspace(0.06, 0.2, 8)[None, :] * w)[mid]))
    if lid >= SHADOWED * under or not found.any():  # a lid in the light: as without the picture
        return e.reach, e.start, e.lend, e.lift
    reach = np.clip(median_filter(reach, size=7, mode="nearest"), MIN_BAND * w, UPPER_BAND * w)
    start = np.clip(median_filter(clear, size=5, mode="nearest"), np.minimum(0.6 * reach, LASH_SKIP * w),
                    reach - 0.03 * w)
    have = np.nonzero(found)[0]
    src = have[np.argmin(np.abs(np.arange(_SAMPLES)[:, None] - have[None, :]), axis=1)]
    return reach[src], start[src], (src - np.arange(_SAMPLES)) * e.step, e.upper[src] - e.upper


def _sorted(u: np.ndarray, v: np.ndarray) -> tuple:
    order = np.argsort(u)
    return u[order], v[order]


class EyeModel:
    """The two eyes of one portrait (468 rest landmarks), for closing lids and moving gaze.

    With the portrait (RGB) the lids' skin is measured on it (`lid_skin`); without, it is
    taken as `UPPER_BAND` deep."""

    def __init__(self, rest: np.ndarray, image: Optional[np.ndarray] = None):
        xy = np.asarray(rest, np.float64)[:, :2]
        self.eyes = [_eye(xy[list(up)], xy[list(lo)])
                     for up, lo in ((F.RIGHT_EYE_UPPER, F.RIGHT_EYE_LOWER), (F.LEFT_EYE_UPPER, F.LEFT_EYE_LOWER))]
        if image is not None:
            grey = cv2.GaussianBlur(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY), (0, 0), 0.7)
            grey = grey.astype(np.float32)
            eyes = []
            for e in self.eyes:
                skin = lid_skin(grey, e)
                e2 = replace(e, **{k: a.astype(np.float32) for k, a in zip(("reach", "start", "lend", "lift"), skin)})
                if skin[0] is not e.reach:  # measured: a deep-set eye's lid, in the shadow
                    shade = lid_tone(np.ascontiguousarray(image), e2, _SAMPLES)
                    if shade is not None:
                        e2 = replace(e2, tone=shade[0], toned=shade[1])
                eyes.append(e2)
            self.eyes = eyes

    def frame_box(self, k: int, dest: np.ndarray, shape: tuple) -> tuple:
        """(x0, y0, x1, y1) in a frame whose landmarks are `dest`: all that eye k's
        remap can reach (its lids' bands around the eye, with a margin)."""
        e = self.eyes[k]
        idx = (F.RIGHT_EYE if k == 0 else F.LEFT_EYE)
        p = np.asarray(dest, np.float64)[list(idx), :2]
        pad = (UPPER_BAND + 0.08) * e.width + 3
        x0 = int(math.floor(p[:, 0].min() - 0.1 * e.width - 2))
        x1 = int(math.ceil(p[:, 0].max() + 0.1 * e.width + 3))
        y0 = int(math.floor(p[:, 1].min() - pad))
        y1 = int(math.ceil(p[:, 1].max() + (LOWER_BAND + 0.08) * e.width + 4))
        return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)

    def remap_numpy(self, m: np.ndarray, roi: tuple, dest: np.ndarray, state: np.ndarray) -> list:
        """Send the eye pixels of one frame's backward map `m` (over `roi`, as
        render.Warper builds it) to where closed lids and the gaze show them from, in place.
        `state` is (closure, gaze across, gaze down), the gaze in eye widths. Returns the
        shades to blend into the rendered frame, per shadowed lid: (x0, y0, x1, y1, weight
        (y1 - y0, x1 - x0) float32, tone) for lid_tone.apply."""
        closure, gu, gv = (float(x) for x in state)
        tones: list = []
        if closure <= 0.0 and gu == 0.0 and gv == 0.0:
            return tones
        rx0, ry0, rx1, ry1 = roi
        for k, e in enumerate(self.eyes):
            x0, y0, x1, y1 = self.frame_box(k, dest, (ry1, rx1))
            x0, y0 = max(x0, rx0), max(y0, ry0)
            if x1 <= x0 or y1 <= y0:
                continue
            sub = m[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
            toned = e.tone is not None and closure > 0.0
            if closure > 0.0:
                out = remap(np, sub[..., 0], sub[..., 1], e, self.tables(k, np),
                            np.float32(closure), np.float32(gu), np.float32(gv), weight=toned)
            else:  # most frames: the eyes look about with the lids open
                out = gaze_only(sub[..., 0], sub[..., 1], e, self.tables(k, np), np.float32(gu), np.float32(gv))
            if toned:
                tones.append((x0, y0, x1, y1, out[2], e.tone))
            sub[..., 0] = out[0]
            sub[..., 1] = out[1]
        return tones

    def tables(self, k: int, xp: Any, device: Any = None) -> tuple:
        """Eye k's margins as arrays of the backend `xp` (numpy, or torch on `device`)."""
        key = (k, getattr(xp, "__name__", str(xp)), str(device))
        cache = self.__dict__.setdefault("_tables", {})
        if key not in cache:
            e = self.eyes[k]
            arrays = (e.upper, e.lower, e.reach, e.start, e.lend, e.lift,
                      np.zeros(_SAMPLES, np.float32) if e.toned is None else e.toned)
            cache[key] = arrays if xp is np else tuple(xp.from_numpy(a).to(device) for a in arrays)
        return cache[key]


def _eye_space(xp: Any, sx, sy, eye: _Eye, upper, lower) -> tuple:
    """Positions (sx, sy) in the eye's own axes: (u along the eye, v down from its axis),
    the tabulated margin they fall between (i, frac), and the margins there (top, bottom)."""
    ox, oy = float(eye.origin[0]), float(eye.origin[1])
    ax, ay = float(eye.across[0]), float(eye.across[1])
    nx, ny = float(eye.down[0]), float(eye.down[1])
    dx, dy = sx - ox, sy - oy
    u = dx * ax + dy * ay
    v = dx * nx + dy * ny
    f = xp.clip((u - eye.u0) * (1.0 / eye.step), 0.0, _SAMPLES - 1.0)
    i = xp.clip(xp.floor(f), 0.0, _SAMPLES - 2.0)
    frac = f - i
    i = i.long() if hasattr(i, "long") else i.astype(np.int64)
    top = upper[i] * (1.0 - frac) + upper[i + 1] * frac
    bottom = lower[i] * (1.0 - frac) + lower[i + 1] * frac
    return u, v, i, frac, top, bottom


def _gaze_bump(xp: Any, u, eye: _Eye):
    """How far the gaze moves what lies at u: 1 over the middle of the eye, 0 towards the corners."""
    s = xp.clip((u - eye.u0) * (1.0 / (eye.step * (_SAMPLES - 1))), 0.0, 1.0)
    a = xp.clip(s * (1.0 / 0.3), 0.0, 1.0)
    b = xp.clip((1.0 - s) * (1.0 / 0.3), 0.0, 1.0)
    return a * a * (3.0 - 2.0 * a) * (b * b * (3.0 - 2.0 * b))


def _back(xp: Any, hit, u2, v2, sx, sy, eye: _Eye) -> tuple:
    """(u2, v2) in the eye's axes back to image positions where `hit`, (sx, sy) elsewhere."""
    ox, oy = float(eye.origin[0]), float(eye.origin[1])
    ax, ay = float(eye.across[0]), float(eye.across[1])
    nx, ny = float(eye.down[0]), float(eye.down[1])
    return xp.where(hit, ox + u2 * ax + v2 * nx, sx), xp.where(hit, oy + u2 * ay + v2 * ny, sy)


def gaze_only(sx: np.ndarray, sy: np.ndarray, eye: _Eye, tables: tuple, gu, gv) -> tuple:
    """remap's positions (numpy) for open lids (closure 0): only what lies between the
    margins moves, by the gaze. The same arithmetic as remap's for those pixels; remap
    itself works out every lid band too, which at closure 0 leaves them where they are,
    at two to three times the cost (this runs in most frames)."""
    u, v, _, _, top, bottom = _eye_space(np, sx, sy, eye, tables[0], tables[1])
    bump = _gaze_bump(np, u, eye)
    u2, v2 = u - gu * eye.width * bump, v - gv * eye.width * bump
    hit = (v >= top) & (v < bottom) & (u >= eye.u0) & (u <= eye.u0 + eye.step * (_SAMPLES - 1))
    return _back(np, hit, u2, v2, sx, sy, eye)


def remap(xp: Any, sx, sy, eye: _Eye, tables: tuple, closure, gu, gv, weight: bool = False) -> tuple:
    """The portrait positions (sx, sy) (float32 arrays of numpy or torch: `xp`) moved to
    where a lid closed by `closure` and a gaze of (gu, gv) eye widths show them from; with
    `weight`, also how much of a shadowed lid's tone each pixel takes (lid_tone.apply): as
    shut as the lid is there, over the eye only (fading out above the open eye's margin,
    so the socket under the brow stays in its shadow) and fading into the lashes.

    closure, gu and gv broadcast against sx (scalars, or (B, 1, 1) for a chunk of frames).
    Elementwise float32 arithmetic only, in the same order on both backends."""
    upper, lower, reaches, starts, lends, lifts, toned = tables
    w = eye.width
    u, v, i, frac, top, bottom = _eye_space(xp, sx, sy, eye, upper, lower)
    reach = reaches[i] * (1.0 - frac) + reaches[i + 1] * frac  # the lid's skin above the margin
    gap = bottom - top
    d_up = closure * UPPER_SHARE * gap
    d_lo = closure * (1.0 - UPPER_SHARE) * gap
    start = starts[i] * (1.0 - frac) + starts[i + 1] * frac
    # the lid's skin comes from above the lashes that curl up off the margin: the closer
    # the lid is to shut, the higher (at 0 every position stays where it is), up to `start`
    # (and nothing where the lids meet at the corners, so the corners stay as they are)
    shut = closure * xp.clip(gap * (1.0 / (0.15 * w)), 0.0, 1.0)
    skip = LASH_BAND * w + (start - LASH_BAND * w) * shut
    lend = (lends[i] * (1.0 - frac) + lends[i + 1] * frac) * shut
    lift = (lifts[i] * (1.0 - frac) + lifts[i + 1] * frac) * shut
    band = reach - LASH_BAND * w  # where the lid skin goes, above the lashes
    skin_top = top - reach
    lash_top = top - LASH_BAND * w + d_up  # where the lashes' band starts now
    margin = top + d_up
    low_margin = bottom - d_lo
    low_band = LOWER_BAND * w
    bump = _gaze_bump(xp, u, eye)
    top_skin = (reach - skip) / (band + d_up)
    low_skin = low_band / (low_band + d_lo)
    shift_u, shift_v = gu * w * bump, gv * w * bump

    def source(q):
        """(u, v) in the portrait that frame position v = q of this column shows."""
        in_eye = (q >= margin) & (q < low_margin)
        lid = (q >= skin_top) & (q < lash_top)
        q2 = xp.where(lid, skin_top + (q - skin_top) * top_skin + lift, q)
        q2 = xp.where((q >= lash_top) & (q < margin), q - d_up, q2)
        q2 = xp.where(in_eye, q - shift_v, q2)
        q2 = xp.where((q >= low_margin) & (q < bottom + low_band), bottom + (q - low_margin) * low_skin, q2)
        return xp.where(in_eye, u - shift_u, xp.where(lid, u + lend, u)), q2

    u2, v2 = source(v)
    # elsewhere the positions stay exactly as they were
    hit = (v >= skin_top) & (v < bottom + low_band) & (u >= eye.u0) & (u <= eye.u0 + eye.step * (_SAMPLES - 1))
    out = _back(xp, hit, u2, v2, sx, sy, eye)
    if not weight:
        return out
    a = xp.clip((v - top) * (1.0 / (TONE_FADE * w)) + 1.0, 0.0, 1.0)
    b = xp.clip((lash_top - v) * (1.0 / (TONE_LASHES * w)), 0.0, 1.0)
    tone = shut * (toned[i] * (1.0 - frac) + toned[i + 1] * frac) * (a * a * (3.0 - 2.0 * a)) * (b * b * (3.0 - 2.0 * b))
    return out + (xp.where(hit & (v >= skin_top) & (v < lash_top), tone, 0.0 * tone),)


# --------------------------------------------------------------------------- the plan


def blink_times(energy: np.ndarray, fps: float, rng: np.random.Generator) -> list[float]:
    """Start times (s) of blinks: about every 3-5 s, and at phrase ends, likelier after
    long phrases (people blink at the boundaries of what they say)."""
    n = len(energy)
    total = n / fps

    def gap() -> float:
        return BLINK_MIN_GAP + min(float(rng.gamma(3.0, 0.65)), BLINK_MAX_GAP - BLINK_MIN_GAP)  # mean ~3.7 s

    last = -float(rng.uniform(1.5, 4.0))  # as if the last blink came before the clip
    due = last + gap()
    out = []
    for end, length in phrase_ends(energy, fps) + [(math.inf, 0.0)]:
        while due < end and due < total:
            out.append(due)
            last, due = due, due + gap()
        if end >= total:
            break
        if end - last >= 1.2 and rng.random() < min(0.9, 0.3 + 0.15 * length):
            t = end + float(rng.uniform(0.0, 0.2))
            out.append(t)
            last, due = t, t + gap()
    return [t for t in out if 0.0 <= t < total]


def blink_curve(n: int, fps: float, starts: list[float], rng: np.random.Generator) -> np.ndarray:
    """Lid closure per frame (0 open .. 1 shut) for blinks starting at `starts`: a fast
    close, a short hold and a slower opening, 150-250 ms in all; the frame nearest the
    middle of the hold is fully shut, so a blink never falls between two frames."""
    out = np.zeros(n, np.float32)
    times = np.arange(n) / fps
    for t0 in starts:
        scale = float(rng.uniform(0.85, 1.1))
        close, hold, opening = BLINK_CLOSE * scale, BLINK_HOLD, BLINK_OPEN * scale
        d = times - t0
        c = np.zeros(n)
        c = np.where((d >= 0) & (d < close), d / close, c)
        c = np.where((d >= close) & (d < close + hold), 1.0, c)
        c = np.where((d >= close + hold) & (d < close + hold + opening), 1.0 - (d - close - hold) / opening, c)
        peak = int(round((t0 + close + hold / 2) * fps))
        if 0 <= peak < n:
            c[peak] = 1.0
        out = np.maximum(out, c.astype(np.float32))
    return out


def gaze_track(n: int, fps: float, energy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) gaze offsets in eye widths (across, down): held, mostly at the camera, with
    glances aside now and then while talking (thinking of the next words) and at the
    camera while silent (listening); each change is a saccade, done within one frame."""
    out = np.zeros((n, 2), np.float32)
    i = int(rng.integers(0, max(1, int(1.5 * fps))))
    target = np.zeros(2)
    while i < n:
        talking = energy[min(i, n - 1)] > PAUSE_LOUDNESS
        hold = float(rng.gamma(2.0, 0.7 if talking else 0.5)) + 0.4
        j = min(n, i + max(1, int(round(hold * fps))))
        if talking:  # a pause ends the glance
            quiet = np.nonzero(energy[i:j] <= PAUSE_LOUDNESS)[0]
            j = i + max(1, int(quiet[0])) if len(quiet) else j
        out[i:j] = target
        i = j
        if not talking:
            target = np.zeros(2)  # listening: at the camera
        elif np.any(target) or rng.random() < 0.4:
            # back to the camera, or a glance aside
            target = np.zeros(2) if np.any(target) else np.array(
                [rng.choice((-1.0, 1.0)) * rng.uniform(0.4, 1.0) * GAZE_ASIDE, rng.normal(0.0, 0.012)])
        else:
            target = np.array([rng.normal(0.0, 0.01), rng.normal(0.0, 0.006)])  # a small correction
    return out


@dataclass
class EyeTrack:
    """Per frame: lid closure (0..1) and gaze (across, down) in eye widths."""

    closure: np.ndarray  # (n,)
    gaze: np.ndarray  # (n, 2)

    def state(self, i: int) -> np.ndarray:
        """(closure, gaze across, gaze down) of frame i, as float32."""
        return np.array([self.closure[i], self.gaze[i, 0], self.gaze[i, 1]], np.float32)


def eye_motion(energy: np.ndarray, fps: float, seed: int, *, blinks: bool = True, gaze: bool = True) -> EyeTrack:
    """The eyes' plan for a clip with loudness `energy` (0..1 per frame), seeded."""
    energy = np.asarray(energy, np.float32)
    n = len(energy)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xE7E5]))
    closure = blink_curve(n, fps, blink_times(energy, fps, rng), rng) if blinks else np.zeros(n, np.float32)
    looks = gaze_track(n, fps, energy, rng) if gaze else np.zeros((n, 2), np.float32)
    return EyeTrack(closure, looks)
