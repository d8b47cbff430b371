"""Where the portrait's warp is held still, and what moves with the head.

render.Warper triangulates the face mesh together with anchors: points that stay where
the portrait has them (an ellipse around the face, the image's border), so that the
background beyond them never moves. With head motion, the hair and the ears must move
with the face as one piece while the neck and the collar stay: `head_ring` gives the
ring of extra vertices that follow the head and the fixed points around and below it.
"""

from __future__ import annotations

import numpy as np

from . import face as F

# How far (of the face's size) beyond the head's ring the background takes up head motion.
HEAD_FEATHER = 0.1
HEAD_RING = 0.05  # the head's ring, beyond the face's outline (ears, hair at the sides)
HEAD_HAIR = 0.3  # and how much further the head's ring reaches above the face (hair, hats)


def fixed_anchors(rest: np.ndarray, w: int, h: int, ring_scale: float, ring: bool = True,
                  border: bool = True) -> np.ndarray:
    """Fixed points: an ellipse `ring_scale` of the face's size around the mesh `rest`
    (hair, shoulders and background beyond it stay put) and the image border; either
    can be left out."""
    lo, hi = rest.min(0), rest.max(0)
    size = float(max(hi - lo))
    centre = (lo + hi) / 2
    radii = (hi - lo) / 2 + ring_scale * size
    ang = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    ellipse = centre + np.column_stack([np.cos(ang) * radii[0], np.sin(ang) * radii[1]])
    edge = []
    for t in np.linspace(0, 1, 9):
        edge += [(t * (w - 1), 0), (t * (w - 1), h - 1), (0, t * (h - 1)), (w - 1, t * (h - 1))]
    edge = np.unique(np.array(edge, np.float64), axis=0)  # type: ignore[assignment]
    ellipse = ellipse[(ellipse[:, 0] > 1) & (ellipse[:, 0] < w - 2) & (ellipse[:, 1] > 1) & (ellipse[:, 1] < h - 2)]
    cand = np.concatenate([ellipse if ring else np.zeros((0, 2)), edge if border else np.zeros((0, 2))])
    # anchors crowding a mesh point make slivers that tear under motion: keep a margin
    # (image corners always stay, they close the hull)
    d = np.sqrt(((cand[:, None, :] - rest[None, :, :]) ** 2).sum(-1)).min(1)
    corner = np.isin(cand[:, 0], (0, w - 1)) & np.isin(cand[:, 1], (0, h - 1))
    return cand[(d > 0.08 * size) | corner]


def head_ring(mesh: np.ndarray, w: int, h: int, ring_scale: float) -> tuple:
    """(the ring that moves with the head, the fixed anchors) for head motion.

    The ring is an ellipse HEAD_RING of the face's size around the mesh, reaching
    HEAD_HAIR further above it (hair, a hat), down to the mouth's level: what lies
    inside moves with the head as one piece. Below that level fixed_anchors' ellipse stays
    (the neck and the collar do), and a second, fixed ellipse HEAD_FEATHER further out
    takes up the motion in the background between the two."""
    lo, hi = mesh.min(0), mesh.max(0)
    size = float(max(hi - lo))
    down = mesh[F.CHIN] - mesh[F.FOREHEAD]
    down = down / max(float(np.linalg.norm(down)), 1e-6)
    mouth = mesh[list(F.MOUTH_CORNERS)].mean(0)
    centre = (lo + hi) / 2
    ang = np.linspace(0, 2 * np.pi, 28, endpoint=False)

    def ellipse(extra: float) -> np.ndarray:
        radii = (hi - lo) / 2 + (HEAD_RING + extra) * size
        pts = np.column_stack([np.cos(ang) * radii[0], np.sin(ang) * radii[1]])
        above = np.minimum(pts @ down, 0.0) / max(float(radii[1]), 1e-6)  # -1 at the top, 0 at the middle
        pts = pts + np.outer(above * HEAD_HAIR * size, down)
        pts = centre + pts
        inside = (pts[:, 0] > 1) & (pts[:, 0] < w - 2) & (pts[:, 1] > 1) & (pts[:, 1] < h - 2)
        return pts[inside]

    inner, outer = ellipse(0.0), ellipse(HEAD_FEATHER)
    moving = (inner - mouth) @ down < 0
    outer = outer[(outer - mouth) @ down < 0.1 * size]
    lower = fixed_anchors(mesh, w, h, ring_scale, border=False)
    fixed = np.concatenate([lower[(lower - mouth) @ down >= 0], outer, fixed_anchors(mesh, w, h, ring_scale, ring=False)])
    ring = inner[moving]
    # a moving point beside a fixed one (the image's edge) would fold the triangle between them
    near = np.sqrt(((ring[:, None, :] - fixed[None, :, :]) ** 2).sum(-1)).min(1) if len(ring) else np.zeros(0)
    return ring[near > 0.1 * size].astype(np.float32), fixed
