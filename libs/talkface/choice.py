"""Which face of a portrait to animate, and whether talkface can animate it.

Every face the detectors find is fitted with FaceMesh once (the search goes from the
whole picture to halves and quarters, and stops at a level that finds no new face); faces
found twice are kept once (the better fit). Faces are numbered left to right (by the
nose tip), which is what a request's `face_index` counts. Without a named face the
engine takes the largest frontal one (turned at most FRONTAL_DEG), or, when no face is
that frontal, the largest it can animate.

A face is refused when
- it is turned (yaw or pitch) more than MAX_TURN_DEG: the mesh-warp engine has no
  hidden side of the head to show, and FaceMesh's fit on a profile is unreliable;
- its mouth is not on its lips: the mesh is fitted again from crops moved by 8 % of their
  size each way and grown by a quarter; a fit that sits on the face comes back to the same mouth
  (measured on 14 real faces: at most 0.033 of the face height apart), one that does not
  wanders or loses the face altogether (the fit in the group photo's merged detector box,
  two faces in one, which the engine animated before: 0.10 to 0.13 apart, then lost).
  Lip colour and edge contrast at the mesh's lip contour were tried first, moving the
  contour up and down to see whether the fitted place stands out, and were not reliable:
  the Lab contrast of the lips against a skin ring peaked at the fitted place on 2 of 15
  correct fits (a man's lips differed from his skin by 2 units of a*), the horizontal-edge
  profile on 7 of 14.
The analysis costs a few mesh runs per face (about 2 ms each) plus detection: it is run
once per portrait, by the gateway when a job is created and by the engine when it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import face as F
from .api import FaceTurnedError, MouthNotOnLipsError, NoFaceError, NoSuchFaceError

MAX_TURN_DEG = 45.0
FRONTAL_DEG = 30.0
# How far (face heights) the mouth of a refit may land from the fit's before the fit is not trusted.
MAX_MOUTH_SPREAD = 0.06
_MOUTH = (F.INNER_LIP_UPPER_MID, F.INNER_LIP_LOWER_MID, *F.MOUTH_CORNERS, F.OUTER_LIP_UPPER_MID,
          F.OUTER_LIP_LOWER_MID)
_MOVES = ((0.08, 0.0, 1.0), (-0.08, 0.0, 1.0), (0.0, 0.08, 1.0), (0.0, -0.08, 1.0), (0.0, 0.0, 1.25))


@dataclass
class Face:
    """One face of a portrait: its landmarks and what the choice needs to know of it."""

    landmarks: np.ndarray  # 468 x 3, image pixels
    presence: float  # FaceMesh's presence logit
    yaw: float  # degrees; positive: turned to the subject's left
    pitch: float  # degrees; positive: looking down
    size: float  # pixels: RMS distance of the mesh's points from their centre, in 3D
    index: int = -1  # place left to right
    mouth_spread: Optional[float] = None  # filled by check_mouth

    @property
    def center(self) -> tuple:
        """The nose tip (x, y), the point `face_index` order and `face_box` go by."""
        x, y = self.landmarks[F.NOSE_TIP, :2]
        return float(x), float(y)

    @property
    def box(self) -> tuple:
        """(x0, y0, x1, y1) of the mesh, in pixels."""
        lo, hi = self.landmarks[:, :2].min(0), self.landmarks[:, :2].max(0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def turn(self) -> float:
        return max(abs(self.yaw), abs(self.pitch))

    def describe(self) -> dict:
        """What a response or log says of the face."""
        return {"index": self.index, "box": [round(v) for v in self.box], "yaw": round(self.yaw, 1),
                "pitch": round(self.pitch, 1)}


def head_pose(pts: np.ndarray) -> tuple:
    """(yaw, pitch) in degrees from the mesh's own 3D axes (FaceMesh's z is in x's pixels).

    Across is the line between the cheeks' silhouette points, down the forehead-to-chin
    line square to it; their depth components give the turn.
    """
    p = np.asarray(pts, np.float64)[:, :3]
    across = p[[454, 323]].mean(0) - p[[234, 93]].mean(0)
    across /= max(float(np.linalg.norm(across)), 1e-9)
    down = p[F.CHIN] - p[F.FOREHEAD]
    down = down - (down @ across) * across
    down /= max(float(np.linalg.norm(down)), 1e-9)
    yaw = math.degrees(math.asin(float(np.clip(across[2], -1.0, 1.0))))
    pitch = math.degrees(math.asin(float(np.clip(down[2], -1.0, 1.0))))
    return yaw, pitch


def _size(pts: np.ndarray) -> float:
    p = np.asarray(pts, np.float64)[:, :3]
    return float(np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean()))


def _height(pts: np.ndarray) -> float:
    return max(float(np.linalg.norm(pts[F.CHIN, :2] - pts[F.FOREHEAD, :2])), 1e-6)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Shared area of two meshes' boxes over the smaller box: near 1 for one face fitted twice."""
    lo = np.maximum(a[:, :2].min(0), b[:, :2].min(0))
    hi = np.minimum(a[:, :2].max(0), b[:, :2].max(0))
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    area = min(float(np.prod(m[:, :2].max(0) - m[:, :2].min(0))) for m in (a, b))
    return inter / max(area, 1e-6)


def find_faces(analyzer: F.FaceAnalyzer, rgb: np.ndarray) -> list:
    """Every face FaceMesh confirms, left to right; raises NoFaceError when there is none."""
    fits: list = []
    fitted: list = []
    for level, boxes in enumerate(analyzer.candidate_levels(rgb)):
        found = 0
        for box in boxes:
            # the same face found again (at another search level) is fitted once
            if any(F._iou(box, done) > 0.5 for done in fitted):
                continue
            pts, presence = analyzer.fit(rgb, box)
            if presence > analyzer.MIN_PRESENCE_LOGIT:
                fits.append((pts, presence))
                fitted.append(box)
                found += 1
        # a finer level that finds no new face ends the search: the next finer (the most tiles)
        # would look for still smaller faces where none turned up at this size
        if level > 0 and not found:
            break
    faces: list = []
    # the best fits first, so that of one face found twice the better fit stays
    for pts, presence in sorted(fits, key=lambda f: -f[1]):
        if any(_overlap(pts, f.landmarks) > 0.5 for f in faces):
            continue
        yaw, pitch = head_pose(pts)
        faces.append(Face(pts, float(presence), yaw, pitch, _size(pts)))
    if not faces:
        raise NoFaceError("no face found in the portrait")
    faces.sort(key=lambda f: f.center[0])
    for i, f in enumerate(faces):
        f.index = i
    return faces


def check_mouth(analyzer: F.FaceAnalyzer, rgb: np.ndarray, face: Face) -> float:
    """How far (face heights) refits from moved crops put the mouth from the fit's: small
    when the mesh sits on the face; infinite when a refit loses the face."""
    if face.mouth_spread is None:
        ref = face.landmarks[list(_MOUTH), :2]
        spread = 0.0
        for pts, presence in analyzer.refits(rgb, face.landmarks, _MOVES):
            if presence <= analyzer.MIN_PRESENCE_LOGIT:
                spread = math.inf
                break
            spread = max(spread, float(np.linalg.norm(pts[list(_MOUTH), :2] - ref, axis=1).mean()))
        face.mouth_spread = spread / _height(face.landmarks)
    return face.mouth_spread


def refusal(analyzer: F.FaceAnalyzer, rgb: np.ndarray, face: Face, max_turn: float = MAX_TURN_DEG,
            several: bool = False):
    """The error that refuses the face, or None when the engine can animate it."""
    which = f"face {face.index} (left to right)" if several else "the face"
    if face.turn > max_turn:
        side = (f"turned {abs(face.yaw):.0f}° to the side" if abs(face.yaw) >= abs(face.pitch)
                else f"tilted {abs(face.pitch):.0f}° {'down' if face.pitch > 0 else 'up'}")
        return FaceTurnedError(f"{which} is {side}; talkface-1 animates faces turned at most "
                               f"{max_turn:.0f}°: use a more frontal photo")
    if check_mouth(analyzer, rgb, face) > MAX_MOUTH_SPREAD:
        return MouthNotOnLipsError(f"the mouth of {which} could not be placed on its lips (covered, hidden or "
                                   "blurred?): use a photo where the lips can be seen")
    return None


def _in_box(face: Face, box: Sequence[float]) -> bool:
    x, y = face.center
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def choose_face(analyzer: F.FaceAnalyzer, rgb: np.ndarray, face_index: Optional[int] = None,
                face_box: Optional[Sequence[float]] = None, max_turn: float = MAX_TURN_DEG) -> Face:
    """The face to animate (see the module's docstring); raises NoFaceError, NoSuchFaceError,
    FaceTurnedError or MouthNotOnLipsError with a message for the person who sent the portrait."""
    faces = find_faces(analyzer, rgb)
    several = len(faces) > 1
    if face_index is not None or face_box is not None:
        if face_index is not None:
            if not 0 <= face_index < len(faces):
                raise NoSuchFaceError(f"face_index {face_index} names no face: the portrait has {len(faces)} "
                                      f"face{'s' if several else ''} (numbered 0 to {len(faces) - 1}, left to right)")
            named = [faces[face_index]]
        else:
            named = [f for f in faces if _in_box(f, face_box)]  # type: ignore[arg-type]
            if not named:
                raise NoSuchFaceError(f"no face has its centre inside face_box {list(face_box)}"  # type: ignore[arg-type]
                                      f" (faces found: {[f.describe()['box'] for f in faces]})")
        face = max(named, key=lambda f: f.size)
        err = refusal(analyzer, rgb, face, max_turn, several)
        if err is not None:
            raise err
        return face
    # largest frontal first, then the rest by size; the first the engine can animate
    order = sorted(faces, key=lambda f: (f.turn > FRONTAL_DEG, -f.size))
    first_err = None
    for face in order:
        err = refusal(analyzer, rgb, face, max_turn, several)
        if err is None:
            return face
        first_err = first_err or err
    assert first_err is not None
    raise first_err
