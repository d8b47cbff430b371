"""Draw a frame: warp the portrait so its mesh lands on a frame's landmarks, then paint the mouth.

The warp is piecewise affine over a Delaunay triangulation of the mesh points (the
moving features plus an even spread of the rest) and fixed anchors (a ring around the
face and the image border), so everything outside the ring stays exactly still and
only the face region is resampled.

Speed: the topology is fixed, so per frame only the triangles' affines change. They are
computed for all triangles at once; then one compiled pass (numba) scans the triangles
that can move, row by row, and writes each pixel's source position from its triangle's
affine: an exact piecewise-affine inverse map at full resolution, no iteration. The
image is resampled with one fixed-point cv2.remap over the face region.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numba
import numpy as np
from scipy.spatial import Delaunay

from . import face as F

_INNER = np.array(F.LIPS_INNER)
_UPPER_INNER = np.array(F.LIPS_INNER_UPPER)
_LOWER_INNER = np.array(F.LIPS_INNER_LOWER)

# Mouth interior colours (RGB).
_MOUTH_DARK = np.array([44, 16, 16], np.float32)
_MOUTH_RED = np.array([112, 42, 40], np.float32)
_TEETH = np.array([222, 216, 202], np.float32)
# where the gaps between the front teeth fall, from the middle (-1..1 corner to corner)
_TOOTH_EDGES = np.array([0.0, 0.24, -0.24, 0.43, -0.43, 0.6, -0.6], np.float32)


def even(n: float) -> int:
    """The nearest even integer >= 2 (H.264 in 4:2:0 needs even sizes)."""
    return max(2, int(round(n / 2.0)) * 2)


# Mesh points that carry the motion (lips, lids, brows, jaw line, nose, cheeks); the
# warp uses these plus an even spread of the others, which keeps the per-frame triangle
# count (and so the cost) down while every moving feature keeps its own vertices.
_WARP_CORE = sorted(set(
    F.LIPS_ALL + F.RIGHT_EYE_UPPER + F.RIGHT_EYE_LOWER + F.LEFT_EYE_UPPER + F.LEFT_EYE_LOWER
    + F.RIGHT_EYE_UPPER_RING + F.RIGHT_EYE_LOWER_RING + F.LEFT_EYE_UPPER_RING
    + F.LEFT_EYE_LOWER_RING + F.RIGHT_BROW + F.LEFT_BROW + F.FACE_OVAL + F.RIGHT_CHEEK
    + F.LEFT_CHEEK + F.NOSE_WINGS + (F.NOSE_TIP, F.NOSE_BRIDGE, F.FOREHEAD, F.CHIN)
))


def warp_vertices(rest: np.ndarray, total: int = 230) -> np.ndarray:
    """Indices of the mesh points the warp moves: the feature points, then farthest-point
    samples of the rest until `total` (deterministic for a given face)."""
    xy = np.asarray(rest, np.float64)[:, :2]
    chosen = list(_WARP_CORE)
    d = np.sqrt(((xy[:, None] - xy[None, chosen]) ** 2).sum(-1)).min(1)
    while len(chosen) < min(total, len(xy)):
        k = int(np.argmax(d))
        chosen.append(k)
        d = np.minimum(d, np.sqrt(((xy - xy[k]) ** 2).sum(-1)))
    return np.array(sorted(chosen), np.int32)


def _compiled(fn):
    """`fn` compiled by numba without the GIL (the encoder thread runs beside the render
    loop), cached on disk so a process loads it instead of compiling (about 1 s): in
    __pycache__, else under $NUMBA_CACHE_DIR or $XDG_CACHE_HOME. Where none of those can be
    written (a read-only image without a writable home) each process compiles it once."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)


@_compiled
def _scan_triangles(m: np.ndarray, x0: int, y0: int, tri: np.ndarray, aff: np.ndarray) -> None:
    """Write `aff[k]` applied to every pixel inside triangle `tri[k]` into the map `m`.

    `m` is (rh, rw, 2) float32 over pixels x0.., y0..; pixel (x, y) sits at integer
    coordinates. `tri` (K, 3, 2) are frame positions, `aff` (K, 6) maps a frame pixel to
    its source: (a0 x + a1 y + a2, a3 x + a4 y + a5). A pixel on an edge (within 1/1000 px)
    belongs to both triangles; they agree there, so the later one simply wins.
    """
    rh, rw = m.shape[0], m.shape[1]
    xmax, ymax = x0 + rw - 1, y0 + rh - 1
    ea = np.empty(3)
    eb = np.empty(3)
    ec = np.empty(3)
    for k in range(tri.shape[0]):
        ax, ay = float(tri[k, 0, 0]), float(tri[k, 0, 1])
        bx, by = float(tri[k, 1, 0]), float(tri[k, 1, 1])
        cx, cy = float(tri[k, 2, 0]), float(tri[k, 2, 1])
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0.0:
            continue
        s = 1.0 if area > 0.0 else -1.0
        # edge e from vertex e to vertex e+1: inside where ea*x + eb*y + ec >= 0
        for e in range(3):
            if e == 0:
                px, py, qx, qy = ax, ay, bx, by
            elif e == 1:
                px, py, qx, qy = bx, by, cx, cy
            else:
                px, py, qx, qy = cx, cy, ax, ay
            dx, dy = qx - px, qy - py
            ea[e] = -s * dy
            eb[e] = s * dx
            ec[e] = s * (dy * px - dx * py) + 1e-3 * math.sqrt(dx * dx + dy * dy)
        ylo = max(int(math.ceil(min(ay, by, cy))), y0)
        yhi = min(int(math.floor(max(ay, by, cy))), ymax)
        a0, a1, a2 = aff[k, 0], aff[k, 1], aff[k, 2]
        a3, a4, a5 = aff[k, 3], aff[k, 4], aff[k, 5]
        for y in range(ylo, yhi + 1):
            xl, xr = float(x0), float(xmax)
            empty = False
            for e in range(3):
                c = eb[e] * y + ec[e]
                if ea[e] > 0.0:
                    xl = max(xl, -c / ea[e])
                elif ea[e] < 0.0:
                    xr = min(xr, -c / ea[e])
                elif c < 0.0:
                    empty = True
            if empty:
                continue
            row = m[y - y0]
            sx, sy = a1 * y + a2, a4 * y + a5
            for x in range(int(math.ceil(xl)), int(math.floor(xr)) + 1):
                row[x - x0, 0] = a0 * x + sx
                row[x - x0, 1] = a3 * x + sy


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the warp's scan now, so the first frame of the
    first job does not wait for it."""
    _scan_triangles(np.zeros((2, 2, 2), np.float32), 0, 0, np.zeros((1, 3, 2), np.float32),
                    np.zeros((1, 6), np.float32))


class Warper:
    """Warps one fixed image by moving its mesh points; build once per portrait (or per
    video frame when re-dubbing) and call `warp` once per output frame.

    Per frame, each triangle's affine back to the rest image is computed (vectorised),
    and the triangles that can move are scanned into a full-resolution map of source
    positions over the face region: an exact piecewise-affine inverse, no iteration.
    """

    def __init__(self, image: np.ndarray, rest: np.ndarray, ring_scale: float = 0.25,
                 vertices: Optional[np.ndarray] = None):
        self.image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        self.h, self.w = h, w
        self.rest_full = np.asarray(rest, np.float32)[:, :2]
        self.vert = warp_vertices(self.rest_full) if vertices is None else np.asarray(vertices)
        rest = self.rest_full[self.vert]
        self.n_mesh = len(rest)

        anchors = self._anchors(rest, w, h, ring_scale)
        pts = np.concatenate([rest, anchors]).astype(np.float64)
        tri = Delaunay(pts)
        self.simplices = tri.simplices.astype(np.int32)
        self.neighbors = tri.neighbors.astype(np.int32)
        self.all_rest = pts.astype(np.float32)
        r = self.all_rest[self.simplices]
        self._rest_det = np.abs((r[:, 0, 0] - r[:, 2, 0]) * (r[:, 1, 1] - r[:, 2, 1])
                                - (r[:, 1, 0] - r[:, 2, 0]) * (r[:, 0, 1] - r[:, 2, 1]))

        # ROI: every triangle with a moving (mesh) vertex. Together they cover a region
        # whose outline is made of anchors, the same in every frame; outside it nothing
        # moves, and inside it every pixel is written again each frame.
        moving = (self.simplices < self.n_mesh).any(1)
        self.moving = np.nonzero(moving)[0].astype(np.int32)
        corners = pts[self.simplices[moving]].reshape(-1, 2)
        x0, y0 = np.floor(corners.min(0)).astype(int) - 1
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        x0, y0 = int(max(0, x0)), int(max(0, y0))
        x1, y1 = int(min(w, x1)), int(min(h, y1))
        self.roi = (x0, y0, x1, y1)
        ix = np.arange(x0, x1, dtype=np.float32)
        iy = np.arange(y0, y1, dtype=np.float32)
        self.ident = np.ascontiguousarray(np.stack(np.meshgrid(ix, iy), -1))
        self._map = np.empty_like(self.ident)

    @staticmethod
    def _anchors(rest: np.ndarray, w: int, h: int, ring_scale: float) -> np.ndarray:
        lo, hi = rest.min(0), rest.max(0)
        size = float(max(hi - lo))
        centre = (lo + hi) / 2
        # an ellipse around the face: hair, shoulders and background beyond it stay put
        radii = (hi - lo) / 2 + ring_scale * size
        ang = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        ring = centre + np.column_stack([np.cos(ang) * radii[0], np.sin(ang) * radii[1]])
        border = []
        for t in np.linspace(0, 1, 9):
            border += [(t * (w - 1), 0), (t * (w - 1), h - 1), (0, t * (h - 1)), (w - 1, t * (h - 1))]
        border = np.unique(np.array(border, np.float64), axis=0)
        ring = ring[(ring[:, 0] > 1) & (ring[:, 0] < w - 2) & (ring[:, 1] > 1) & (ring[:, 1] < h - 2)]
        cand = np.concatenate([ring, border])
        # anchors crowding a mesh point make slivers that tear under motion: keep a margin
        # (image corners always stay, they close the hull)
        d = np.sqrt(((cand[:, None, :] - rest[None, :, :]) ** 2).sum(-1)).min(1)
        corner = np.isin(cand[:, 0], (0, w - 1)) & np.isin(cand[:, 1], (0, h - 1))
        return cand[(d > 0.08 * size) | corner]

    def clamp(self, dest: np.ndarray) -> np.ndarray:
        """Limit moves towards the image border to half the distance, so nothing folds there."""
        dest = np.asarray(dest, np.float32)[:, :2]
        r = self.rest_full
        lim_lo = -0.5 * np.maximum(r, 0)
        lim_hi = 0.5 * np.maximum(np.array([self.w - 1, self.h - 1], np.float32) - r, 0)
        return r + np.clip(dest - r, lim_lo, lim_hi)

    def _triangle_affines(self, dest: np.ndarray) -> tuple:
        """Per triangle, the affine (T, 6) from frame pixels back to rest pixels, and the
        frame vertex positions (T, 3, 2)."""
        pts = self.all_rest.copy()
        pts[:self.n_mesh] = dest[self.vert]
        v = pts[self.simplices]  # (T, 3, 2) frame positions
        r = self.all_rest[self.simplices]  # (T, 3, 2) rest positions
        e0 = v[:, 0] - v[:, 2]
        e1 = v[:, 1] - v[:, 2]
        det = e0[:, 0] * e1[:, 1] - e1[:, 0] * e0[:, 1]
        # A triangle squeezed to a sliver (lips or lids shut) has a huge inverse: a pixel
        # just inside it would sample far away. It takes a neighbour's affine instead,
        # which agrees with it along their shared edge and so is sane across the sliver.
        bad = np.abs(det) < np.maximum(1e-3, 0.05 * self._rest_det)
        inv = 1.0 / np.where(bad, 1.0, det)
        # barycentrics l0, l1 as affine functions of (x, y): l = b[0] * x + b[1] * y + c
        b0 = np.stack([e1[:, 1] * inv, -e1[:, 0] * inv], 1)
        b1 = np.stack([-e0[:, 1] * inv, e0[:, 0] * inv], 1)
        c0 = -(b0 * v[:, 2]).sum(1)
        c1 = -(b1 * v[:, 2]).sum(1)
        f0 = r[:, 0] - r[:, 2]
        f1 = r[:, 1] - r[:, 2]
        aff = np.empty((len(v), 6), np.float32)
        for row in range(2):
            aff[:, 3 * row + 0] = f0[:, row] * b0[:, 0] + f1[:, row] * b1[:, 0]
            aff[:, 3 * row + 1] = f0[:, row] * b0[:, 1] + f1[:, row] * b1[:, 1]
            aff[:, 3 * row + 2] = r[:, 2, row] + f0[:, row] * c0 + f1[:, row] * c1
        if bad.any():
            self._borrow_affines(aff, bad)
        return aff, v

    def _borrow_affines(self, aff: np.ndarray, bad: np.ndarray) -> None:
        """Give each collapsed triangle the affine of a sound neighbour (a few rounds for
        runs of collapsed ones), in place; any left without one keep still (identity)."""
        idx = np.nonzero(bad)[0]
        sound = ~bad
        for _ in range(4):
            nb = self.neighbors[idx]
            ok = (nb >= 0) & sound[np.maximum(nb, 0)]
            has = ok.any(1)
            if has.any():
                pick = nb[np.arange(len(idx)), ok.argmax(1)][has]
                aff[idx[has]] = aff[pick]
                sound[idx[has]] = True
            idx = idx[~has]
            if not len(idx) or not has.any():
                break
        aff[idx] = (1, 0, 0, 0, 1, 0)

    def backward_map(self, dest: np.ndarray) -> np.ndarray:
        """Full-res CV_32FC2 map over the ROI taking output pixels to source pixels.

        `dest` holds all 468 mesh points of the frame (only the warp vertices are used).
        The map is a buffer of this Warper, valid until the next call.
        """
        aff, v = self._triangle_affines(np.asarray(dest, np.float32)[:, :2])
        m = self._map
        # identity first: a pixel no triangle claims (only where the mesh folded) stays put
        np.copyto(m, self.ident)
        mv = self.moving
        _scan_triangles(m, self.roi[0], self.roi[1], np.ascontiguousarray(v[mv]), np.ascontiguousarray(aff[mv]))
        return m

    def _resample(self, m: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
        x0, y0, x1, y1 = self.roi
        if out is None:
            out = self.image.copy()
        else:
            np.copyto(out, self.image)
        # fixed-point maps: the conversion plus the integer remap beat a float remap
        m1, m2 = cv2.convertMaps(m, None, cv2.CV_16SC2)
        out[y0:y1, x0:x1] = cv2.remap(self.image, m1, m2, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
        return out

    def warp_with_mask(self, dest: np.ndarray, min_move: float = 0.5) -> tuple:
        """The warped frame and a uint8 mask over the ROI: 255 where pixels moved > `min_move` px."""
        m = self.backward_map(dest)
        out = self._resample(m, None)
        d = cv2.subtract(m, self.ident)
        moved = (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) > min_move * min_move
        return out, moved.astype(np.uint8) * 255

    def warp(self, dest: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The image warped so the rest mesh lands on `dest` (468x2); a new frame or `out`."""
        return self._resample(self.backward_map(dest), out)


def _poly_mask(polygon: np.ndarray, x0: int, y0: int, rw: int, rh: int) -> np.ndarray:
    """Anti-aliased float mask (0..1) of a polygon in a (rh, rw) patch at (x0, y0)."""
    m = np.zeros((rh, rw), np.uint8)
    p = np.round((np.asarray(polygon, np.float32) - (x0, y0)) * 4).astype(np.int32)
    cv2.fillPoly(m, [p], 255, lineType=cv2.LINE_AA, shift=2)
    return m.astype(np.float32) * (1.0 / 255.0)


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def paint_mouth(frame: np.ndarray, pts: np.ndarray, extra_open_px: float, face_height: float) -> None:
    """Paint a dark mouth interior and teeth inside the inner-lip polygon, in place.

    `extra_open_px` is how much further apart the lips are than in the source picture;
    nothing is painted at 0, so a closed mouth and the portrait's own mouth stay as they
    were. The look ramps in over the first ~1 % of the face height of opening.
    """
    ramp = 0.012 * face_height
    if extra_open_px <= 0.05 * ramp:
        return
    alpha = float(_smooth(np.float32(extra_open_px / ramp)))
    pts = np.asarray(pts, np.float32)
    poly = pts[_INNER, :2]
    h, w = frame.shape[:2]
    x0 = max(0, int(np.floor(poly[:, 0].min())) - 3)
    y0 = max(0, int(np.floor(poly[:, 1].min())) - 3)
    x1 = min(w, int(np.ceil(poly[:, 0].max())) + 4)
    y1 = min(h, int(np.ceil(poly[:, 1].max())) + 4)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return
    rw, rh = x1 - x0, y1 - y0
    mask = _poly_mask(poly, x0, y0, rw, rh)
    if mask.max() <= 0:
        return
    mask = cv2.GaussianBlur(mask, (3, 3), 0.7)

    upper = pts[_UPPER_INNER, :2]
    lower = pts[_LOWER_INNER, :2]
    gap = _lip_gap(upper, lower)
    down = np.array([0.0, 1.0], np.float32)
    cx = float(upper[0, 0] + upper[-1, 0]) / 2
    half = max(abs(float(upper[-1, 0] - upper[0, 0])) / 2, 1.0)
    xs = (np.arange(rw, dtype=np.float32) + np.float32(x0 - cx)) / np.float32(half)  # -1..1 corner to corner
    ys = np.arange(rh, dtype=np.float32) + np.float32(y0)

    # (float32 throughout and blends in place: this runs on most frames of a video)
    # interior: dark, warmer towards the tongue near the lower lip
    top = np.interp(np.arange(rw) + x0, upper[:, 0], upper[:, 1]).astype(np.float32) \
        if upper[0, 0] < upper[-1, 0] else np.full(rw, upper[:, 1].mean(), np.float32)
    depth = (ys[:, None] - top[None, :]) * np.float32(1.0 / max(gap, 1.0))
    warm = _smooth((depth - np.float32(0.45)) * np.float32(2.0))[..., None]
    colour = _MOUTH_DARK + warm * (_MOUTH_RED - _MOUTH_DARK)

    # upper teeth hang from the upper lip; only the front ones show, so they fade out
    # well before the corners, and they are darker where they curve away
    t_up = min(0.42 * gap, 0.04 * face_height)
    if t_up >= 0.8:
        band = _poly_mask(np.concatenate([upper, upper[::-1] + down * t_up]), x0, y0, rw, rh)
        across = _smooth((np.float32(0.85) - np.abs(xs)) * np.float32(1 / 0.35))[None, :]
        # faint gaps between the front teeth (incisors, laterals, canines, premolars)
        gaps = np.exp(-(((xs[None, :] - _TOOTH_EDGES[:, None]) * np.float32(half / 0.7)) ** 2)).max(0)
        shade = np.clip(1.0 - 0.35 * xs * xs, 0.5, 1.0) * (1.0 - 0.1 * gaps)
        tu = (cv2.GaussianBlur(band, (3, 3), 0.7) * across)[..., None]
        tooth = shade[None, :, None] * _TEETH - colour
        tooth *= tu
        colour += tooth
    # a little of the lower teeth in the middle on wide openings
    t_lo = min(0.15 * gap, 0.015 * face_height)
    if t_lo >= 0.8:
        band = _poly_mask(np.concatenate([lower, lower[::-1] - down * t_lo]), x0, y0, rw, rh)
        across = _smooth((np.float32(0.5) - np.abs(xs)) * np.float32(1 / 0.3))[None, :]
        tl = (cv2.GaussianBlur(band, (3, 3), 0.7) * (across * np.float32(0.55)))[..., None]
        lower_teeth = _TEETH * np.float32(0.8) - colour
        lower_teeth *= tl
        colour += lower_teeth

    roi = frame[y0:y1, x0:x1]
    colour -= roi
    colour *= (mask * np.float32(alpha))[..., None]
    colour += roi
    np.clip(colour, 0, 255, out=colour)
    roi[...] = colour


def _lip_gap(upper: np.ndarray, lower: np.ndarray) -> float:
    """How far apart the inner lips are in the middle of the mouth (median of 5 pairs)."""
    d = lower[3:8] - upper[3:8]
    return float(np.sort(np.hypot(d[:, 0], d[:, 1]))[2])


def paint_lip_seam(frame: np.ndarray, pts: np.ndarray, squeezed_px: float, face_height: float) -> None:
    """Where the warp shut lips that were apart in the source, clean up the closed mouth,
    in place: pixels along the closed lips that do not look like lip (teeth or mouth
    interior squeezed to a line, or left over from an opening FaceMesh drew a little
    small) are inpainted from the lips around them, and a soft seam is drawn."""
    ramp = 0.01 * face_height
    if squeezed_px <= 0.1 * ramp:
        return
    pts = np.asarray(pts, np.float32)
    upper = pts[_UPPER_INNER, :2]
    lower = pts[_LOWER_INNER, :2]
    # lips that are still apart show their own opening, not a seam
    gap = _lip_gap(upper, lower)
    alpha = float(_smooth(np.float32(squeezed_px / ramp)) * _smooth(np.float32(1.0 - gap / (1.5 * ramp))))
    if alpha <= 0.01:
        return
    seam = (upper + lower) / 2
    # reach a little past the corners, where leftovers of a wide opening hide
    ext = 0.12 * (seam[-1] - seam[0])
    seam = np.concatenate([seam[:1] - ext, seam, seam[-1:] + ext])
    h, w = frame.shape[:2]
    reach = max(2.0, 0.03 * face_height)
    pad = int(np.ceil(reach)) + 4
    x0 = max(0, int(np.floor(seam[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(seam[:, 1].min())) - pad)
    x1 = min(w, int(np.ceil(seam[:, 0].max())) + pad)
    y1 = min(h, int(np.ceil(seam[:, 1].max())) + pad)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    rw, rh = x1 - x0, y1 - y0
    roi = np.ascontiguousarray(frame[y0:y1, x0:x1])
    # the lips' own colour, sampled half way between the inner and outer contours
    outer_lo = pts[list(F.LIPS_OUTER_LOWER), :2]
    outer_up = pts[list(F.LIPS_OUTER_UPPER), :2]
    samples = np.concatenate([(outer_lo[2:-2] + lower[2:-2]) / 2, (outer_up[2:-2] + upper[2:-2]) / 2])
    sx = np.clip(np.round(samples[:, 0]).astype(int), 0, w - 1)
    sy = np.clip(np.round(samples[:, 1]).astype(int), 0, h - 1)
    lip = np.median(frame[sy, sx].astype(np.float32), axis=0)
    lip_y = float(lip @ np.array([0.299, 0.587, 0.114], np.float32))

    # a band along the closed lips, narrowing to the corners
    up = np.array([0.0, -1.0], np.float32)
    taper = np.sin(np.linspace(0, np.pi, len(seam)))[:, None] * 0.5 + 0.5
    band_poly = np.concatenate([seam + up * reach * taper, (seam - up * reach * taper)[::-1]])
    band = _poly_mask(band_poly, x0, y0, rw, rh) > 0.5
    luma = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY).astype(np.float32)
    odd = band & ((luma < 0.62 * lip_y) | (luma > lip_y + 0.45 * (255.0 - lip_y)))
    fixed = roi
    if odd.any():
        fixed = cv2.inpaint(roi, cv2.dilate(odd.astype(np.uint8) * 255, np.ones((5, 5), np.uint8)),
                            3, cv2.INPAINT_TELEA)
    # a thin, soft, slightly darker line where the lips meet, fading at the corners
    m = np.zeros((rh, rw), np.uint8)
    p = np.round((seam - (x0, y0)) * 4).astype(np.int32)
    thick = max(1, int(round(0.005 * face_height)))
    cv2.polylines(m, [p], False, 255, thickness=thick, lineType=cv2.LINE_AA, shift=2)
    m = cv2.GaussianBlur(m.astype(np.float32) * (1.0 / 255.0), (3, 3), 0.8)
    xs = (np.arange(rw, dtype=np.float32) + x0 - (seam[0, 0] + seam[-1, 0]) / 2)
    xs /= max(abs(float(seam[-1, 0] - seam[0, 0])) / 2, 1.0)
    fade = _smooth((1.0 - np.abs(xs)) / 0.3)[None, :]
    out = fixed.astype(np.float32)
    a_line = (m * fade * 0.5)[..., None]
    out = out * (1 - a_line) + (lip * 0.6)[None, None] * a_line
    out = roi.astype(np.float32) * (1 - alpha) + out * alpha
    frame[y0:y1, x0:x1] = np.clip(out, 0, 255).astype(np.uint8)


def fit_size(src_w: int, src_h: int, width: Optional[int], height: Optional[int],
             min_resolution: int) -> tuple:
    """Output size: as given (rounded to even), or the source aspect with the shorter side
    at `min_resolution` when neither is given, or the other side by aspect when one is."""
    if width and height:
        return even(width), even(height)
    if width:
        return even(width), even(width * src_h / src_w)
    if height:
        return even(height * src_w / src_h), even(height)
    scale = min_resolution / min(src_w, src_h)
    return even(src_w * scale), even(src_h * scale)


def face_crop_box(pts: np.ndarray, img_w: int, img_h: int, expand_ratio: float,
                  aspect: float = 1.0) -> tuple:
    """A crop (x0, y0, x1, y1) around the face mesh grown by `expand_ratio` on each side,
    of the given width/height aspect, moved (and if need be shrunk) to fit in the image."""
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    cx, cy = (lo + hi) / 2
    side = float(max(hi - lo)) * (1.0 + 2.0 * expand_ratio)
    cw, ch = side * math.sqrt(aspect), side / math.sqrt(aspect)
    scale = min(1.0, img_w / cw, img_h / ch)
    cw, ch = cw * scale, ch * scale
    x0 = min(max(0.0, cx - cw / 2), img_w - cw)
    y0 = min(max(0.0, cy - ch / 2), img_h - ch)
    return int(round(x0)), int(round(y0)), int(round(x0 + cw)), int(round(y0 + ch))
