"""The portrait's warp (render.Warper) for a chunk of frames at once, in torch, on any device.

Same math as the numba path, frame by frame:
- per frame, each triangle's affine back to the rest image is render.Warper's own
  (`_triangle_affines`, computed on the host: a few hundred triangles, one numba pass);
- the per-pixel triangle map is the numba scan done on the device for all frames of the
  chunk together: every row of every moving triangle is a span of pixels between its edge
  functions (the scan's, with its 1/1000 px tolerance), the spans are expanded to pixels,
  and where several triangles hold a pixel the last one wins, as in the scan (a scatter of
  the largest index); a pixel's source is its triangle's affine at the pixel, in float64 as
  the scan computes it; pixels no triangle holds keep still;
- lips closed further than the portrait has them are kept off its opening
  (Warper._keep_lips_off_the_opening: the opening's pixels, their nearest lip pixel);
- the picture is resampled as cv2.remap does it with the fixed-point maps of the numba
  path: source positions rounded to 1/32 px, the smooth part bilinear (grid_sample), the
  fine detail from the pixel cv2's nearest mode takes (the integer part of the rounded
  position).

Only the face's region (Warper.roi) is computed per frame; `warp` pastes it into copies of
the portrait.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as TF

from . import face as F
from . import lid_tone
from .eyes import remap
from .render import Warper

SUBPIXEL = 32  # cv2.remap's fixed-point maps: positions in 1/32 px (INTER_TAB_SIZE)

_INNER = list(F.LIPS_INNER)
_INNER_UPPER = list(F.LIPS_INNER_UPPER)
_INNER_LOWER = list(F.LIPS_INNER_LOWER)
_OUTER = list(F.LIPS_OUTER)


def _edge_functions(v: np.ndarray) -> tuple:
    """For frame triangles `v` (..., 3, 2): edge coefficients (ea, eb, ec), each (..., 3),
    inside where ea*x + eb*y + ec >= 0 (1/1000 px of tolerance, as the numba scan has it),
    and the rows the scan visits (ylo, yhi); a triangle of no area visits none."""
    v = v.astype(np.float64)
    a, b, c = v[..., 0, :], v[..., 1, :], v[..., 2, :]
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    s = np.where(area > 0, 1.0, -1.0)[..., None]
    p = np.stack([a, b, c], -2)
    q = np.stack([b, c, a], -2)
    dx, dy = q[..., 0] - p[..., 0], q[..., 1] - p[..., 1]
    ea = -s * dy
    eb = s * dx
    ec = s * (dy * p[..., 0] - dx * p[..., 1]) + 1e-3 * np.sqrt(dx * dx + dy * dy)
    ylo = np.ceil(v[..., 1].min(-1))
    yhi = np.floor(v[..., 1].max(-1))
    yhi = np.where(area == 0, ylo - 1, yhi)
    return ea, eb, ec, ylo, yhi


class TorchWarper:
    """The warp of one portrait's Warper, a chunk of frames per call, on `device`."""

    def __init__(self, warper: Warper, device: torch.device):
        self.warper = warper
        self.device = device
        x0, y0, x1, y1 = warper.roi
        self.rw, self.rh = x1 - x0, y1 - y0
        h, w = warper.h, warper.w
        self.image = torch.from_numpy(warper.image).to(device)
        self._smooth = torch.from_numpy(warper._smooth).to(device).permute(2, 0, 1)[None].float()
        self._fine = torch.from_numpy(warper._fine).to(device).reshape(h * w, 3).T.float().contiguous()
        gy, gx = torch.meshgrid(torch.arange(y0, y1, device=device, dtype=torch.float64),
                                torch.arange(x0, x1, device=device, dtype=torch.float64), indexing="ij")
        self._ident = (gx.reshape(-1), gy.reshape(-1))  # every ROI pixel's own position
        self._guard = None
        if warper._guard is not None:
            box, inside, near, gap = warper._guard
            self._guard = (box, torch.from_numpy(inside).to(device), torch.from_numpy(near).to(device), gap)

    # ------------------------------------------------------------------ the map

    def maps(self, dests: np.ndarray, eyes: Optional[np.ndarray] = None) -> torch.Tensor:
        """Source positions (B, rh, rw, 2) float32 of every ROI pixel for frames `dests`
        (B x 468 x 2, clamped as Warper.clamp does); the numba path's backward_map, batched."""
        wp = self.warper
        dests = np.asarray(dests, np.float32)[..., :2]
        b = len(dests)
        affs, verts = zip(*(wp._triangle_affines(d) for d in dests))
        table, rows = self._spans(np.stack(verts)[:, wp.moving], np.stack(affs)[:, wp.moving])
        t = [column.index_select(0, rows) for column in table]  # each pixel's row of the table
        gx = self._ident[0].repeat(b)
        m = torch.empty((b * self.rh * self.rw, 2), device=self.device)
        m[:, 0] = torch.addcmul(t[1], t[0], gx)
        m[:, 1] = torch.addcmul(t[3], t[2], gx)
        m = m.reshape(b, self.rh, self.rw, 2)
        if self._guard is not None:
            self._keep_lips_off_the_opening(m, dests)
        self._tones: list = []  # shadowed lids' shades, blended in by warp (lid_tone.apply)
        if self.warper.eyes is not None and eyes is not None:
            self._eyes(m, dests, np.asarray(eyes, np.float32))
        return m

    def _eyes(self, m: torch.Tensor, dests: np.ndarray, eyes: np.ndarray) -> None:
        """EyeModel.remap_numpy for every frame of the chunk, in place: per eye, one box
        around every frame's own (the remap leaves what lies outside an eye's bands as it is)."""
        model = self.warper.eyes
        active = [k for k in range(len(eyes)) if eyes[k, 0] > 0 or eyes[k, 1] != 0 or eyes[k, 2] != 0]
        if not active or model is None:
            return
        rx0, ry0, rx1, ry1 = self.warper.roi
        idx = torch.tensor(active, device=self.device)
        state = torch.from_numpy(np.ascontiguousarray(eyes[active])).to(self.device)[:, :, None, None]
        for k, eye in enumerate(model.eyes):
            boxes = [model.frame_box(k, dests[j], (ry1, rx1)) for j in active]
            x0, y0 = max(rx0, min(b[0] for b in boxes)), max(ry0, min(b[1] for b in boxes))
            x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
            if x1 <= x0 or y1 <= y0:
                continue
            sub = m[idx, y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
            toned = eye.tone is not None
            out = remap(torch, sub[..., 0], sub[..., 1], eye, model.tables(k, torch, self.device),
                        state[:, 0], state[:, 1], state[:, 2], weight=toned)
            m[idx, y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = torch.stack(out[:2], -1)
            if toned:
                tone = torch.from_numpy(eye.tone).to(self.device)
                self._tones.append((idx, x0, y0, x1, y1, out[2], tone))

    def _spans(self, v: np.ndarray, aff: np.ndarray) -> tuple:
        """The numba scan for frame triangles `v` (B, M, 3, 2) and their affines `aff` (B, M, 6).

        Every row of every triangle is a span of pixels between its edges, where a pixel's
        source is A x + C with A and C constant along the span. Returns that table of rows,
        (4, rows) float64 [A_x, C_x, A_y, C_y], and each ROI pixel's row in it (B * N,):
        first B * rh rows that keep still (for pixels no triangle holds), then the spans,
        in the scan's order, so that where spans meet the last triangle wins as in the scan.
        The arithmetic is the scan's, in float64: a position off by 1e-5 px can fall on the
        other side of cv2's 1/32 px rounding and take its detail from the next pixel."""
        dev = self.device
        x0, y0, x1, y1 = self.warper.roi
        b = len(v)
        ea, eb, ec, ylo, yhi = (a.reshape(len(a) * a.shape[1], -1) for a in _edge_functions(v))
        ylo = np.maximum(ylo[:, 0], y0).astype(np.int64)
        yhi = np.minimum(yhi[:, 0], y1 - 1).astype(np.int64)
        count_np = np.maximum(yhi - ylo + 1, 0)
        count = torch.from_numpy(count_np).to(dev)
        rows = int(count_np.sum())

        def per_row(a):
            return torch.repeat_interleave(torch.from_numpy(np.ascontiguousarray(a)).to(dev), count, output_size=rows)

        y = per_row(ylo - (np.cumsum(count_np) - count_np)) + torch.arange(rows, device=dev)
        fy = y.double()
        xl = torch.full((rows,), float(x0), dtype=torch.float64, device=dev)
        xr = torch.full((rows,), float(x1 - 1), dtype=torch.float64, device=dev)
        empty = torch.zeros(rows, dtype=torch.bool, device=dev)
        for e in range(3):
            ea_e, eb_e, ec_e = (per_row(c[:, e]) for c in (ea, eb, ec))
            c = eb_e * fy + ec_e
            cut = -c / ea_e
            xl = torch.where(ea_e > 0, torch.maximum(xl, cut), xl)
            xr = torch.where(ea_e < 0, torch.minimum(xr, cut), xr)
            empty |= (ea_e == 0) & (c < 0)
        xs = torch.ceil(xl).long()
        length = torch.where(empty, 0, (torch.floor(xr).long() - xs + 1).clamp(min=0))
        a = aff.reshape(-1, 6).astype(np.float64)
        still = torch.zeros((4, b, self.rh), dtype=torch.float64, device=dev)
        still[0] = 1.0
        still[3] = torch.arange(y0, y1, device=dev, dtype=torch.float64)
        table = torch.cat([still.reshape(4, -1),
                           torch.stack([per_row(a[:, 0]), per_row(a[:, 1]) * fy + per_row(a[:, 2]),
                                        per_row(a[:, 3]), per_row(a[:, 4]) * fy + per_row(a[:, 5])])], 1)
        # the spans as pixels: each one's place among the chunk's pixels, and its row
        n = self.rh * self.rw
        pixels = int(length.sum())
        frame = per_row(np.arange(len(count_np)) // v.shape[1])
        base = frame * n + (y - y0) * self.rw + (xs - x0) - (torch.cumsum(length, 0) - length)
        flat = torch.repeat_interleave(base, length, output_size=pixels) + torch.arange(pixels, device=dev)
        span = torch.repeat_interleave(torch.arange(b * self.rh, b * self.rh + rows, device=dev), length,
                                       output_size=pixels)
        ids = torch.arange(b * self.rh, device=dev).repeat_interleave(self.rw)
        ids.scatter_reduce_(0, flat, span, reduce="amax")
        return table, ids

    def _keep_lips_off_the_opening(self, m: torch.Tensor, dests: np.ndarray) -> None:
        """Warper._keep_lips_off_the_opening for every frame of the chunk, in place."""
        (gx0, gy0, gx1, gy1), inside, near, gap = self._guard  # type: ignore[misc]
        rx0, ry0, rx1, ry1 = self.warper.roi
        boxes = []
        for k, dest in enumerate(dests):
            if np.median((dest[_INNER_LOWER] - dest[_INNER_UPPER])[3:8, 1]) >= gap:
                continue
            lips = dest[_OUTER]
            x0 = max(rx0, min(gx0, int(np.floor(lips[:, 0].min())) - 3))
            y0 = max(ry0, min(gy0, int(np.floor(lips[:, 1].min())) - 3))
            x1 = min(rx1, max(gx1, int(np.ceil(lips[:, 0].max())) + 4))
            y1 = min(ry1, max(gy1, int(np.ceil(lips[:, 1].max())) + 4))
            if x1 > x0 and y1 > y0:
                boxes.append((k, x0, y0, x1, y1))
        if not boxes:
            return
        # one box around all of them; each frame's own box and its opening as masks in it
        ux0, uy0 = min(b[1] for b in boxes), min(b[2] for b in boxes)
        ux1, uy1 = max(b[3] for b in boxes), max(b[4] for b in boxes)
        frames = [b[0] for b in boxes]
        own = np.zeros((len(boxes), uy1 - uy0, ux1 - ux0), bool)
        for j, (k, x0, y0, x1, y1) in enumerate(boxes):
            opening = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(opening, [np.round((dests[k][_INNER] - (x0, y0)) * 4).astype(np.int32)], 1,
                         lineType=cv2.LINE_8, shift=2)
            own[j, y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] = opening == 0
        idx = torch.tensor(frames, device=self.device)
        sub = m[idx, uy0 - ry0:uy1 - ry0, ux0 - rx0:ux1 - rx0]
        sx = torch.round(sub[..., 0]).long() - gx0
        sy = torch.round(sub[..., 1]).long() - gy0
        ok = (sx >= 0) & (sy >= 0) & (sx < gx1 - gx0) & (sy < gy1 - gy0)
        sxc, syc = sx.clamp(0, gx1 - gx0 - 1), sy.clamp(0, gy1 - gy0 - 1)
        fix = ok & inside[syc, sxc] & torch.from_numpy(own).to(self.device)
        sub = torch.where(fix[..., None], near[syc, sxc], sub)
        m[idx, uy0 - ry0:uy1 - ry0, ux0 - rx0:ux1 - rx0] = sub

    # ------------------------------------------------------------------ the picture

    def resample(self, m: torch.Tensor) -> torch.Tensor:
        """The ROI of every frame (B, rh, rw, 3) uint8 from its map: the numba path's _resample."""
        h, w = self.warper.h, self.warper.w
        b = m.shape[0]
        r = torch.round(m * SUBPIXEL)  # cv2.convertMaps' fixed point: 1/32 px
        # grid_sample's coordinates (align_corners=False): -1 and 1 are the outer edges of the picture
        size = torch.tensor([w, h], device=m.device, dtype=torch.float32)
        grid = torch.addcmul(1.0 / size - 1.0, r, 2.0 / (SUBPIXEL * size))
        smooth = TF.grid_sample(self._smooth, grid.reshape(1, b * self.rh, self.rw, 2), mode="bilinear",
                                padding_mode="border", align_corners=False)[0]
        # cv2's nearest mode takes the integer part of the fixed-point position
        iq = torch.div(r.to(torch.int32), SUBPIXEL, rounding_mode="floor")
        src = iq[..., 1].clamp_(0, h - 1) * w + iq[..., 0].clamp_(0, w - 1)
        src = src.reshape(-1)
        fine = torch.stack([channel.index_select(0, src) for channel in self._fine]).reshape(3, b * self.rh, self.rw)
        out = (smooth.round_() + fine).sub_(128.0).clamp_(0, 255).to(torch.uint8)
        return out.reshape(3, b, self.rh, self.rw).permute(1, 2, 3, 0)

    def warp(self, dests: np.ndarray, eyes: Optional[np.ndarray] = None) -> tuple:
        """Whole frames (B, h, w, 3) uint8 on the device, the portrait with each frame's ROI
        warped (eyes as `eyes`, B x 3, say), and the maps that did it (B, rh, rw, 2)."""
        x0, y0, x1, y1 = self.warper.roi
        maps = self.maps(dests, eyes)
        out = self.image[None].repeat(len(dests), 1, 1, 1)
        roi = self.resample(maps)
        for idx, bx0, by0, bx1, by1, weight, tone in self._tones:
            box = roi[idx, by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
            roi[idx, by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] = lid_tone.apply(torch, box, weight, tone)
        out[:, y0:y1, x0:x1] = roi
        return out, maps

