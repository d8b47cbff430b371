"""Warp the portrait so its mesh lands on a frame's landmarks (mouth.py draws the mouth's inside).

The warp is piecewise affine over a Delaunay triangulation of the mesh points (the
moving features plus an even spread of the rest) and fixed anchors (a ring around the
face and the image border), so everything outside the ring stays exactly still and
only the face region is resampled. Lips that close further than the picture has them
cover what was between them with their own texture, never the teeth behind.

Speed: the topology is fixed, so per frame only the triangles' affines change. One compiled
pass (numba) works them out for all triangles; another scans the triangles
that can move, row by row, and writes each pixel's source position from its triangle's
affine: an exact piecewise-affine inverse map at full resolution, no iteration. The
image is resampled with fixed-point cv2.remaps over the face region: its smooth part
interpolated, its finest detail taken from the nearest source pixel, so a face that
moves by a fraction of a pixel keeps the detail the still background keeps.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np
from scipy.spatial import Delaunay

from . import anchors as A
from . import face as F
from . import lid_tone
from .eyes import EyeModel
from .jit import compiled

# Detail finer than this blur (pixels) is carried through the warp from the nearest source pixel.
DETAIL_SIGMA = 2.0


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


@compiled
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


@compiled
def _affines(pts: np.ndarray, rest: np.ndarray, simplices: np.ndarray, rest_det: np.ndarray,
             aff: np.ndarray, v: np.ndarray, bad: np.ndarray) -> None:
    """Per triangle k, the affine `aff[k]` (a0..a5, see _scan_triangles) taking its frame
    pixels (`pts`, all warp points in the frame) back to its rest pixels (`rest`), its frame
    vertices into `v[k]`, and `bad[k]` where it has collapsed (|det| < max(1e-3, 5 % of
    its rest `rest_det`)); a collapsed triangle's affine is left for the caller to borrow."""
    for k in range(simplices.shape[0]):
        i0, i1, i2 = simplices[k, 0], simplices[k, 1], simplices[k, 2]
        x0, y0 = np.float64(pts[i0, 0]), np.float64(pts[i0, 1])
        x1, y1 = np.float64(pts[i1, 0]), np.float64(pts[i1, 1])
        x2, y2 = np.float64(pts[i2, 0]), np.float64(pts[i2, 1])
        v[k, 0, 0], v[k, 0, 1] = pts[i0, 0], pts[i0, 1]
        v[k, 1, 0], v[k, 1, 1] = pts[i1, 0], pts[i1, 1]
        v[k, 2, 0], v[k, 2, 1] = pts[i2, 0], pts[i2, 1]
        e0x, e0y = x0 - x2, y0 - y2
        e1x, e1y = x1 - x2, y1 - y2
        det = e0x * e1y - e1x * e0y
        if abs(det) < max(1e-3, 0.05 * rest_det[k]):
            bad[k] = True
            continue
        bad[k] = False
        inv = 1.0 / det
        # barycentrics l0, l1 as affine functions of (x, y): l = b[0] * x + b[1] * y + c
        b00, b01 = e1y * inv, -e1x * inv
        b10, b11 = -e0y * inv, e0x * inv
        c0 = -(b00 * x2 + b01 * y2)
        c1 = -(b10 * x2 + b11 * y2)
        for row in range(2):
            r2 = np.float64(rest[i2, row])
            f0 = rest[i0, row] - r2
            f1 = rest[i1, row] - r2
            aff[k, 3 * row + 0] = f0 * b00 + f1 * b10
            aff[k, 3 * row + 1] = f0 * b01 + f1 * b11
            aff[k, 3 * row + 2] = r2 + f0 * c0 + f1 * c1


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the warp's kernels now, so the first frame of
    the first job does not wait for them."""
    _scan_triangles(np.zeros((2, 2, 2), np.float32), 0, 0, np.zeros((1, 3, 2), np.float32),
                    np.zeros((1, 6), np.float32))
    _affines(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32), np.zeros((1, 3), np.int32),
             np.zeros(1, np.float32), np.zeros((1, 6), np.float32), np.zeros((1, 3, 2), np.float32), np.zeros(1, bool))


class Warper:
    """Warps one fixed image by moving its mesh points; build once per portrait (or per
    video frame when re-dubbing) and call `warp` once per output frame.

    Per frame, each triangle's affine back to the rest image is computed (vectorised),
    and the triangles that can move are scanned into a full-resolution map of source
    positions over the face region: an exact piecewise-affine inverse, no iteration.
    """

    def __init__(self, image: np.ndarray, rest: np.ndarray, ring_scale: float = 0.25,
                 vertices: Optional[np.ndarray] = None, head_ring: bool = False, eyes: Optional[EyeModel] = None):
        self.image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        # the picture split into its smooth part and its fine detail (see _resample), both
        # uint8 (remaps of uint8 are fast): the detail around 128, the smooth part kept
        # within 127 of the picture so that the detail never clips and the two add up to
        # the picture exactly
        img16 = self.image.astype(np.int16)
        smooth = np.clip(cv2.GaussianBlur(self.image, (0, 0), DETAIL_SIGMA).astype(np.int16), img16 - 127, img16 + 128)
        self._smooth = smooth.astype(np.uint8)
        self._fine = (img16 - smooth + 128).astype(np.uint8)
        self.h, self.w = h, w
        mesh = np.asarray(rest, np.float32)[:, :2]
        self.eyes = eyes
        vert = warp_vertices(mesh) if vertices is None else np.asarray(vertices)
        # the head's ring (hair, ears) moves with the head: extra vertices after the mesh's
        self.ring, fixed = A.head_ring(mesh, w, h, ring_scale) if head_ring else (np.zeros((0, 2), np.float32), None)
        self.rest_full = np.concatenate([mesh, self.ring]).astype(np.float32)
        self.vert = np.concatenate([vert, np.arange(len(mesh), len(self.rest_full))]).astype(np.int32)
        rest = self.rest_full[self.vert]
        self.n_mesh = len(rest)

        anchors = A.fixed_anchors(mesh[vert], w, h, ring_scale) if fixed is None else fixed
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
        self._guard = self._opening_guard()
        self._tones: list = []  # this frame's shadowed lids' shades (EyeModel.remap_numpy), for _resample

    def _opening_guard(self) -> Optional[tuple]:
        """Where the picture's mouth is open: its box, which pixels of the box lie in the
        opening, and for each of those the nearest pixel of lip.

        Lips that close more than the picture has them stretch over what was between them;
        a lip pixel must then not sample teeth or shadow (it would show as white or dark
        slivers along the seam), but the lip's own edge. None when the mouth is shut."""
        poly = self.rest_full[list(F.LIPS_INNER)]
        gap = np.median((self.rest_full[list(F.LIPS_INNER_LOWER)] - self.rest_full[list(F.LIPS_INNER_UPPER)])[3:8, 1])
        if gap < 1.0:
            return None
        x0, y0 = np.floor(poly.min(0)).astype(int) - 4
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 5
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(self.w, x1), min(self.h, y1)
        inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(inside, [np.round((poly - (x0, y0)) * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
        _, labels = cv2.distanceTransformWithLabels(inside, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
        outside = np.nonzero(inside == 0)
        # labels number the zero (lip) pixels in raster order, from 1
        order = np.lexsort((outside[1], outside[0]))
        ly, lx = outside[0][order], outside[1][order]
        lab = labels - 1
        near = np.stack([lx[lab] + x0, ly[lab] + y0], -1).astype(np.float32)
        return (x0, y0, x1, y1), inside.astype(bool), near, float(gap)

    def frame_points(self, dest: np.ndarray, head: Optional[np.ndarray] = None) -> np.ndarray:
        """A frame's warp points: its 468 landmarks, then the head's ring moved by `head`
        (the 2x3 affine of the head's motion; still without), clamped (see clamp)."""
        dest = np.asarray(dest, np.float32)[:, :2]
        if len(self.ring):
            ring = self.ring if head is None else self.ring @ np.asarray(head, np.float32)[:, :2].T + head[:, 2]
            dest = np.concatenate([dest[:len(self.rest_full) - len(self.ring)], ring.astype(np.float32)])
        return self.clamp(dest)

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
        t = len(self.simplices)
        aff, v, bad = np.empty((t, 6), np.float32), np.empty((t, 3, 2), np.float32), np.empty(t, bool)
        # A triangle squeezed to a sliver (lips or lids shut) has a huge inverse: a pixel
        # just inside it would sample far away. It takes a neighbour's affine instead,
        # which agrees with it along their shared edge and so is sane across the sliver.
        _affines(pts, self.all_rest, self.simplices, self._rest_det, aff, v, bad)
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

    def backward_map(self, dest: np.ndarray, eyes: Optional[np.ndarray] = None) -> np.ndarray:
        """Full-res CV_32FC2 map over the ROI taking output pixels to source pixels.

        `dest` holds all 468 mesh points of the frame (then the head's ring, when this
        Warper has one: frame_points); only the warp vertices are used. `eyes` is the
        frame's (closure, gaze across, gaze down) for the EyeModel (eyes.py).
        The map is a buffer of this Warper, valid until the next call.
        """
        aff, v = self._triangle_affines(np.asarray(dest, np.float32)[:, :2])
        self._tones = []
        m = self._map
        # identity first: a pixel no triangle claims (only where the mesh folded) stays put
        np.copyto(m, self.ident)
        mv = self.moving
        _scan_triangles(m, self.roi[0], self.roi[1], np.ascontiguousarray(v[mv]), np.ascontiguousarray(aff[mv]))
        if self._guard is not None:
            self._keep_lips_off_the_opening(m, np.asarray(dest, np.float32)[:, :2])
        if self.eyes is not None and eyes is not None:
            self._tones = self.eyes.remap_numpy(m, self.roi, dest, eyes)
        return m

    def _keep_lips_off_the_opening(self, m: np.ndarray, dest: np.ndarray) -> None:
        """Outside the frame's own opening, send pixels that would sample the picture's
        opening to the nearest lip pixel instead (see _opening_guard), in place."""
        (gx0, gy0, gx1, gy1), inside, near, gap = self._guard  # type: ignore[misc]
        if np.median((dest[list(F.LIPS_INNER_LOWER)] - dest[list(F.LIPS_INNER_UPPER)])[3:8, 1]) >= gap:
            return  # the lips part at least as far as the picture's: nothing to cover
        rx0, ry0, rx1, ry1 = self.roi
        lips = dest[list(F.LIPS_OUTER)]
        x0 = max(rx0, min(gx0, int(np.floor(lips[:, 0].min())) - 3))
        y0 = max(ry0, min(gy0, int(np.floor(lips[:, 1].min())) - 3))
        x1 = min(rx1, max(gx1, int(np.ceil(lips[:, 0].max())) + 4))
        y1 = min(ry1, max(gy1, int(np.ceil(lips[:, 1].max())) + 4))
        if x1 <= x0 or y1 <= y0:
            return
        sub = m[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
        sx = np.rint(sub[..., 0]).astype(np.int32) - gx0
        sy = np.rint(sub[..., 1]).astype(np.int32) - gy0
        ok = (sx >= 0) & (sy >= 0) & (sx < gx1 - gx0) & (sy < gy1 - gy0)
        hit = np.zeros(sx.shape, bool)
        hit[ok] = inside[sy[ok], sx[ok]]
        if not hit.any():
            return
        opening = np.zeros(sx.shape, np.uint8)
        cv2.fillPoly(opening, [np.round((dest[list(F.LIPS_INNER)] - (x0, y0)) * 4).astype(np.int32)], 1,
                     lineType=cv2.LINE_8, shift=2)
        fix = hit & ~opening.astype(bool)
        sub[fix] = near[sy[fix], sx[fix]]

    def _resample(self, m: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
        x0, y0, x1, y1 = self.roi
        if out is None:
            out = self.image.copy()
        else:
            np.copyto(out, self.image)
        # fixed-point maps: the conversion plus the integer remap beat a float remap
        m1, m2 = cv2.convertMaps(m, None, cv2.CV_16SC2)  # type: ignore[call-overload]
        # Interpolation averages neighbours, which halves the finest detail wherever the
        # face moved by a fraction of a pixel; the background never moves. So the smooth
        # part of the picture is interpolated and its fine detail (pores, stubble, grain)
        # is carried over from the nearest source pixel, at full strength.
        smooth = cv2.remap(self._smooth, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fine = cv2.remap(self._fine, m1, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        out[y0:y1, x0:x1] = cv2.addWeighted(smooth, 1.0, fine, 1.0, -128.0)
        for bx0, by0, bx1, by1, weight, tone in self._tones:
            out[by0:by1, bx0:bx1] = lid_tone.apply(np, out[by0:by1, bx0:bx1], weight, tone)
        return out

    def warp_with_mask(self, dest: np.ndarray, min_move: float = 0.5) -> tuple:
        """The warped frame and a uint8 mask over the ROI: 255 where pixels moved > `min_move` px."""
        m = self.backward_map(dest)
        out = self._resample(m, None)
        d = cv2.subtract(m, self.ident)
        moved = (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) > min_move * min_move
        return out, moved.astype(np.uint8) * 255

    def warp(self, dest: np.ndarray, out: Optional[np.ndarray] = None, eyes: Optional[np.ndarray] = None) -> np.ndarray:
        """The image warped so the rest mesh lands on `dest` (468x2, or frame_points'), the
        eyes as `eyes` says (see backward_map); a new frame or `out`."""
        return self._resample(self.backward_map(dest, eyes), out)


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
