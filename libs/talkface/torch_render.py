"""talkface's frames rendered with torch, a chunk of frames at a time, on a GPU or the CPU.

The torch twin of the per-frame render (render.Warper.warp, then mouth.MouthInterior.draw):
`TorchFrames` takes the same per-frame inputs (the frame's clamped landmarks and its two
teeth affines) for a chunk of frames, warps them all at once (torch_warp), draws their
mouths (torch_mouth) and hands back the frames as host arrays for the encoder. Its output
equals the numba path's within a stated tolerance (PSNR >= 40 dB frame by frame, measured
far above that; tests/engine/test_torch_render.py). Only this module and its two helpers
import torch; the numba path never does.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch

from .mouth import MouthInterior
from .render import Warper
from .torch_mouth import TorchMouth
from .torch_warp import TorchWarper


class TorchFrames:
    """Renders one portrait job's frames in chunks of `batch` on `device`."""

    def __init__(self, warper: Warper, interior: MouthInterior, device: torch.device, batch: int = 16):
        self.device = torch.device(device)
        self.batch = max(1, int(batch))
        self.warp = TorchWarper(warper, self.device)
        self.mouth = TorchMouth(interior, self.device)
        self._stream = None
        if self.device.type == "cuda":
            # the job's own stream, after what building this put on the device's default one
            self._stream = torch.cuda.Stream(self.device)
            self._stream.wait_stream(torch.cuda.current_stream(self.device))

    def render(self, first: int, pts: np.ndarray, skulls: np.ndarray, mandibles: np.ndarray,
               eyes: Optional[np.ndarray] = None) -> np.ndarray:
        """Frames first.. (B, h, w, 3) uint8 on the host, from their warp points `pts`
        (B x N x 2, Warper.frame_points), teeth affines `skulls`, `mandibles` (B x 2 x 3)
        and eye states `eyes` (B x 3, MotionPlan.eye_state)."""
        with torch.inference_mode(), _on(self._stream):
            frames, _ = self.warp.warp(pts, eyes)
            self.mouth.draw(frames, pts, skulls, mandibles, first)
            return frames.cpu().numpy()


def redub_frame(warper: Warper, interior: MouthInterior, dest: np.ndarray, skull: np.ndarray,
                mandible: np.ndarray, i: int, device: str, min_move: float = 0.5) -> tuple:
    """One re-dubbed frame with torch (engine._numba_redub_frame's twin): the frame warped to
    `dest` with its mouth drawn, and the uint8 mask over the ROI of the pixels that moved
    more than `min_move` px (Warper.warp_with_mask's)."""
    device = torch.device(device)  # type: ignore[assignment]
    with torch.inference_mode():
        warp = TorchWarper(warper, device)  # type: ignore[arg-type]
        frames, maps = warp.warp(dest[None])
        TorchMouth(interior, device).draw(frames, dest[None], skull[None], mandible[None], i)  # type: ignore[arg-type]
        gx, gy = warp._ident
        d = maps[0].reshape(-1, 2) - torch.stack([gx, gy], -1).float()
        moved = ((d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) > min_move * min_move).reshape(warp.rh, warp.rw)
        return frames[0].cpu().numpy(), moved.to(torch.uint8).mul_(255).cpu().numpy()


def _on(stream: Optional["torch.cuda.Stream"]):
    """Run on a job's own CUDA stream, so the jobs of several slots overlap on one GPU."""
    if stream is None:
        return contextlib.nullcontext()
    return torch.cuda.stream(stream)
