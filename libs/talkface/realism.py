"""Does the mouth look like a person reading aloud? Measures on an output video alone.

The second half of the analysis pass (analysis.py decodes and measures the faces): given
the per-frame landmarks of a rendered video, the portrait it was made from, the speech
and a phone alignment of that speech, it reports what DESIGN.md's realism criteria ask
about, all in face heights (FaceMesh point 10 to 152 on the portrait):

- how wide the lips part (95th percentile), and how much less on IY/IH than on open vowels;
- whether the chin follows the lower lip (a jaw turning, not lips stretching);
- whether the lips close inside M/B/P, how well the opening follows the loudness;
- whether the face keeps its fine detail, and a grey photo keeps a grey mouth.

It never reads the engine's internal numbers, so it can judge any engine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from libs.talkface import analysis
from libs.talkface import face as F

OPEN_VOWELS = ("AA", "AE", "AO", "AY", "AW", "AH")
CLOSE_FRONT_VOWELS = ("IY", "IH")
BILABIALS = ("M", "B", "P")
MIN_CLOSURE_S = 0.05  # M/B/P phones shorter than this are not judged
PAUSE_LOUDNESS = 0.15  # silence in the alignment this quiet is a pause (recordings hiss)


@dataclass(frozen=True)
class Phone:
    """One phone of an alignment, in seconds."""

    start: float
    end: float
    label: str  # ARPAbet, "SIL" for silence


def load_alignment(path: str | os.PathLike) -> list[Phone]:
    """Phones of a PocketSphinx alignment file (`*.phone.json`: words, each with its phones)."""
    data = json.loads(open(path, encoding="utf-8").read())
    return [Phone(float(p["b"]), float(p["b"]) + float(p["d"]), str(p["t"]))
            for word in data["w"] for p in word["w"]]


def frame_labels(phones: Sequence[Phone], fps: float, n_frames: int) -> np.ndarray:
    """The phone at each video frame's centre time (None where no phone covers it)."""
    centres = (np.arange(n_frames) + 0.5) / fps
    labels = np.full(n_frames, None, dtype=object)
    for p in phones:
        labels[(centres >= p.start) & (centres < p.end)] = p.label
    return labels


def face_height(landmarks: np.ndarray) -> float:
    """Forehead (10) to chin (152), pixels."""
    return float(np.linalg.norm(landmarks[F.FOREHEAD, :2] - landmarks[F.CHIN, :2]))


def inner_gap(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap (13 to 14) per frame, pixels; landmarks (n, 468, >=2)."""
    return np.linalg.norm(landmarks[:, F.INNER_LIP_UPPER_MID, :2] - landmarks[:, F.INNER_LIP_LOWER_MID, :2], axis=1)


def _vertical(landmarks: np.ndarray, rest: np.ndarray, point: int, fh: float) -> np.ndarray:
    """How far `point` sits below its place in the portrait, along the face's vertical and
    measured from the nose bridge (so head motion cancels), in face heights."""
    down = rest[F.CHIN, :2] - rest[F.FOREHEAD, :2]
    down = down / max(float(np.linalg.norm(down)), 1e-6)
    now = (landmarks[:, point, :2] - landmarks[:, F.NOSE_BRIDGE, :2]) @ down
    then = float((rest[point, :2] - rest[F.NOSE_BRIDGE, :2]) @ down)
    return (now - then) / fh


@dataclass
class MouthReport:
    """The realism measures of one rendered video (lengths in face heights)."""

    gap_p95: float  # inner-lip gap, 95th percentile
    rest_gap: float  # the portrait's own gap
    close_vowel_opening: float  # mean opening above rest (pauses, else portrait) on IY/IH frames
    close_vowel_frames: int
    open_vowel_opening: float  # mean opening above rest on open-vowel frames
    open_vowel_frames: int
    chin_slope: float  # regression slope of chin drop on lower-lip drop
    closures: int  # M/B/P phones >= MIN_CLOSURE_S inside which the lips closed
    bilabials: int  # M/B/P phones >= MIN_CLOSURE_S
    loudness_r: float  # opening vs loudness, best lag within +-2 frames
    pause_gap: Optional[float] = None  # median gap in the pauses, when there are some

    @property
    def close_vowel_ratio(self) -> float:
        """Opening above rest on IY/IH over that on open vowels."""
        return close_vowel_ratio([self])


def close_vowel_ratio(reports: Sequence[MouthReport]) -> float:
    """Opening above rest on IY/IH over that on open vowels, over the frames of all `reports`."""
    def mean(value: str, count: str) -> float:
        n = sum(getattr(r, count) for r in reports)
        return sum(getattr(r, value) * getattr(r, count) for r in reports if getattr(r, count)) / n if n else float("nan")

    above_open = mean("open_vowel_opening", "open_vowel_frames")
    return mean("close_vowel_opening", "close_vowel_frames") / above_open if above_open > 1e-6 else float("nan")


def mouth_report(video: analysis.VideoAnalysis, portrait_landmarks: np.ndarray, audio: str | os.PathLike,
                 phones: Sequence[Phone]) -> MouthReport:
    """Measure the mouth of `video` (made from a portrait whose landmarks are given) against
    the speech it was made from and that speech's phone alignment."""
    fh = face_height(portrait_landmarks)
    marks = video.landmarks
    n, fps = video.n_frames, video.fps
    gap = inner_gap(marks) / fh
    rest_gap = float(np.linalg.norm(portrait_landmarks[F.INNER_LIP_UPPER_MID, :2]
                                    - portrait_landmarks[F.INNER_LIP_LOWER_MID, :2])) / fh
    labels = frame_labels(phones, fps, n)
    loud = analysis.audio_loudness(audio, fps, n)
    pauses = (labels == "SIL") & (loud <= PAUSE_LOUDNESS)
    pause_gap = float(np.nanmedian(gap[pauses])) if pauses.sum() >= 3 else None
    # openings count from the rest the video shows in its pauses (a portrait caught
    # mid-word rests shut), else from the portrait's own
    base = pause_gap if pause_gap is not None else rest_gap
    open_v = np.isin(labels, OPEN_VOWELS)
    close_v = np.isin(labels, CLOSE_FRONT_VOWELS)
    above_open = float(np.nanmean(gap[open_v])) - base if open_v.any() else 0.0
    above_close = float(np.nanmean(gap[close_v])) - base if close_v.any() else 0.0

    lip = _vertical(marks, portrait_landmarks, F.INNER_LIP_LOWER_MID, fh)
    chin = _vertical(marks, portrait_landmarks, F.CHIN, fh)
    ok = np.isfinite(lip) & np.isfinite(chin)
    slope = float(np.polyfit(lip[ok], chin[ok], 1)[0]) if ok.sum() > 3 and np.ptp(lip[ok]) > 0 else float("nan")

    # closed: within a quarter of the way from the video's most closed state (its 5th
    # percentile) to its median on open vowels
    closed_level = float(np.nanpercentile(gap, 5))
    open_level = float(np.nanmedian(gap[open_v])) if open_v.any() else float(np.nanmax(gap))
    threshold = closed_level + 0.25 * (open_level - closed_level)
    centres = (np.arange(n) + 0.5) / fps
    judged = closed = 0
    for p in phones:
        if p.label not in BILABIALS or p.end - p.start < MIN_CLOSURE_S:
            continue
        inside = (centres >= p.start) & (centres < p.end)
        if not inside.any():
            continue
        judged += 1
        closed += int(np.nanmin(gap[inside]) <= threshold)

    r = analysis.best_lagged_correlation(gap, loud, max_lag=2).r  # type: ignore[arg-type]
    return MouthReport(float(np.nanpercentile(gap, 95)), rest_gap, above_close, int(close_v.sum()), above_open,
                       int(open_v.sum()), slope, closed, judged, r, pause_gap)


def detail_ratio(portrait: np.ndarray, portrait_landmarks: np.ndarray, frames: Sequence[np.ndarray],
                 frame_landmarks: Optional[Sequence[np.ndarray]] = None) -> float:
    """Fine detail kept on the face, relative to the still background.

    The Laplacian variance of the face (inside its outline, outside mouth and eyes) as a
    fraction of the portrait's, over the same fraction for the background far from the
    face: 1 means the face keeps its detail as well as the untouched background does.
    With `frame_landmarks` each frame's face is measured where that frame has it (a head
    that moves is not compared on the portrait's outline)."""
    h, w = portrait.shape[:2]

    def face_mask(marks: np.ndarray) -> np.ndarray:
        face = np.zeros((h, w), np.uint8)
        cv2.fillPoly(face, [np.round(marks[list(F.FACE_OVAL), :2]).astype(np.int32)], 1)
        return face.astype(bool) & ~analysis.excluded_regions(marks, (h, w))

    portrait_face = face_mask(portrait_landmarks)
    x0, y0, x1, y1 = analysis.face_box(portrait_landmarks, (h, w), grow=0.5)
    background = np.ones((h, w), bool)
    background[y0:y1, x0:x1] = False
    if background.sum() < 100:
        raise ValueError("the picture has too little background beside the face to compare with")

    def detail(rgb: np.ndarray, mask: np.ndarray) -> float:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=3)[mask].var())

    face_ref, back_ref = detail(portrait, portrait_face), detail(portrait, background)
    masks = ([face_mask(m) if np.all(np.isfinite(m)) else portrait_face for m in frame_landmarks]
             if frame_landmarks is not None else [portrait_face] * len(frames))
    face_kept = np.mean([detail(f, m) for f, m in zip(frames, masks)]) / face_ref
    back_kept = np.mean([detail(f, background) for f in frames]) / back_ref
    return float(face_kept / back_kept)


def mouth_chroma(frames: Sequence[np.ndarray], landmarks: np.ndarray) -> float:
    """The most colour (max - min channel, 99th percentile) inside the outer lips over the
    frames: 0 for a grey mouth."""
    worst = 0.0
    for rgb, pts in zip(frames, landmarks):
        if not np.all(np.isfinite(pts)):
            continue
        mask = np.zeros(rgb.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(pts[list(F.LIPS_OUTER), :2]).astype(np.int32)], 1)
        px = rgb[mask.astype(bool)].astype(np.int16)
        if len(px):
            worst = max(worst, float(np.percentile(px.max(1) - px.min(1), 99)))
    return worst
