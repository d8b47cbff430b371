"""The inside of the mouth (mouth.MouthInterior.draw) for a chunk of frames at once, in torch.

Same math as MouthInterior.draw, frame by frame. The host does what is small and exact
there: the opening's outline and its anti-aliased, softened mask (cv2, in the frame's own
box, as draw makes it), the lip contours per column, the inverse of each layer's affine.
The device does the per-pixel work for all the chunk's frames in one box that holds every
frame's own: the cavity's shading and the tongue, the teeth layers moved by the skull's and
the mandible's affines (grid_sample, bilinear, zeros outside, as cv2.warpAffine does), the
photo's grain at each frame's offset, and the blend into the frames. Outside a frame's own
opening its mask is zero, so the shared box changes nothing there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as TF

from .mouth import _LOWER, _UPPER, MouthInterior, _contour_y, _poly_mask, _smooth, opening_polygon


def _smooth_t(x: torch.Tensor) -> torch.Tensor:
    """mouth._smooth on tensors: 0 below 0, 1 above 1, smoothstep between."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class _Opening:
    """One frame's opening as draw computes it on the host."""

    index: int  # the frame's place in the chunk
    frame: int  # the frame's number in the video (the grain's offset)
    box: tuple  # x0, y0, x1, y1 of the frame's own box
    mask: np.ndarray  # (y1 - y0, x1 - x0) float32 0..1
    up: np.ndarray  # the inner lips' contours (frame pixels)
    lo: np.ndarray


class TorchMouth:
    """MouthInterior.draw for chunks of frames on `device`; build once per portrait."""

    def __init__(self, interior: MouthInterior, device: torch.device):
        self.mi = interior
        self.device = device

        def layer(lay):
            rgba = torch.from_numpy(np.ascontiguousarray(lay.rgba, np.float32)).to(device)
            return rgba.permute(2, 0, 1)[None].contiguous(), lay.box

        self.lower = [layer(x) for x in interior.lower]
        self.upper = [layer(x) for x in interior.upper]
        self.noise = torch.from_numpy(interior._noise).to(device)
        c = interior.colours
        self.cavity = torch.tensor(c.cavity, dtype=torch.float32, device=device)
        self.tongue = torch.tensor(c.tongue, dtype=torch.float32, device=device)

    def _opening(self, k: int, frame: int, pts: np.ndarray, h: int, w: int):
        """Frame `frame`'s opening (None when nothing of the inside shows): MouthInterior.draw up to its mask."""
        mi = self.mi
        pts = np.asarray(pts, np.float64)[:, :2]
        up, lo = pts[_UPPER], pts[_LOWER]
        if float(np.max((lo[1:-1] - up[1:-1])[:, 1])) <= 0.3:
            return None
        poly = opening_polygon(pts)
        x0 = max(0, int(math.floor(poly[:, 0].min())) - 2)
        y0 = max(0, int(math.floor(poly[:, 1].min())) - 2)
        x1 = min(w, int(math.ceil(poly[:, 0].max())) + 3)
        y1 = min(h, int(math.ceil(poly[:, 1].max())) + 3)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return None
        mask = _poly_mask(poly, x0, y0, x1 - x0, y1 - y0)
        if mask.max() <= 0.0:
            return None
        if mi.softness > 0.45:
            mask = cv2.GaussianBlur(mask, (0, 0), 0.7 * mi.softness)
        if not mi.found.open or mi.found.teeth is None:
            rest_gap = float(np.median((mi.rest[_LOWER][3:8] - mi.rest[_UPPER][3:8])[:, 1]))
            now = float(np.median((lo[3:8] - up[3:8])[:, 1]))
            mask *= float(_smooth((now - rest_gap) / (0.008 * mi.fh)))
            if mask.max() <= 0.0:
                return None
        return _Opening(k, frame, (x0, y0, x1, y1), mask, up, lo)

    def draw(self, frames: torch.Tensor, pts: np.ndarray, skulls: np.ndarray, mandibles: np.ndarray,
             first: int) -> None:
        """Paint what shows between the inner lips into `frames` (B, h, w, 3) uint8 on the
        device, in place; frame k of the chunk is frame `first + k` of the video, `pts[k]`
        its landmarks and `skulls[k]`, `mandibles[k]` its teeth affines (MouthInterior.draw's)."""
        h, w = frames.shape[1:3]
        found = [o for k in range(len(pts)) if (o := self._opening(k, first + k, pts[k], h, w)) is not None]
        if not found:
            return
        mi, dev = self.mi, self.device
        ux0, uy0 = min(o.box[0] for o in found), min(o.box[1] for o in found)
        ux1, uy1 = max(o.box[2] for o in found), max(o.box[3] for o in found)
        uw, uh = ux1 - ux0, uy1 - uy0
        n = len(found)
        mask = np.zeros((n, uh, uw), np.float32)
        xs = np.arange(ux0, ux1, dtype=np.float64)
        top, bottom, across = (np.empty((n, uw)) for _ in range(3))
        grain = np.zeros((n, 3), np.int64)  # per frame: whether it has grain, and the noise tile's origin
        for j, o in enumerate(found):
            x0, y0, x1, y1 = o.box
            mask[j, y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] = o.mask
            top[j], bottom[j] = _contour_y(o.up, xs), _contour_y(o.lo, xs)
            cx = (o.up[0, 0] + o.up[-1, 0]) / 2
            half = max(abs(o.up[-1, 0] - o.up[0, 0]) / 2, 1.0)
            across[j] = np.clip((xs - cx) / half, -1, 1)
            ox, oy = (o.frame * 37) % 128, (o.frame * 61) % 128
            if oy + y1 - y0 <= 256 and ox + x1 - x0 <= 256:  # draw's tile fits the noise
                grain[j] = (1, ox - (x0 - ux0), oy - (y0 - uy0))

        def put(a):
            return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)

        ys = torch.arange(uy0, uy1, device=dev, dtype=torch.float32)[None, :, None]
        top_t, bottom_t, s = put(top)[:, None], put(bottom)[:, None], put(across)[:, None]
        gap = torch.clamp(bottom_t - top_t, min=0.5)
        depth = ((ys - top_t) / gap).clamp(0, 1)
        # the cavity: darkest in the middle of the opening and in the corners
        light = (0.65 + 0.35 * (1 - s * s)) * (0.75 + 0.25 * torch.abs(2 * depth - 1))
        out = self.cavity * light[..., None]
        # the tongue low in a wide opening
        wide = _smooth_t((gap / mi.fh - 0.03) / 0.03)
        tongue = (_smooth_t((depth - 0.5) / 0.4) * wide * (1 - s * s))[..., None]
        out = out + (self.tongue * (0.6 + 0.4 * depth[..., None]) - out) * tongue
        idx = [o.index for o in found]
        for layers, affines in ((self.lower, mandibles), (self.upper, skulls)):
            for rgba, box in layers:
                out = self._composite(out, rgba, box, [affines[k] for k in idx], ux0, uy0)
        if mi.grain > 0.3 and grain[:, 0].any():
            g = torch.from_numpy(grain).to(dev)
            yy = (g[:, 2, None, None] + torch.arange(uh, device=dev)[None, :, None]).clamp(0, 255)
            xx = (g[:, 1, None, None] + torch.arange(uw, device=dev)[None, None, :]).clamp(0, 255)
            tile = self.noise[yy, xx] * g[:, 0, None, None].float()
            out = out + (0.6 * mi.grain * tile)[..., None]
        sel = torch.tensor(idx, device=dev)
        roi = frames[sel, uy0:uy1, ux0:ux1].float()
        a = put(mask)[..., None]
        frames[sel, uy0:uy1, ux0:ux1] = torch.clamp(roi + (out - roi) * a + 0.5, 0, 255).to(torch.uint8)

    def _composite(self, out: torch.Tensor, rgba: torch.Tensor, box: tuple, affines: list, ux0: int,
                   uy0: int) -> torch.Tensor:
        """`out` (n, uh, uw, 3) with one layer laid over each frame by that frame's affine
        (MouthInterior._composite: cv2.warpAffine, bilinear, nothing outside the layer)."""
        n, uh, uw = out.shape[:3]
        lx, ly = box
        inv = np.empty((n, 2, 3))
        for j, affine in enumerate(affines):
            m = np.array(affine, np.float64).copy()
            m[:, 2] += m[:, 0] * lx + m[:, 1] * ly - (ux0, uy0)
            inv[j] = cv2.invertAffineTransform(m)
        inv_t = torch.from_numpy(inv.astype(np.float32)).to(self.device)
        xx = torch.arange(uw, device=self.device, dtype=torch.float32)[None, None, :]
        yy = torch.arange(uh, device=self.device, dtype=torch.float32)[None, :, None]
        sx = inv_t[:, 0, 0, None, None] * xx + inv_t[:, 0, 1, None, None] * yy + inv_t[:, 0, 2, None, None]
        sy = inv_t[:, 1, 0, None, None] * xx + inv_t[:, 1, 1, None, None] * yy + inv_t[:, 1, 2, None, None]
        lh, lw = rgba.shape[2:]
        grid = torch.stack([(2 * sx + 1) / lw - 1, (2 * sy + 1) / lh - 1], -1).reshape(1, n * uh, uw, 2)
        warped = TF.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        warped = warped[0].permute(1, 2, 0).reshape(n, uh, uw, 4)
        a = warped[..., 3:4]
        return out + (warped[..., :3] - out) * a
