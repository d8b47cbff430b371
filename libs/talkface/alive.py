"""Is the face alive? Blinks, gaze and head motion measured on an output video alone.

The eyes and head half of the analysis pass (analysis.py decodes the video and finds the
face on every frame; realism.py judges the mouth). From the per-frame landmarks, the
frames and the speech it reports:

- the eye opening per frame (lid gap over eye width) and the blinks in it: how far each
  closes against the open eye, how long it lasts, how often blinks come;
- the colour of a shut eye against the lid skin above the eye and against the open eye;
- the head's rotation against the portrait (Kabsch on FaceMesh's rigid points, in 3D),
  how far it goes and how it follows the voice's stressed syllables;
- whether the neck and collar below the chin stay as the portrait has them.

It never reads the engine's internal numbers, so it can judge any engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from libs.talkface import analysis
from libs.talkface import face as F

# Lid pairs across the middle of each eye (upper, lower), and the eye corners.
_LIDS = (((160, 144), (159, 145), (158, 153)), ((387, 373), (386, 374), (385, 380)))
_CORNERS = (F.RIGHT_EYE_CORNERS, F.LEFT_EYE_CORNERS)
RIGID = analysis.RIGID_POINTS
BLINK_BELOW = 0.6  # a blink: the opening below this share of the open eye's


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
    """Per frame, the lids' gap over the eye's width, averaged over both eyes ((n,); NaN
    where no face)."""
    xy = np.asarray(landmarks, np.float64)[..., :2]
    out = []
    for pairs, (a, b) in zip(_LIDS, _CORNERS):
        gap = np.mean([np.linalg.norm(xy[:, u] - xy[:, lo], axis=-1) for u, lo in pairs], 0)
        out.append(gap / np.maximum(np.linalg.norm(xy[:, a] - xy[:, b], axis=-1), 1e-6))
    return np.mean(out, 0)


@dataclass(frozen=True)
class Blink:
    """One blink seen in a video: frames start..end (inclusive) below BLINK_BELOW of open."""

    start: int
    end: int
    deepest: int  # the frame where the eye is most shut
    depth: float  # the opening there over the open eye's (0 shut .. 1 open)
    whole: bool  # not cut off by the start or the end of the video (so it may not have shut)


def blinks(opening: np.ndarray) -> tuple[list[Blink], float]:
    """(the blinks, the open eye's opening: the median) of an eye-opening series."""
    opening = np.asarray(opening, np.float64)
    open_level = float(np.nanmedian(opening))
    shut = np.nan_to_num(opening, nan=open_level) < BLINK_BELOW * open_level
    out = []
    i = 0
    while i < len(shut):
        if shut[i]:
            j = i
            while j + 1 < len(shut) and shut[j + 1]:
                j += 1
            k = i + int(np.nanargmin(opening[i:j + 1]))
            out.append(Blink(i, j, k, float(opening[k] / open_level), i > 0 and j < len(shut) - 1))
            i = j + 1
        else:
            i += 1
    return out, open_level


class EyeOpening:
    """How far the eyes are open, measured on the pictures (FaceMesh's lid points do not
    follow a shut eye all the way: on real blinks too they stop at about half the gap).

    Frames are turned onto the portrait's pose (analysis.pose_align). Down each column
    across the iris (and a tenth of the eye's width either side, where a glance aside
    takes it), the opening is the longest run of dark pixels: iris, pupil and the lashes
    at its edge, darker than halfway from the portrait's iris to its lid skin. A lid over
    the eye leaves only its line of lashes; an eye squeezed shut leaves a band as thick as
    it is squeezed. Per eye the column of the widest run counts (a tenth-of-the-width
    median, so one dark hair does not), both eyes averaged, over the portrait's own."""

    def __init__(self, portrait: np.ndarray, landmarks: np.ndarray):
        self.landmarks = np.asarray(landmarks, np.float64)
        grey = cv2.cvtColor(np.ascontiguousarray(portrait), cv2.COLOR_RGB2GRAY).astype(np.float64)
        xy = self.landmarks[:, :2]
        self.eyes = []  # per eye: (y0, y1, x0, x1, threshold, window)
        for upper, lower, (a, b) in ((F.RIGHT_EYE_UPPER, F.RIGHT_EYE_LOWER, F.RIGHT_EYE_CORNERS),
                                     (F.LEFT_EYE_UPPER, F.LEFT_EYE_LOWER, F.LEFT_EYE_CORNERS)):
            width = float(np.linalg.norm(xy[a] - xy[b]))
            mid = (xy[a] + xy[b]) / 2
            top = float(xy[list(upper)[3:6], 1].mean())
            bottom = float(xy[list(lower)[3:6], 1].mean())
            x0, x1 = int(round(mid[0] - 0.35 * width)), int(round(mid[0] + 0.35 * width)) + 1
            inside = grey[int(round(top)):int(round(bottom)) + 1, x0:x1]
            skin = grey[int(round(top - 0.3 * width)):int(round(top - 0.12 * width)), x0:x1]
            threshold = (float(np.percentile(inside, 15)) + float(np.median(skin))) / 2
            self.eyes.append((int(round(top - 0.12 * width)), int(round(bottom + 0.08 * width)) + 1, x0, x1,
                              threshold, max(1, int(round(0.1 * width)))))
        self.open = self._runs(portrait)

    def _runs(self, rgb: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float64)
        out = []
        for y0, y1, x0, x1, threshold, window in self.eyes:
            dark = grey[y0:y1, x0:x1] < threshold
            runs = np.zeros(dark.shape[1])
            for c in range(dark.shape[1]):
                best = cur = 0
                for d in dark[:, c]:
                    cur = cur + 1 if d else 0
                    best = max(best, cur)
                runs[c] = best
            # the widest run that a tenth of the eye's width of columns share
            out.append(max(float(np.median(runs[k:k + window])) for k in range(0, max(1, len(runs) - window + 1))))
        return np.array(out)

    def opening(self, frame: np.ndarray, landmarks: np.ndarray) -> float:
        """The eyes' dark run over the portrait's (1 open as in the portrait, 0 shut)."""
        if not np.all(np.isfinite(landmarks)):
            return float("nan")
        aligned, _ = analysis.pose_align(frame, landmarks, self.landmarks)
        return float(np.mean(self._runs(aligned) / np.maximum(self.open, 1.0)))


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb.reshape(-1, 1, 3)), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64) \
        * np.array([100 / 255, 1, 1]) - np.array([0, 128, 128])


@dataclass(frozen=True)
class ShutEyeColour:
    """Colours (CIELAB, median) around one blink, and their differences (Delta E 1976)."""

    to_lid: float  # the shut eye's region against the lid skin above it
    to_open_eye: float  # the shut eye's region against the same region with the eye open
    # lightness (L*): the skin above the open eye (lid skin, or a deep-set eye's socket in
    # the brow's shadow), the shut eye's region, and the skin under the eye
    above: float = 0.0
    shut: float = 0.0
    under: float = 0.0


def shut_eye_colour(open_frame: np.ndarray, open_marks: np.ndarray, shut_frame: np.ndarray) -> ShutEyeColour:
    """Compare the eye region (the open eye's lids' outline, both eyes) of a frame with the
    eye shut against the lid skin just above it (from 0.1 to 0.22 eye widths above the
    upper lid of the open eye: above the lashes, below a brow or a glasses' rim) and
    against the open eye's own region; with the lightness of those and of the skin under
    the eye (from 0.06 to 0.2 eye widths below the lower lid)."""
    h, w = open_frame.shape[:2]
    eye_mask = np.zeros((h, w), np.uint8)
    lid_mask = np.zeros((h, w), np.uint8)
    under_mask = np.zeros((h, w), np.uint8)
    xy = np.asarray(open_marks, np.float64)[:, :2]
    for group, upper, lower, (a, b) in ((F.RIGHT_EYE, F.RIGHT_EYE_UPPER, F.RIGHT_EYE_LOWER, F.RIGHT_EYE_CORNERS),
                                        (F.LEFT_EYE, F.LEFT_EYE_UPPER, F.LEFT_EYE_LOWER, F.LEFT_EYE_CORNERS)):
        cv2.fillPoly(eye_mask, [np.round(xy[list(group)]).astype(np.int32)], 1)
        width = float(np.linalg.norm(xy[a] - xy[b]))
        up = xy[list(upper)[1:-1]]
        band = np.concatenate([up - (0, 0.1 * width), (up - (0, 0.22 * width))[::-1]])
        cv2.fillPoly(lid_mask, [np.round(band).astype(np.int32)], 1)
        low = xy[list(lower)[1:-1]]
        band = np.concatenate([low + (0, 0.06 * width), (low + (0, 0.2 * width))[::-1]])
        cv2.fillPoly(under_mask, [np.round(band).astype(np.int32)], 1)
    eye_mask = cv2.erode(eye_mask, np.ones((3, 3), np.uint8)).astype(bool)
    lid_mask = lid_mask.astype(bool) & ~eye_mask
    shut = np.median(_lab(shut_frame[eye_mask]), 0)
    lid = np.median(_lab(shut_frame[lid_mask]), 0)
    opened = np.median(_lab(open_frame[eye_mask]), 0)
    under = np.median(_lab(open_frame[under_mask.astype(bool) & ~eye_mask]), 0)
    return ShutEyeColour(float(np.linalg.norm(shut - lid)), float(np.linalg.norm(shut - opened)),
                         float(np.median(_lab(open_frame[lid_mask])[:, 0])), float(shut[0]), float(under[0]))


# --------------------------------------------------------------------------- the head


def head_rotation(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(n, 3) degrees (pitch: nodding down > 0, yaw, roll) of each frame's head against the
    portrait's, from FaceMesh's rigid points in 3D (Umeyama: rotation, scale and shift)."""
    from scipy.spatial.transform import Rotation

    ref = np.asarray(reference, np.float64)[list(RIGID), :3]
    ref_c = ref - ref.mean(0)
    out = np.full((len(landmarks), 3), np.nan)
    for i, pts in enumerate(np.asarray(landmarks, np.float64)):
        p = pts[list(RIGID), :3]
        if not np.all(np.isfinite(p)):
            continue
        pc = p - p.mean(0)
        u, _, vt = np.linalg.svd(pc.T @ ref_c)
        d = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1.0, 1.0, d]) @ vt  # ref -> frame
        # image axes: x right, y down, z away from the camera: turning the chin down about x
        out[i] = Rotation.from_matrix(rot).as_euler("xyz", degrees=True) * np.array([-1.0, 1.0, 1.0])
    return out


def stress_signal(audio: str | os.PathLike | np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Per frame, how much a stressed syllable stands out there: the loudness above its
    own half-second average, more where the pitch is up (0 in between)."""
    from libs.talkface.audio import SAMPLE_RATE, load_audio
    from libs.talkface.prosody import pitch_per_frame

    x = load_audio(audio) if isinstance(audio, (str, os.PathLike)) else np.asarray(audio, np.float32)
    loud = analysis.audio_loudness(x, fps, n_frames)
    semis = np.nan_to_num(pitch_per_frame(x[: int(n_frames / fps * SAMPLE_RATE) + 1], fps, n_frames), nan=0.0)
    above = np.maximum(loud - gaussian_filter1d(loud, 0.5 * fps, mode="nearest"), 0.0)
    return above * (1.0 + 0.5 * np.clip(semis / 3.0, -1.0, 1.0))


@dataclass(frozen=True)
class HeadReport:
    """How the head moves in a video (degrees) and how that follows the voice."""

    max_angle: float  # the largest pitch, yaw or roll against the portrait
    nod_range: float  # pitch, 95th minus 5th percentile
    voice_r: float  # head speed against the voice's stresses, best lag in 0..0.4 s
    lag_s: float
    peak_ratio: float  # head speed just after stressed syllables over that at other speech


def head_report(rotation: np.ndarray, audio: str | os.PathLike | np.ndarray, fps: float) -> HeadReport:
    """Judge the head's rotation per frame (head_rotation) against the speech it was made from."""
    rot = np.asarray(rotation, np.float64)
    n = len(rot)
    ok = np.all(np.isfinite(rot), 1)
    rot = np.where(ok[:, None], rot, np.nanmedian(rot, 0))
    # FaceMesh jitters by a few tenths of a degree frame to frame: smooth before differencing
    smooth = gaussian_filter1d(rot, max(0.1 * fps, 0.5), axis=0, mode="nearest")
    speed = np.zeros(n)
    speed[1:] = np.linalg.norm(np.diff(smooth, axis=0), axis=1)
    speed = gaussian_filter1d(speed, max(0.06 * fps, 0.5), mode="nearest")
    stress = gaussian_filter1d(stress_signal(audio, fps, n), max(0.06 * fps, 0.5), mode="nearest")
    best, lag = -1.0, 0
    for k in range(0, int(round(0.4 * fps)) + 1):
        a, b = speed[k:], stress[:n - k]
        if a.std() > 0 and b.std() > 0:
            r = float(np.corrcoef(a, b)[0, 1])
            if r > best:
                best, lag = r, k
    peaks, _ = find_peaks(stress, height=max(float(np.percentile(stress, 90)), 1e-6), distance=max(1, int(0.2 * fps)))
    after = np.zeros(n, bool)
    for p in peaks:
        after[p:p + int(round(0.4 * fps))] = True
    loud = analysis.audio_loudness(audio, fps, n) if not isinstance(audio, np.ndarray) else None
    speech = (loud > 0.3) if loud is not None else np.ones(n, bool)
    other = speech & ~after
    ratio = float(speed[after].mean() / max(speed[other].mean(), 1e-9)) if after.any() and other.any() else float("nan")
    return HeadReport(float(np.nanmax(np.abs(rotation))), float(np.percentile(rot[:, 0], 95) - np.percentile(rot[:, 0], 5)),
                      best, lag / fps, ratio)


def collar_ssim(reference_rgb: np.ndarray, frames: Sequence[np.ndarray], reference_landmarks: np.ndarray) -> np.ndarray:
    """Per frame, SSIM (luma) against the portrait over the neck and collar: from 0.3 to
    0.6 face heights below the chin (the skin just under the chin goes with the jaw), as
    wide as the jaw."""
    from skimage.metrics import structural_similarity

    xy = np.asarray(reference_landmarks, np.float64)[:, :2]
    fh = float(np.linalg.norm(xy[F.FOREHEAD] - xy[F.CHIN]))
    h, w = reference_rgb.shape[:2]
    y0 = int(min(h - 8, xy[F.CHIN, 1] + 0.3 * fh))
    y1 = int(min(h, xy[F.CHIN, 1] + 0.6 * fh))
    x0, x1 = int(max(0, xy[[172, 136], 0].min())), int(min(w, xy[[397, 365], 0].max()))
    ref = cv2.cvtColor(np.ascontiguousarray(reference_rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    if min(ref.shape) < 7:
        raise ValueError("the picture has too little below the chin to judge the collar")
    return np.array([structural_similarity(ref, cv2.cvtColor(np.ascontiguousarray(f[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY),
                                           data_range=255) for f in frames])
