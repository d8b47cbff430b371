"""Person models in the manner of Video Rewrite (Bregler, Covell & Slaney, 1997).

A person model is an atlas of the person's own mouth appearances, indexed by mouth
shape, plus a short background clip of the person. Nothing is learnt by gradient
descent: "training" is tracking and indexing.

Build, from a video of the person speaking:
1. track the 468 face landmarks in every frame;
2. bring every frame into one canonical face frame by a similarity transform fitted on
   points that speech does not move (eye corners, nose, temples), the template being a
   Procrustes mean over the video;
3. describe the mouth of each frame by its shape there (inner-lip gap, mouth width,
   lip-outline height, chin drop, all over the eye distance);
4. keep a diverse subset of frames (farthest-point sampling in shape space, each with its
   neighbours so that real transitions survive) and cut their lower-face patches from
   the canonical frame: the atlas;
5. keep the first seconds of the video, played forward then backward so it loops
   without a jump, with each frame's (smoothed) canonical transform: the background.

Generate, from new speech: `audio.mouth_track` gives the opening, width and closure
the speech calls for in every frame; they are mapped into the atlas's shape range; a
Viterbi search picks one atlas entry per frame, near the wanted shape and preferring
the source video's own frame-to-frame continuations over jumps; each chosen patch is
warped onto the background frame and blended in through a feathered lower-face mask
after matching its colour to the frame around it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import cv2
import numpy as np

from . import audio as _audio
from . import face as F
from . import motion
from .api import BadVideoError, Cancelled, NoFaceError, Progress, ProgressFn, RenderResult, StopFn
from .encode import VideoReader, VideoWriter
from .face import FaceAnalyzer

log = logging.getLogger(__name__)

ENGINE_NAME = "talkface-person-1"
MODEL_VERSION = 1
MODEL_FILE = "model.json"
ATLAS_FILE = "atlas.npz"
BASE_VIDEO_FILE = "base.mp4"
BASE_TRACK_FILE = "base_track.npz"
MODEL_FILES = (MODEL_FILE, ATLAS_FILE, BASE_VIDEO_FILE, BASE_TRACK_FILE)

# Points that speech leaves in place: eye corners, nose bridge and tip, temples.
STABLE_POINTS = (33, 133, 263, 362, 168, 6, 197, 195, 5, 4, 1, 127, 356, 234, 454)
_EYE_R, _EYE_L = F.RIGHT_EYE_CORNERS[0], F.LEFT_EYE_CORNERS[0]
SUBNASALE = 2
# Lower face oval from the right temple round the chin to the left one.
_LOWER_OVAL = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379,
               365, 397, 288, 361, 323, 454)
_NOSE_BASE = (98, 97, 2, 326, 327)

MAX_BASE_SIDE = 1280
JPEG_QUALITY = 95
PROGRESS_STEPS = 40
# the jaw weight of speech that the widest mouth of the person's own video stands for
# (loud open vowels reach it; see audio.GAIN_KNEE)
OPEN_FULL = 0.75


@dataclass
class TrainOptions:
    """Limits of one build."""

    max_seconds: float = 300.0  # of the video read for the atlas
    base_seconds: float = 8.0  # of the video kept as the background clip
    max_atlas_entries: int = 1000
    run_length: int = 5  # frames kept around every sampled atlas frame


@dataclass
class PersonModelInfo:
    """What a build made; also the body of model.json."""

    engine: str
    version: int
    frames_read: int
    frames_with_face: int
    atlas_entries: int
    fps: float
    width: int
    height: int
    base_frames: int
    canonical_iod: float
    patch_box: list[float]  # x0, y0, x1, y1 of the patch in canonical coordinates
    mouth_gap_range: list[float]  # 5th and 97th percentile of the inner-lip gap / eye distance
    seconds: float
    created_at: str = ""
    options: dict = field(default_factory=dict)


def _check_stop(should_stop: Optional[StopFn]) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("the job was cancelled")


class _Reporter:
    def __init__(self, fn: Optional[ProgressFn], stage: str, total: int):
        self.fn, self.stage, self.total = fn, stage, max(1, int(total))
        self.every = max(1, self.total // PROGRESS_STEPS)

    def __call__(self, done: int, message: str) -> None:
        if self.fn is not None and (done % self.every == 0 or done >= self.total):
            self.fn(Progress(self.stage, int(min(done, self.total)), self.total, message))


# --------------------------------------------------------------------------- geometry


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking src to dst (Umeyama)."""
    src = np.asarray(src, np.float64)[:, :2]
    dst = np.asarray(dst, np.float64)[:, :2]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ sign @ vt
    var = (s ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(sv) @ sign) / max(var, 1e-12))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64)[..., :2] @ m[:, :2].T + m[:, 2]


def _invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m.astype(np.float64))


def _iod(pts: np.ndarray) -> float:
    return float(np.linalg.norm(pts[_EYE_L, :2] - pts[_EYE_R, :2]))


def _normalise(pts: np.ndarray, iod: float) -> np.ndarray:
    """Similarity putting the eyes level, `iod` apart, their midpoint at the origin."""
    r, l = pts[_EYE_R, :2].astype(np.float64), pts[_EYE_L, :2].astype(np.float64)
    target = np.array([[-iod / 2, 0.0], [iod / 2, 0.0]])
    return similarity(np.stack([r, l]), target)


def shape_descriptor(canon: np.ndarray, iod: float) -> np.ndarray:
    """(gap, width, outline height, chin drop) of canonical landmarks, over the eye distance."""
    up = canon[list(F.LIPS_INNER_UPPER[3:8]), 1]
    lo = canon[list(F.LIPS_INNER_LOWER[3:8]), 1]
    gap = float(np.median(lo - up))
    width = float(np.linalg.norm(canon[F.MOUTH_CORNERS[1]] - canon[F.MOUTH_CORNERS[0]]))
    outline = float(canon[F.OUTER_LIP_LOWER_MID, 1] - canon[F.OUTER_LIP_UPPER_MID, 1])
    chin = float(canon[F.CHIN, 1] - canon[F.NOSE_TIP, 1])
    return np.array([gap, width, outline, chin]) / iod


def _smooth_transforms(ms: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gaussian smoothing of per-frame affines over time: landmark jitter must not shake the mouth."""
    if len(ms) < 3:
        return ms
    radius = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    flat = ms.reshape(len(ms), -1)
    padded = np.pad(flat, ((radius, radius), (0, 0)), mode="edge")
    out = np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(flat.shape[1])], 1)
    return out.reshape(ms.shape)


# --------------------------------------------------------------------------- build


def _fit_size(w: int, h: int) -> tuple[float, int, int]:
    s = min(1.0, MAX_BASE_SIDE / max(w, h))
    return s, max(2, int(w * s) // 2 * 2), max(2, int(h * s) // 2 * 2)


def _track(face: FaceAnalyzer, video_path: str, limit: int, report, should_stop) -> tuple:
    """Pass 1: landmarks of every frame (None where no face), the base-clip frames, fps and size."""
    reader = VideoReader(video_path)
    scale, ow, oh = _fit_size(reader.width, reader.height)
    marks: list[Optional[np.ndarray]] = []
    prev = None
    for i, rgb in enumerate(reader):
        if i >= limit:
            break
        _check_stop(should_stop)
        if scale != 1.0 or rgb.shape[1] != ow or rgb.shape[0] != oh:
            rgb = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)
        try:
            pts = face.landmarks(rgb, prev=prev)
        except NoFaceError:
            pts = None
        prev = pts
        marks.append(pts)
        report(i + 1, f"Tracking the face: frame {i + 1}")
    if not marks:
        raise BadVideoError("the video holds no frames")
    return reader, marks, float(reader.fps), ow, oh, scale


def _template(marks: list, iod: float) -> np.ndarray:
    """Procrustes mean of the stable points over the frames with a face."""
    stable = list(STABLE_POINTS)
    frames = [p for p in marks if p is not None]
    step = max(1, len(frames) // 400)  # a few hundred frames settle the mean
    sample = frames[::step]
    ref = _apply(_normalise(sample[0], iod), sample[0][stable])
    for _ in range(3):
        aligned = [_apply(similarity(p[stable], ref), p[stable]) for p in sample]
        mean = np.mean(aligned, axis=0)
        # keep the mean at the reference's scale and position (Procrustes drifts otherwise)
        ref = _apply(similarity(mean, ref), mean)
    return ref


def _farthest_point(desc: np.ndarray, count: int) -> list[int]:
    """Indices of `count` rows spread over the shape space (greedy farthest-point sampling)."""
    n = len(desc)
    if count >= n:
        return list(range(n))
    z = (desc - desc.mean(0)) / (desc.std(0) + 1e-9)
    first = int(np.argmin(np.abs(z[:, 0] - np.percentile(z[:, 0], 5))))  # start at a closed mouth
    chosen = [first]
    dist = ((z - z[first]) ** 2).sum(1)
    while len(chosen) < count:
        k = int(np.argmax(dist))
        if dist[k] <= 0:
            break
        chosen.append(k)
        dist = np.minimum(dist, ((z - z[k]) ** 2).sum(1))
    return chosen


def _select_atlas(desc: np.ndarray, frame_ids: np.ndarray, budget: int, run: int) -> np.ndarray:
    """Rows kept in the atlas: sampled centres with their neighbours, at most `budget` rows."""
    if len(desc) <= budget:
        return np.arange(len(desc))
    centres = _farthest_point(desc, max(1, budget // max(1, run)))
    keep = set()
    pos = {int(f): i for i, f in enumerate(frame_ids)}
    for c in centres:
        f = int(frame_ids[c])
        for df in range(-(run // 2), run - run // 2):
            i = pos.get(f + df)
            if i is not None:
                keep.add(i)
    return np.array(sorted(keep)[:budget])


def _mask(canon_mean: np.ndarray, chin_max: float, box, iod: float) -> np.ndarray:
    """Feathered lower-face blend mask (float32 0..1) in patch pixels."""
    x0, y0, x1, y1 = box
    w, h = int(round(x1 - x0)), int(round(y1 - y0))
    pts = canon_mean[list(_LOWER_OVAL)].copy()
    # The jaw moves: reach down to the lowest chin the video showed.
    drop = max(0.0, chin_max - canon_mean[F.CHIN, 1])
    weights = np.clip((pts[:, 1] - canon_mean[F.NOSE_TIP, 1]) / max(canon_mean[F.CHIN, 1] - canon_mean[F.NOSE_TIP, 1], 1e-6), 0, 1)
    pts[:, 1] += drop * weights + 0.04 * iod * weights
    top = canon_mean[list(_NOSE_BASE)].copy()
    top[:, 1] += 0.06 * iod  # just under the nose: the nostrils stay the background's
    poly = np.concatenate([pts, top[::-1]])
    # Pull the sides in a little: cheeks at the face edge carry background behind them.
    cx = canon_mean[F.NOSE_TIP, 0]
    poly[:, 0] = cx + (poly[:, 0] - cx) * 0.9
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [np.round(poly - [x0, y0]).astype(np.int32)], 1.0)
    sigma = max(1.0, 0.05 * iod)
    erode = max(1, int(round(1.5 * sigma)))
    mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))  # type: ignore[assignment]
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def build_person_model(face: FaceAnalyzer, video_path: str | os.PathLike, out_dir: str | os.PathLike,
                       options: TrainOptions | None = None, progress: Optional[ProgressFn] = None,
                       should_stop: Optional[StopFn] = None, threads: int = 2) -> PersonModelInfo:
    """Build a person model from `video_path` into `out_dir` (the files of MODEL_FILES);
    `threads` is what the video encoder may use."""
    opts = options or TrainOptions()
    t0 = time.perf_counter()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probe = VideoReader(str(video_path))
    fps = float(probe.fps)
    limit = max(1, int(opts.max_seconds * fps))
    estimate = min(limit, probe.frame_count or limit)
    if progress:
        progress(Progress("analyse", 0, 1, "Reading the video..."))
    reader, marks, fps, ow, oh, scale = _track(
        face, str(video_path), limit, _Reporter(progress, "render", estimate), should_stop)
    with_face = [i for i, p in enumerate(marks) if p is not None]
    if len(with_face) < max(3, len(marks) // 4):
        raise NoFaceError(f"a face was found in only {len(with_face)} of {len(marks)} frames; "
                          "a person model needs a video that shows the face clearly")
    iod = float(np.clip(np.median([_iod(marks[i]) for i in with_face]), 48.0, 160.0))
    template = _template(marks, iod)
    stable = list(STABLE_POINTS)
    to_canon = {i: similarity(marks[i][stable], template) for i in with_face}
    canon = {i: _apply(to_canon[i], marks[i]) for i in with_face}
    desc = np.stack([shape_descriptor(canon[i], iod) for i in with_face])
    canon_mean = np.mean([canon[i] for i in with_face], axis=0)
    chin_max = float(np.percentile([canon[i][F.CHIN, 1] for i in with_face], 98))
    mouth_c = (canon_mean[F.MOUTH_CORNERS[0]] + canon_mean[F.MOUTH_CORNERS[1]]) / 2
    box = [float(mouth_c[0] - 0.95 * iod), float(canon_mean[SUBNASALE, 1] - 0.12 * iod),
           float(mouth_c[0] + 0.95 * iod), float(chin_max + 0.3 * iod)]
    box[2] = box[0] + math.ceil(box[2] - box[0])
    box[3] = box[1] + math.ceil(box[3] - box[1])
    pw, ph = int(box[2] - box[0]), int(box[3] - box[1])

    rows = _select_atlas(desc, np.array(with_face), opts.max_atlas_entries, opts.run_length)
    wanted = {with_face[r]: k for k, r in enumerate(rows)}
    base_n = min(len(marks), max(1, int(round(opts.base_seconds * fps))))
    patches = np.zeros((len(rows), ph, pw, 3), np.uint8)
    shift = np.array([[1.0, 0.0, -box[0]], [0.0, 1.0, -box[1]]])

    # Pass 2: cut the atlas patches and write the background clip.
    report = _Reporter(progress, "encode", len(marks))
    base_jpegs: list[bytes] = []
    writer = VideoWriter(out / BASE_VIDEO_FILE, ow, oh, reader.fps, threads=threads)
    try:
        for i, rgb in enumerate(reader):
            if i >= len(marks):
                break
            _check_stop(should_stop)
            if rgb.shape[1] != ow or rgb.shape[0] != oh:
                rgb = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)
            k = wanted.get(i)
            if k is not None:
                m = to_canon[i].copy()
                m = np.vstack([m, [0, 0, 1]])
                m = (np.vstack([shift, [0, 0, 1]]) @ m)[:2]
                patches[k] = cv2.warpAffine(rgb, m, (pw, ph), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
            if i < base_n:
                writer.write(np.ascontiguousarray(rgb))
                if 0 < i < base_n - 1:
                    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                    base_jpegs.append(buf.tobytes())
            elif i >= base_n and k is None and len(wanted) and i > max(wanted):
                break
            report(i + 1, f"Building the mouth atlas: frame {i + 1}")
        # Backward half (without repeating the two ends) so the clip loops seamlessly.
        for buf in reversed(base_jpegs):  # type: ignore[assignment]
            bgr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
            writer.write(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))  # type: ignore[arg-type]
        writer.close()
    except BaseException:
        writer.abort()
        raise
    order = list(range(base_n)) + list(range(base_n - 2, 0, -1))
    base_has_face = np.array([marks[i] is not None for i in order])
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    fwd = np.stack([_invert(to_canon[i]) if marks[i] is not None else ident for i in range(base_n)])
    fwd = _smooth_transforms(fwd)
    base_from_canon = np.stack([fwd[i] for i in order]).astype(np.float32)

    mask = _mask(canon_mean, chin_max, box, iod)
    np.savez_compressed(out / ATLAS_FILE, patches=patches, shapes=desc[rows].astype(np.float32),
                        source_frames=np.array(with_face)[rows].astype(np.int32), mask=mask,
                        box=np.array(box, np.float32))
    np.savez_compressed(out / BASE_TRACK_FILE, from_canon=base_from_canon, has_face=base_has_face)
    gaps = desc[:, 0]
    info = PersonModelInfo(
        engine=ENGINE_NAME, version=MODEL_VERSION, frames_read=len(marks), frames_with_face=len(with_face),
        atlas_entries=len(rows), fps=fps, width=ow, height=oh, base_frames=len(order),
        canonical_iod=iod, patch_box=[round(v, 3) for v in box],
        mouth_gap_range=[round(float(np.percentile(gaps, 5)), 4), round(float(np.percentile(gaps, 97)), 4)],
        seconds=round(time.perf_counter() - t0, 3),
        created_at=time.strftime("%Y-%m-%d %H:%M:%S"), options=asdict(opts),
    )
    (out / MODEL_FILE).write_text(json.dumps(asdict(info), indent=2))
    if progress:
        progress(Progress("encode", 1, 1, "Person model built"))
    log.info("person model: %d frames (%d with a face), %d atlas entries, %.1f s",
             info.frames_read, info.frames_with_face, info.atlas_entries, info.seconds)
    return info


# --------------------------------------------------------------------------- generate


@dataclass
class PersonModel:
    """A person model loaded for generation."""

    info: PersonModelInfo
    patches: np.ndarray
    shapes: np.ndarray
    source_frames: np.ndarray
    mask: np.ndarray
    box: np.ndarray
    base_video: str
    base_from_canon: np.ndarray
    base_has_face: np.ndarray

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> "PersonModel":
        d = pathlib.Path(model_dir)
        try:
            info = PersonModelInfo(**json.loads((d / MODEL_FILE).read_text()))
            atlas = np.load(d / ATLAS_FILE)
            track = np.load(d / BASE_TRACK_FILE)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise BadVideoError(f"the person model is incomplete or damaged: {exc}") from exc
        if info.version != MODEL_VERSION:
            raise BadVideoError(f"person model version {info.version} is not supported")
        return cls(info, atlas["patches"], atlas["shapes"], atlas["source_frames"], atlas["mask"],
                   atlas["box"], str(d / BASE_VIDEO_FILE), track["from_canon"], track["has_face"])


def _targets(model: PersonModel, track) -> np.ndarray:
    """Wanted (gap, width) per frame, in the atlas's own shape units."""
    gaps, widths = model.shapes[:, 0], model.shapes[:, 1]
    g_lo, g_hi = np.percentile(gaps, 5), np.percentile(gaps, 97)
    w_lo, w_med, w_hi = np.percentile(widths, 5), np.median(widths), np.percentile(widths, 95)
    # the same mouth as a portrait job: closures win, F/V nearly shuts the jaw
    weights = motion.mouth_weights(track, len(np.asarray(track.open)))
    opening = np.clip(weights["jaw"].astype(np.float64) / OPEN_FULL, 0.0, 1.0)
    width = np.clip(np.asarray(track.width, np.float64), -1, 1)
    gap = g_lo + opening * (g_hi - g_lo)
    w = np.where(width >= 0, w_med + width * (w_hi - w_med), w_med + width * (w_med - w_lo))
    return np.stack([gap, w], 1)


def choose_entries(model: PersonModel, targets: np.ndarray, candidates: int = 12,
                   jump_cost: float = 0.15, hold_cost: float = 0.05) -> np.ndarray:
    """One atlas entry per frame by Viterbi: near the target shape, smooth over time.

    A frame that continues its predecessor's source frame costs nothing to switch to
    (the person really moved so); holding one entry costs a little (a frozen mouth); any
    other switch costs `jump_cost` plus the shape jump.
    """
    shapes = model.shapes[:, :2].astype(np.float64)
    scale = shapes.std(0) + 1e-6
    z = shapes / scale
    zt = targets / scale
    weights = np.array([1.0, 0.5])
    n, k = len(targets), min(candidates, len(shapes))
    d_all = (((zt[:, None, :] - z[None, :, :]) ** 2) * weights).sum(-1)
    cand = np.argsort(d_all, axis=1)[:, :k]
    unary = np.take_along_axis(d_all, cand, 1)
    src = model.source_frames.astype(np.int64)
    cost = unary[0].copy()
    back = np.zeros((n, k), np.int64)
    for t in range(1, n):
        prev, cur = cand[t - 1], cand[t]
        follows = src[cur][None, :] == src[prev][:, None] + 1
        same = cur[None, :] == prev[:, None]
        jump = jump_cost + (((z[cur][None, :, :] - z[prev][:, None, :]) ** 2) * weights).sum(-1)
        trans = np.where(follows, 0.0, np.where(same, hold_cost, jump))
        total = cost[:, None] + trans
        back[t] = np.argmin(total, axis=0)
        cost = total[back[t], np.arange(k)] + unary[t]
    path = np.zeros(n, np.int64)
    j = int(np.argmin(cost))
    for t in range(n - 1, -1, -1):
        path[t] = cand[t, j]
        j = back[t, j]
    return path


class _Compositor:
    """Warps a canonical patch onto a background frame and blends it in."""

    def __init__(self, model: PersonModel, width: int, height: int):
        self.model = model
        self.w, self.h = width, height
        x0, y0 = float(model.box[0]), float(model.box[1])
        self.from_patch = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
        ph, pw = model.mask.shape
        self.corners = np.array([[0, 0], [pw, 0], [0, ph], [pw, ph]], np.float64)

    def __call__(self, frame: np.ndarray, patch: np.ndarray, from_canon: np.ndarray) -> np.ndarray:
        m = (np.vstack([from_canon, [0, 0, 1]]) @ self.from_patch)[:2]
        c = _apply(m, self.corners)
        x0, y0 = max(0, int(np.floor(c[:, 0].min()))), max(0, int(np.floor(c[:, 1].min())))
        x1, y1 = min(self.w, int(np.ceil(c[:, 0].max())) + 1), min(self.h, int(np.ceil(c[:, 1].max())) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return frame
        m_roi = m.copy()
        m_roi[:, 2] -= [x0, y0]
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(patch, m_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(self.model.mask, m_roi, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        wf = warped.astype(np.float32)
        ring = (alpha > 0.05) & (alpha < 0.6)
        if ring.sum() > 20:
            # Light drifts between the frame a patch came from and this one: match the mean colour.
            wf += np.clip(roi[ring].mean(0) - wf[ring].mean(0), -25.0, 25.0)
        a = alpha[..., None]
        out = frame.copy()
        out[y0:y1, x0:x1] = np.clip(roi * (1 - a) + wf * a + 0.5, 0, 255).astype(np.uint8)
        return out


def generate_person_video(model_dir: str | os.PathLike, audio_path: str | os.PathLike,
                          out_path: str | os.PathLike, progress: Optional[ProgressFn] = None,
                          should_stop: Optional[StopFn] = None, threads: int = 2) -> RenderResult:
    """Re-dub the person's background clip from `audio_path`; writes a silent MP4 to `out_path`.
    `threads` is what the video encoder may use."""
    t0 = time.perf_counter()
    if progress:
        progress(Progress("analyse", 0, 2, "Loading the person model..."))
    model = PersonModel.load(model_dir)
    samples = _audio.load_audio(audio_path)
    reader = VideoReader(model.base_video)
    fps = float(reader.fps)
    n = max(1, int(round(len(samples) / _audio.SAMPLE_RATE * fps)))
    track = _audio.mouth_track(samples, fps, n)
    _check_stop(should_stop)
    if progress:
        progress(Progress("analyse", 2, 2, "Speech analysed"))
    path = choose_entries(model, _targets(model, track))
    w, h = reader.width - reader.width % 2, reader.height - reader.height % 2
    comp = _Compositor(model, w, h)
    report = _Reporter(progress, "render", n)
    writer = VideoWriter(out_path, w, h, reader.fps, threads=threads)
    nb = len(model.base_from_canon)
    loops = 0
    try:
        for i, (frame, loops) in enumerate(reader.looped(n, w, h)):  # noqa: B007 - read after the loop
            _check_stop(should_stop)
            b = i % nb
            if model.base_has_face[b]:
                frame = comp(frame, model.patches[path[i]], model.base_from_canon[b].astype(np.float64))
            writer.write(frame)
            report(i + 1, f"Generating video... frame {i + 1}/{n}")
        if progress:
            progress(Progress("encode", 0, 1, "Finishing the video file..."))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if progress:
        progress(Progress("encode", 1, 1, "done"))
    elapsed = time.perf_counter() - t0
    switches = int((np.diff(model.source_frames[path]) != 1).sum()) if n > 1 else 0
    log.info("person video: %d frames %dx%d in %.2f s (%d atlas switches)", n, w, h, elapsed, switches)
    return RenderResult(
        frames=n, fps=fps, width=w, height=h, duration_s=n / fps, engine=ENGINE_NAME,
        extra={"render_seconds": round(elapsed, 3), "atlas_entries": int(len(model.shapes)),
               "atlas_switches": switches, "background_loops": loops},
    )
