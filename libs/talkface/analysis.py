"""Quality measurement of a rendered talking-head video, from the output file alone.

This is the separate analysis pass of the design: it decodes the video, finds the face
on every frame with FaceMesh and measures what a viewer sees (lip opening, mouth width,
mouth-corner and brow height), plus SSIM against the portrait outside the mouth and
eyes. It never reads the engine's internal numbers, so it can judge any engine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

from libs.talkface import api
from libs.talkface import face as F

log = logging.getLogger(__name__)

# Mesh indices used for the measurements (MediaPipe 468-point topology).
_INNER_UPPER, _INNER_LOWER = F.INNER_LIP_UPPER_MID, F.INNER_LIP_LOWER_MID
_CORNER_R, _CORNER_L = F.MOUTH_CORNERS
_EYE_OUTER_R, _EYE_OUTER_L = F.RIGHT_EYE_CORNERS[0], F.LEFT_EYE_CORNERS[0]


# --------------------------------------------------------------------------- video


def decode_video(path: str | os.PathLike) -> tuple[float, Iterator[np.ndarray]]:
    """(fps, iterator of RGB uint8 frames) of the first video stream of `path`.

    Raises api.BadVideoError when the file cannot be opened or has no video stream.
    """
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise api.BadVideoError(f"cannot open video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise api.BadVideoError(f"no video stream in {path}")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0

    def frames():
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise api.BadVideoError(f"cannot decode video {path}: {exc}") from exc
        finally:
            container.close()

    return fps, frames()


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class FaceMeasure:
    """Shape measures of one face, all divided by the inter-ocular distance (outer corners).

    - opening: gap between the inner-lip mid points (13, 14)
    - width: distance between the mouth corners (61, 291)
    - corner_height: how far the mouth corners sit above the lip centre, along the face's
      upward axis (up = positive: a smile raises it)
    - brow_height: mean height of the brows above the upper eyelids, along the same axis
    """

    opening: float
    width: float
    corner_height: float
    brow_height: float


def _face_axes(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Unit vectors across (subject's right eye to left) and up the face, and the scale."""
    xy = pts[:, :2].astype(np.float64)
    across = xy[_EYE_OUTER_L] - xy[_EYE_OUTER_R]
    iod = float(np.linalg.norm(across))
    across = across / max(iod, 1e-6)
    up = np.array([across[1], -across[0]])  # image y grows downward
    return across, up, max(iod, 1e-6)


def measure_face(pts: np.ndarray) -> FaceMeasure:
    """The shape measures of one set of 468 landmarks (image pixels)."""
    xy = pts[:, :2].astype(np.float64)
    _, up, iod = _face_axes(pts)
    opening = float(np.linalg.norm(xy[_INNER_UPPER] - xy[_INNER_LOWER])) / iod
    width = float(np.linalg.norm(xy[_CORNER_L] - xy[_CORNER_R])) / iod
    centre = (xy[_INNER_UPPER] + xy[_INNER_LOWER]) / 2.0
    corners = (xy[_CORNER_R] + xy[_CORNER_L]) / 2.0
    corner_height = float((corners - centre) @ up) / iod
    brows = xy[list(F.RIGHT_BROW_UPPER) + list(F.LEFT_BROW_UPPER)].mean(axis=0)
    lids = xy[[F.RIGHT_EYE_TOP, F.LEFT_EYE_TOP]].mean(axis=0)
    brow_height = float((brows - lids) @ up) / iod
    return FaceMeasure(opening, width, corner_height, brow_height)


@dataclass
class VideoAnalysis:
    """Per-frame measures of a video; NaN where no face was found on a frame."""

    fps: float
    opening: np.ndarray
    width: np.ndarray
    corner_height: np.ndarray
    brow_height: np.ndarray
    landmarks: np.ndarray  # (n, 468, 3), NaN where no face
    frames: Optional[list[np.ndarray]] = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.opening.size)

    @property
    def face_found(self) -> np.ndarray:
        return ~np.isnan(self.opening)


def analyze_video(
    path: str | os.PathLike,
    analyzer: Optional[F.FaceAnalyzer] = None,
    keep_frames: bool = False,
    track: bool = False,
) -> VideoAnalysis:
    """Decode `path`, find the face on every frame and measure it.

    By default every frame is detected afresh and the previous frame's landmarks are
    only a fallback when detection fails: FaceMesh started from the last frame's points
    has hysteresis (the very same picture measured 0.119 before a word and 0.128 after
    it), which would bias the rest-shape comparisons. `track=True` starts every frame
    from the last one instead (3x faster, for long videos).
    Raises api.BadVideoError when the video holds no frames.
    """
    analyzer = analyzer or F.FaceAnalyzer()
    fps, frames = decode_video(path)
    rows, marks, kept = [], [], []
    prev = None
    for rgb in frames:
        if keep_frames:
            kept.append(rgb)
        pts = None
        if track and prev is not None:
            starts = [prev]  # landmarks() itself falls back to detection
        else:
            starts = [None] + ([prev] if prev is not None else [])  # type: ignore[assignment]
        for start in starts:  # type: ignore[var-annotated]
            try:
                pts = analyzer.landmarks(rgb, prev=start)
                break
            except api.NoFaceError:
                continue
        if pts is None:
            prev = None
            rows.append((np.nan,) * 4)
            marks.append(np.full((468, 3), np.nan, np.float32))
            continue
        prev = pts
        m = measure_face(pts)
        rows.append((m.opening, m.width, m.corner_height, m.brow_height))
        marks.append(pts.astype(np.float32))
    if not rows:
        raise api.BadVideoError(f"no frames in {path}")
    arr = np.asarray(rows, np.float64)
    missing = int(np.isnan(arr[:, 0]).sum())
    if missing:
        log.warning("no face on %d of %d frames of %s", missing, len(rows), path)
    return VideoAnalysis(
        fps=fps, opening=arr[:, 0], width=arr[:, 1], corner_height=arr[:, 2],
        brow_height=arr[:, 3], landmarks=np.stack(marks), frames=kept if keep_frames else None,
    )


# --------------------------------------------------------------------------- audio


def audio_loudness(audio: str | os.PathLike | np.ndarray, fps: float, n_frames: int,
                   range_db: float = 40.0) -> np.ndarray:
    """Loudness per video frame, 0..1: RMS in dB over the frame's span [i/fps, (i+1)/fps).

    The clip's own level (95th percentile of the frames) maps to 1 and `range_db` below
    it to 0. `audio` is a path (any format) or 16 kHz mono float samples.
    """
    from libs.talkface.audio import SAMPLE_RATE, load_audio

    x = load_audio(audio) if isinstance(audio, (str, os.PathLike)) else np.asarray(audio, np.float32)
    edges = np.round(np.arange(n_frames + 1) * SAMPLE_RATE / float(fps)).astype(int)
    rms = np.zeros(n_frames)
    for i in range(n_frames):
        seg = x[min(edges[i], x.size):min(edges[i + 1], x.size)]
        rms[i] = np.sqrt(np.mean(seg.astype(np.float64) ** 2)) if seg.size else 0.0
    db = 20.0 * np.log10(rms + 1e-9)
    ref = np.percentile(db, 95) if n_frames else 0.0
    return np.clip((db - (ref - range_db)) / range_db, 0.0, 1.0)


# --------------------------------------------------------------------------- scores


class LaggedCorrelation(NamedTuple):
    r: float
    lag: int  # frames the video trails the audio by (negative: video leads)


def best_lagged_correlation(video_signal: Sequence[float], audio_signal: Sequence[float],
                            max_lag: int = 2) -> LaggedCorrelation:
    """Highest Pearson correlation of the two per-frame signals over lags within ±max_lag.

    Frames where the video signal is NaN (no face) are left out.
    """
    v = np.asarray(video_signal, np.float64)
    a = np.asarray(audio_signal, np.float64)
    n = min(v.size, a.size)
    v, a = v[:n], a[:n]
    best = LaggedCorrelation(float("-inf"), 0)
    for lag in range(-max_lag, max_lag + 1):
        # lag > 0: video frame i + lag goes with audio frame i
        vv = v[max(0, lag):n + min(0, lag)]
        aa = a[max(0, -lag):n - max(0, lag)]
        ok = ~(np.isnan(vv) | np.isnan(aa))
        if ok.sum() < 3 or np.std(vv[ok]) == 0 or np.std(aa[ok]) == 0:
            continue
        r = float(np.corrcoef(vv[ok], aa[ok])[0, 1])
        if r > best.r:
            best = LaggedCorrelation(r, lag)
    return best if np.isfinite(best.r) else LaggedCorrelation(0.0, 0)


def lip_sync_correlation(opening: Sequence[float], audio_loudness: Sequence[float],
                         max_lag: int = 2) -> float:
    """Pearson correlation of lip opening and audio loudness at the best lag within ±max_lag."""
    return best_lagged_correlation(opening, audio_loudness, max_lag).r


def _polygon_mask(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    for poly in polygons:
        if np.all(np.isfinite(poly)):
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    return mask.astype(bool)


def _grown_hull(pts: np.ndarray, grow: float) -> np.ndarray:
    """Convex hull of points, pushed out from its centroid by `grow` pixels."""
    import cv2

    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    c = hull.mean(axis=0)
    d = hull - c
    norm = np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return hull + d / norm * grow


def excluded_regions(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the mouth and eye regions of one face (True = left out of SSIM).

    The mouth region is the lower face the jaw carries: lips, chin and the jaw line
    below the mouth corners, reaching 0.3 inter-ocular distances below the chin (as far
    as the chin travels when the mouth opens wide). Each eye region includes its lids.
    """
    xy = np.asarray(landmarks, np.float64)[:, :2]
    _, up, iod = _face_axes(landmarks)
    mouth_level = float(xy[list(F.MOUTH_CORNERS)].mean(axis=0) @ up)
    jaw = [i for i in F.FACE_OVAL if float(xy[i] @ up) < mouth_level]
    lower_face = np.vstack([xy[list(F.LIPS_OUTER)], xy[jaw], xy[jaw] - up * 0.3 * iod])
    polys = [
        _grown_hull(lower_face, 0.12 * iod),
        _grown_hull(xy[list(F.RIGHT_EYE)], 0.12 * iod),
        _grown_hull(xy[list(F.LEFT_EYE)], 0.12 * iod),
    ]
    return _polygon_mask(shape, polys)


def face_box(landmarks: np.ndarray, shape: tuple[int, int], grow: float = 0.25) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the face oval grown by `grow` of its size on each side, clipped."""
    pts = np.asarray(landmarks, np.float64)[list(F.FACE_OVAL), :2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = hi - lo
    lo = np.maximum(0, np.floor(lo - grow * size)).astype(int)
    hi = np.minimum([shape[1], shape[0]], np.ceil(hi + grow * size)).astype(int)
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


# Points of the skull that no expression moves (forehead, nose ridge, eye corners, temples):
# where a frame's head pose is read from.
RIGID_POINTS = (10, 109, 67, 338, 297, 151, 9, 8, 168, 6, 197, 195, 5, 4, 33, 133, 263, 362, 127, 356,
                234, 454, 93, 323, 116, 345)


def pose_align(frame_rgb: np.ndarray, landmarks: np.ndarray, reference_landmarks: np.ndarray) -> tuple:
    """(the frame, its landmarks) turned, scaled and moved so that its head sits as the
    reference's does: the similarity that best takes the frame's rigid points onto the
    reference's. Identity is then judged on the face, not on where the head has moved."""
    import cv2

    src = np.asarray(landmarks, np.float64)[list(RIGID_POINTS), :2]
    dst = np.asarray(reference_landmarks, np.float64)[list(RIGID_POINTS), :2]
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None:
        return frame_rgb, landmarks
    h, w = frame_rgb.shape[:2]
    out = cv2.warpAffine(frame_rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    marks = np.array(landmarks, np.float64, copy=True)
    marks[:, :2] = marks[:, :2] @ m[:, :2].T + m[:, 2]
    return out, marks


def pose_ssim_map(reference_grey: np.ndarray, frame_rgb: np.ndarray, landmarks: np.ndarray,
                  reference_landmarks: np.ndarray) -> np.ndarray:
    """SSIM map (luma) of a frame against the reference, each pixel judged as part of the
    head (the frame turned onto the reference's pose: pose_align) or of the still picture
    around it (the frame as it is), whichever it is: the better of the two."""
    import cv2
    from skimage.metrics import structural_similarity

    aligned, _ = pose_align(frame_rgb, landmarks, reference_landmarks)
    _, head_map = structural_similarity(reference_grey, cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY), data_range=255,
                                        full=True)
    _, still_map = structural_similarity(reference_grey, cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2GRAY),
                                         data_range=255, full=True)
    return np.maximum(head_map, still_map)


def ssim_outside_regions(reference_rgb: np.ndarray, frame_rgb: np.ndarray, landmarks: np.ndarray,
                         reference_landmarks: Optional[np.ndarray] = None, *,
                         whole_frame: bool = False, align: bool = False) -> float:
    """Mean SSIM (luma) of two same-size RGB images over the head, outside mouth and eyes.

    The compared area is the face box (face oval grown by a quarter, which takes in hair,
    ears and neck) of the reference, or of the frame when no reference landmarks are
    given: over the whole frame a still background would hide a damaged face.
    `whole_frame=True` compares everything outside mouth and eyes instead.
    `landmarks` are the frame's; with `reference_landmarks` the mouth and eye regions of
    both faces are left out. `align=True` (with `reference_landmarks`) compares the head
    pose-aligned (pose_align) and what lies beyond the face box as it is: a head that
    nods is still the same face, and the background must not move.
    """
    import cv2
    from scipy.ndimage import binary_dilation
    from skimage.metrics import structural_similarity

    if reference_rgb.shape != frame_rgb.shape:
        raise ValueError(f"image sizes differ: {reference_rgb.shape} vs {frame_rgb.shape}")
    raw, landmarks_raw = frame_rgb, landmarks
    if align and reference_landmarks is not None:
        frame_rgb, landmarks = pose_align(frame_rgb, landmarks, reference_landmarks)
        align = True
    else:
        align = False
    shape = frame_rgb.shape[:2]
    mask = excluded_regions(landmarks, shape)
    if reference_landmarks is not None:
        mask |= excluded_regions(reference_landmarks, shape)
    if whole_frame:
        x0, y0, x1, y1 = 0, 0, shape[1], shape[0]
    else:
        x0, y0, x1, y1 = face_box(reference_landmarks if reference_landmarks is not None else landmarks, shape)
    # SSIM's 7x7 window reaches 3 px into the excluded region: keep those pixels out too.
    keep = ~binary_dilation(mask, iterations=3)[y0:y1, x0:x1]
    a = cv2.cvtColor(np.ascontiguousarray(reference_rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(np.ascontiguousarray(frame_rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    if min(a.shape) < 7 or not keep.any():
        return float("nan")
    if align and whole_frame:
        grey = cv2.cvtColor(np.ascontiguousarray(reference_rgb), cv2.COLOR_RGB2GRAY)
        ssim_map = pose_ssim_map(grey, raw, landmarks_raw, reference_landmarks)  # type: ignore[arg-type]
    else:
        _, ssim_map = structural_similarity(a, b, data_range=255, full=True)
    return float(ssim_map[keep].mean())
