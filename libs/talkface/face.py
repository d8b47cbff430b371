"""Find a face and its 468 FaceMesh landmarks in an RGB image (BlazeFace + FaceMesh on LiteRT).

Detection runs two BlazeFace models and merges their boxes: the short-range model
(128 px input) for faces that fill much of the frame and the full-range sparse model
(192 px input) for small faces anywhere in a large picture. The landmark model then
runs on a square crop about 1.5x the face, rotated upright by the eye line, and its
468 points are mapped back to image pixels. Given the previous frame's landmarks the
crop comes from them instead (tracking), which skips detection.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from . import models as _models
from .api import NoFaceError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Named index groups of the 468-point MediaPipe mesh (image-left = the subject's right).
# ---------------------------------------------------------------------------------------

MOUTH_CORNERS = (61, 291)  # outer corners: subject's right, left
INNER_CORNERS = (78, 308)
INNER_LIP_UPPER_MID = 13
INNER_LIP_LOWER_MID = 14
OUTER_LIP_UPPER_MID = 0
OUTER_LIP_LOWER_MID = 17

# Contours run from the right corner (61/78) to the left corner (291/308).
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIPS_OUTER = LIPS_OUTER_UPPER + LIPS_OUTER_LOWER[-2:0:-1]  # closed polygon
LIPS_INNER = LIPS_INNER_UPPER + LIPS_INNER_LOWER[-2:0:-1]
LIPS_ALL = tuple(sorted(set(LIPS_OUTER + LIPS_INNER)))

# Eye contours, outer corner -> inner corner; upper[i] faces lower[i].
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
# The rings just outside the lid contours (used to make the lid skin follow a blink).
RIGHT_EYE_UPPER_RING = (247, 30, 29, 27, 28, 56, 190)
RIGHT_EYE_LOWER_RING = (130, 25, 110, 24, 23, 22, 26, 112, 243)
LEFT_EYE_UPPER_RING = (467, 260, 259, 257, 258, 286, 414)
LEFT_EYE_LOWER_RING = (359, 255, 339, 254, 253, 252, 256, 341, 463)
RIGHT_EYE = RIGHT_EYE_UPPER + RIGHT_EYE_LOWER[-2:0:-1]
LEFT_EYE = LEFT_EYE_UPPER + LEFT_EYE_LOWER[-2:0:-1]
RIGHT_EYE_TOP, RIGHT_EYE_BOTTOM = 159, 145
LEFT_EYE_TOP, LEFT_EYE_BOTTOM = 386, 374
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)

# Brows, outer end -> inner end.
RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)
RIGHT_BROW = RIGHT_BROW_UPPER + RIGHT_BROW_LOWER
LEFT_BROW = LEFT_BROW_UPPER + LEFT_BROW_LOWER

RIGHT_CHEEK = (205, 50, 187, 123, 116, 117, 118, 101, 36, 206)
LEFT_CHEEK = (425, 280, 411, 352, 345, 346, 347, 330, 266, 426)

NOSE_TIP = 1
NOSE_BRIDGE = 168
NOSE_WINGS = (129, 358)  # alae, right / left
FOREHEAD = 10
CHIN = 152
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379,
             378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127,
             162, 21, 54, 103, 67, 109)

# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceBox:
    """A detected face in image pixels; `eyes` is ((rx, ry), (lx, ly)) of the subject."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    eyes: tuple

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)


def _ssd_anchors(input_size: int, strides: list, per_cell: list) -> np.ndarray:
    """Anchor centres (x, y) in [0, 1] in BlazeFace's order (layers with equal strides merged)."""
    out = []
    i = 0
    while i < len(strides):
        stride = strides[i]
        n = 0
        while i < len(strides) and strides[i] == stride:
            n += per_cell[i]
            i += 1
        size = int(math.ceil(input_size / stride))
        ys, xs = np.mgrid[0:size, 0:size]
        centres = np.stack([(xs + 0.5) / size, (ys + 0.5) / size], -1).reshape(-1, 2)
        out.append(np.repeat(centres, n, axis=0))
    return np.concatenate(out).astype(np.float32)


class _Detector:
    """One BlazeFace model with its anchors and thresholds."""

    def __init__(self, path, size, strides, per_cell, min_score, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.size = size
        self.min_score = min_score
        self.anchors = _ssd_anchors(size, strides, per_cell)
        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]["index"]
        outs = self.interp.get_output_details()
        # regressors have 16 values per anchor, scores 1
        self.reg = next(o["index"] for o in outs if o["shape"][-1] == 16)
        self.cls = next(o["index"] for o in outs if o["shape"][-1] == 1)
        if len(self.anchors) != outs[0]["shape"][1]:
            raise RuntimeError(f"anchor count mismatch for {path}")

    def __call__(self, rgb: np.ndarray) -> list:
        h, w = rgb.shape[:2]
        side = max(h, w)
        # letterbox to a centred square so the model sees undistorted faces
        scale = self.size / side
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((self.size, self.size, 3), np.float32)
        ox, oy = (self.size - nw) // 2, (self.size - nh) // 2
        small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        canvas[oy:oy + nh, ox:ox + nw] = small.astype(np.float32) * (2.0 / 255.0) - 1.0
        self.interp.set_tensor(self.inp, canvas[None])
        self.interp.invoke()
        raw = self.interp.get_tensor(self.reg)[0]
        logits = np.clip(self.interp.get_tensor(self.cls)[0, :, 0].astype(np.float64), -100, 100)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = np.nonzero(scores >= self.min_score)[0]
        if not len(keep):
            return []
        # decode against the anchors, then undo the letterbox: unit square -> image pixels
        r = raw[keep] / self.size
        anchor = self.anchors[keep]
        centre = r[:, 0:2] + anchor
        half = r[:, 2:4] / 2
        eyes = r[:, 4:8].reshape(-1, 2, 2) + anchor[:, None, :]
        off = np.array([ox, oy], np.float32)

        def px(unit):
            return (unit * self.size - off) / scale

        lo, hi, eyes = px(centre - half), px(centre + half), px(eyes)
        return [FaceBox(float(lo[k, 0]), float(lo[k, 1]), float(hi[k, 0]), float(hi[k, 1]),
                        float(scores[keep[k]]),
                        (tuple(map(float, eyes[k, 0])), tuple(map(float, eyes[k, 1]))))
                for k in range(len(keep))]


def _iou(a: FaceBox, b: FaceBox) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def _weighted_nms(boxes: list, thresh: float = 0.3) -> list:
    """BlazeFace's weighted NMS: overlapping boxes are averaged by score, not dropped."""
    remaining = sorted(boxes, key=lambda b: -b.score)
    out = []
    while remaining:
        top = remaining[0]
        group = [b for b in remaining if _iou(top, b) > thresh]
        remaining = [b for b in remaining if _iou(top, b) <= thresh]
        ws = np.array([b.score for b in group])
        ws = ws / ws.sum()
        def avg(get):
            return float(sum(w * get(b) for w, b in zip(ws, group)))  # noqa: B023 - called in this iteration
        eyes = tuple(
            (avg(lambda b, i=i: b.eyes[i][0]), avg(lambda b, i=i: b.eyes[i][1])) for i in range(2)
        )
        out.append(FaceBox(avg(lambda b: b.x0), avg(lambda b: b.y0), avg(lambda b: b.x1),
                           avg(lambda b: b.y1), top.score, eyes))
    return out


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


class FaceAnalyzer:
    """Face detection and 468-point landmarks; load once, call from one thread at a time.

    A lock makes concurrent calls safe (the interpreters are not re-entrant) but serial.
    """

    MESH_SIZE = 192
    CROP_SCALE = 1.5
    # FaceMesh's presence logit is about 25 on a clear face and negative without one.
    MIN_PRESENCE_LOGIT = 0.0
    MIN_TILE = 160  # px; smaller tiles hold faces too small to animate anyway

    def __init__(self, models_dir=None, threads: int = 2):
        base = _models.models_dir(models_dir)
        self._short = _Detector(base / _models.FACE_DETECTOR_SHORT, 128, [8, 16, 16, 16],
                                [2, 2, 2, 2], 0.5, threads)
        self._full = _Detector(base / _models.FACE_DETECTOR_FULL, 192, [4], [1], 0.6, threads)
        from ai_edge_litert.interpreter import Interpreter

        self._mesh = Interpreter(model_path=str(base / _models.FACE_LANDMARKS), num_threads=threads)
        self._mesh.allocate_tensors()
        self._mesh_in = self._mesh.get_input_details()[0]["index"]
        outs = self._mesh.get_output_details()
        self._mesh_pts = next(o["index"] for o in outs if o["shape"][-1] == 1404)
        self._mesh_flag = next(o["index"] for o in outs if o["shape"][-1] == 1)
        self._lock = threading.Lock()

    # -- detection ------------------------------------------------------------------

    def _levels(self, rgb: np.ndarray):
        """Candidate faces, one list per search level, each best first.

        The whole picture is searched first; then overlapping tiles (halves, then
        quarters) for faces too small for the full-range model's 192 px view of the
        whole image. Callers stop at the first level that gives them a face.
        """
        h, w = rgb.shape[:2]
        with self._lock:
            boxes = self._short(rgb) + self._full(rgb)
        yield self._rank(boxes)
        for div in (2, 4):
            tile = max(h, w) // div
            if tile < self.MIN_TILE:
                return
            step = tile // 2
            boxes = []
            for y in range(0, max(1, h - tile + step), step):
                for x in range(0, max(1, w - tile + step), step):
                    with self._lock:
                        found = self._full(rgb[y:y + tile, x:x + tile])
                    boxes += [FaceBox(b.x0 + x, b.y0 + y, b.x1 + x, b.y1 + y, b.score,
                                      tuple((ex + x, ey + y) for ex, ey in b.eyes)) for b in found]
            yield self._rank(boxes)

    @staticmethod
    def _rank(boxes: list) -> list:
        faces = _weighted_nms(boxes)
        faces.sort(key=lambda b: -(b.width * b.height * b.score))
        return faces

    def detect_all(self, rgb: np.ndarray) -> list:
        """Every face of the first search level that finds any, best first."""
        for faces in self._levels(_rgb(rgb)):
            if faces:
                return faces
        return []

    def candidate_levels(self, rgb: np.ndarray):
        """Candidate faces level by level (whole picture, halves, quarters), each list best first;
        the same face may come from several levels."""
        return self._levels(_rgb(rgb))

    def detect(self, rgb: np.ndarray) -> Optional[FaceBox]:
        """The main face (largest, most confident) or None."""
        faces = self.detect_all(rgb)
        return faces[0] if faces else None

    # -- landmarks ------------------------------------------------------------------

    def _crop_matrix(self, center, size, angle) -> np.ndarray:
        """2x3 affine taking image pixels to the 192 px upright crop."""
        s = self.MESH_SIZE / size
        c, si = math.cos(angle), math.sin(angle)
        # rotate by -angle about the centre (makes the eye line horizontal), then scale
        m = np.array([[c * s, si * s, 0.0], [-si * s, c * s, 0.0]])
        m[:, 2] = np.array([self.MESH_SIZE / 2, self.MESH_SIZE / 2]) - m[:, :2] @ np.asarray(center)
        return m

    def _run_mesh(self, rgb, center, size, angle):
        m = self._crop_matrix(center, size, angle)
        crop = cv2.warpAffine(rgb, m, (self.MESH_SIZE, self.MESH_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        with self._lock:
            self._mesh.set_tensor(self._mesh_in, (crop.astype(np.float32) * (1.0 / 255.0))[None])
            self._mesh.invoke()
            pts = self._mesh.get_tensor(self._mesh_pts).reshape(468, 3).copy()
            flag = float(self._mesh.get_tensor(self._mesh_flag).reshape(-1)[0])
        inv = cv2.invertAffineTransform(m)
        xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
        # z is in crop pixels; bring it to image pixels like x and y
        z = pts[:, 2] * (size / self.MESH_SIZE)
        return np.column_stack([xy, z]).astype(np.float32), flag

    @staticmethod
    def _roi_from_points(pts: np.ndarray):
        r = pts[RIGHT_EYE_CORNERS[0], :2]
        l = pts[LEFT_EYE_CORNERS[0], :2]
        angle = math.atan2(l[1] - r[1], l[0] - r[0])
        # bounding box in the upright frame, so the crop size does not grow with roll
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s], [s, c]])
        upright = pts[:, :2] @ rot
        lo, hi = upright.min(0), upright.max(0)
        center = ((lo + hi) / 2) @ rot.T
        size = float(max(hi - lo)) * FaceAnalyzer.CROP_SCALE
        return center, size, angle

    def _roi_from_box(self, box: FaceBox):
        (rx, ry), (lx, ly) = box.eyes
        angle = math.atan2(ly - ry, lx - rx)
        size = max(box.width, box.height) * self.CROP_SCALE
        # BlazeFace boxes sit low on the forehead; nudge the crop up a little
        cx, cy = box.center
        return np.array([cx, cy - 0.05 * box.height]), size, angle

    def fit(self, rgb: np.ndarray, box: FaceBox) -> tuple:
        """(landmarks, presence logit) of the face in a detector box, in two passes as landmarks() does."""
        rgb = _rgb(rgb)
        pts, flag = self._run_mesh(rgb, *self._roi_from_box(box))
        if flag <= self.MIN_PRESENCE_LOGIT:
            return pts, flag
        pts2, flag2 = self._run_mesh(rgb, *self._roi_from_points(pts))
        return (pts2, flag2) if flag2 > self.MIN_PRESENCE_LOGIT else (pts, flag)

    def refits(self, rgb: np.ndarray, pts: np.ndarray, moves) -> list:
        """(landmarks, presence logit) fitted again from crops around `pts` moved by each
        (dx, dy, scale) of `moves` (dx, dy in units of the crop's size): a fit that sits on the
        face comes back to the same place from any of them."""
        rgb = _rgb(rgb)
        center, size, angle = self._roi_from_points(pts)
        return [self._run_mesh(rgb, np.asarray(center) + np.array([dx, dy]) * size, size * scale, angle)
                for dx, dy, scale in moves]

    def landmarks(self, rgb: np.ndarray, prev: Optional[np.ndarray] = None, detect: bool = True) -> np.ndarray:
        """468x3 float32 landmarks (x, y in image pixels, z relative depth in pixels).

        `prev`: last frame's landmarks; the crop is built from them and detection is
        skipped unless the face was lost (with `detect=False` a lost face is not searched
        for: the caller wants that face, not another). Raises NoFaceError when there is no face.
        """
        rgb = _rgb(rgb)
        if rgb.dtype != np.uint8:
            raise ValueError("landmarks() expects an 8-bit RGB image")
        if prev is not None:
            pts, flag = self._run_mesh(rgb, *self._roi_from_points(prev))
            if flag > self.MIN_PRESENCE_LOGIT:
                return pts
            if not detect:
                raise NoFaceError("the face was lost")
        seen_any = False
        for faces in self._levels(rgb):
            # the detector can fire on face-like things (a cat); FaceMesh's presence decides
            for box in faces[:3]:
                seen_any = True
                pts, flag = self._run_mesh(rgb, *self._roi_from_box(box))
                if flag <= self.MIN_PRESENCE_LOGIT:
                    continue
                # a second pass from the landmarks' own box is how MediaPipe's tracker settles
                pts2, flag2 = self._run_mesh(rgb, *self._roi_from_points(pts))
                return pts2 if flag2 > self.MIN_PRESENCE_LOGIT else pts
        if seen_any:
            raise NoFaceError("a face-like region was found but no face could be confirmed in it")
        raise NoFaceError("no face found in the image")

    def presence(self, rgb: np.ndarray, pts: np.ndarray) -> float:
        """FaceMesh's face-presence logit for the crop around `pts` (for tracking checks)."""
        return self._run_mesh(_rgb(rgb), *self._roi_from_points(pts))[1]
