"""The talkface engine: portrait + speech -> talking-head video, and video + new speech -> re-dub.

`Engine` loads the face models once and is then called per job. It reads its inputs
from local files and writes silent H.264 MP4s; adding the audio, fetching inputs and
storing results are the media service's business. Errors are the api.py types with
messages meant for the person who sent the job.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import cv2
import numpy as np

from . import audio as _audio
from . import face as F
from . import glasses
from . import motion as M
from . import render as R
from .api import (
    EMOTIONS,
    ENGINE_NAME,
    BadVideoError,
    Cancelled,
    MouthTrack,
    NoFaceError,
    PortraitJob,
    Progress,
    ProgressFn,
    RedubJob,
    RenderResult,
    StopFn,
)
from .choice import choose_face
from .encode import X264, VideoReader, VideoWriter
from .eyes import EyeModel
from .face import FaceAnalyzer
from .image import MAX_INPUT_SIDE, load_image  # noqa: F401 - load_image is part of the engine's interface
from .mouth import MouthInterior, refine_inner_lips
from .mouth import compile_kernels as compile_mouth_kernels
from .prosody import pitch_per_frame
from .recogniser import PhoneRecogniser

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
PROGRESS_STEPS = 20  # at least one report per 5 % of the frames


class _Reporter:
    """Rate-limited progress reports: every ~5 % of `total`, plus the last one."""

    def __init__(self, fn: Optional[ProgressFn], stage: str, total: int):
        self.fn, self.stage, self.total = fn, stage, max(1, int(total))
        self.every = max(1, self.total // PROGRESS_STEPS)

    def __call__(self, done: int, message: str = "") -> None:
        if self.fn is not None and (done % self.every == 0 or done >= self.total):
            self.fn(Progress(self.stage, int(done), self.total, message))


def _check_stop(should_stop: Optional[StopFn]) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("the job was cancelled")


# Sound past the last frame that the mouth still hears: the smoothing's reach and the
# anticipation of the next phone (audio.SETTLE_S) with room to spare.
_TAIL_S = 1.0


def _fit_to(samples: np.ndarray, seconds: float) -> np.ndarray:
    """`samples` padded with silence to `seconds`, or cut to `seconds` + _TAIL_S: a job
    that shows only the start of a long sound (max_frames, duration) must not wait for
    the phones of the rest to be recognised."""
    need = int(math.ceil(seconds * SAMPLE_RATE))
    if need > len(samples):
        return np.concatenate([samples, np.zeros(need - len(samples), np.float32)])
    return samples[:need + int(_TAIL_S * SAMPLE_RATE)]


class _NumbaFrames:
    """The default render, one frame at a time: render.Warper's numba warp, then the mouth."""

    batch = 1

    def __init__(self, warper: R.Warper, interior: MouthInterior):
        self.warper, self.interior = warper, interior

    def render(self, first: int, pts: np.ndarray, skulls: np.ndarray, mandibles: np.ndarray,
               eyes: Optional[np.ndarray] = None) -> np.ndarray:
        """Frames first.. (here one) from their warp points (Warper.frame_points), teeth
        affines and eye states (MotionPlan.eye_state)."""
        frame = self.warper.warp(pts[0], eyes=None if eyes is None else eyes[0])
        self.interior.draw(frame, pts[0], skulls[0], mandibles[0], first)
        return frame[None]


class Engine:
    """The built-in engine: load once, then call per job. Jobs may run on several threads
    at once; they share the face models behind a lock.

    Portrait frames render on the CPU with numba by default; with `render_device` (a torch
    device: "cpu", "cuda", "cuda:1") they render with torch on that device, `batch` frames
    at a time (torch_render.py; torch is imported only then; re-dubs a frame at a time, each
    frame being its own portrait), and `codec` names the H.264 encoder (encode.choose_codec;
    a re-dub's mask video is always libx264's).
    """

    name = ENGINE_NAME

    def __init__(self, models_dir=None, threads: int = 2, render_device: Optional[str] = None,
                 batch: int = 16, codec: str = X264):
        self.threads = max(1, int(threads))
        self.face = FaceAnalyzer(models_dir, threads=self.threads)
        # A frame's warp is small work: OpenCV's worker threads cost more in handoffs than
        # they save, and they fight the encoder, which runs next to the render loop. One
        # thread each: 10 s at 512 px took 1.39 s of CPU instead of 1.71 s, and less time.
        cv2.setNumThreads(1)
        R.compile_kernels()
        compile_mouth_kernels()
        self.render_device = render_device
        self.batch = max(1, int(batch))
        self.codec = codec
        if render_device is not None:
            import torch

            from . import torch_render  # noqa: F401 - fail here, not in the first job, without torch

            if torch.device(render_device).type == "cpu":
                # like the numba path: the render on one thread, the encoder on the others
                torch.set_num_threads(max(1, self.threads - self.encoder_threads))
        # started by the first generate(): re-dubs and person models never need it
        self.phones = PhoneRecogniser()

    def _frames(self, warper: R.Warper, interior: MouthInterior):
        """The renderer of a portrait job's frames."""
        if self.render_device is None:
            return _NumbaFrames(warper, interior)
        from .torch_render import TorchFrames

        return TorchFrames(warper, interior, self.render_device, self.batch)  # type: ignore[arg-type]

    def _redub_frame(self):
        """How a re-dub renders each frame (its own portrait, so one frame at a time)."""
        if self.render_device is None:
            return _numba_redub_frame
        import functools

        from .torch_render import redub_frame

        return functools.partial(redub_frame, device=self.render_device)

    def _render_notes(self, batch: int, writer: VideoWriter) -> dict:
        """How a job's frames were made: the render, its device and batch, the encoder."""
        torch_render = self.render_device is not None
        notes = {"render": "torch" if torch_render else "numba",
                 "render_device": str(self.render_device) if torch_render else "cpu",
                 "batch": batch, "encoder": writer.codec}
        if writer.codec == X264:
            notes["encoder_threads"] = self.encoder_threads
        if writer.codec_note:
            notes["encoder_note"] = writer.codec_note
        return notes

    @property
    def encoder_threads(self) -> int:
        """x264 threads for a render: the render loop keeps one of `threads` busy itself."""
        return max(1, self.threads - 1)

    # ------------------------------------------------------------------ portrait

    def prepare_portrait(self, job: PortraitJob) -> tuple:
        """The output-sized portrait, its 468 landmarks and the crop used (x0, y0, x1, y1)
        in the original image, of the face choice.py picks (or the job names). Raises
        BadImageError, NoFaceError, FaceTurnedError or MouthNotOnLipsError."""
        src = load_image(job.image_path)
        sh, sw = src.shape[:2]
        # once per portrait: which face (several may be there) and whether it can be animated
        chosen = choose_face(self.face, src, job.face_index, job.face_box)
        pts = chosen.landmarks
        if job.crop:
            aspect = (job.width / job.height) if (job.width and job.height) else 1.0
            box = R.face_crop_box(pts, sw, sh, float(job.expand_ratio), aspect)
            cw, ch = box[2] - box[0], box[3] - box[1]
            if job.width and job.height:
                ow, oh = R.even(job.width), R.even(job.height)
            else:
                ow, oh = R.fit_size(cw, ch, job.width, job.height, job.min_resolution)
        else:
            ow, oh = R.fit_size(sw, sh, job.width, job.height, job.min_resolution)
            box = self._cover_box(pts, sw, sh, ow / oh)
        x0, y0, x1, y1 = box
        crop = src[y0:y1, x0:x1]
        interp = cv2.INTER_AREA if (x1 - x0) > ow else cv2.INTER_CUBIC
        img = np.ascontiguousarray(cv2.resize(crop, (ow, oh), interpolation=interp))
        # the landmarks of the original, carried over, seed a tracked (more exact) pass
        sx, sy = ow / (x1 - x0), oh / (y1 - y0)
        guess = pts.copy()
        guess[:, 0] = (pts[:, 0] - x0) * sx
        guess[:, 1] = (pts[:, 1] - y0) * sy
        guess[:, 2] = pts[:, 2] * sx
        try:
            # no new search when the tracked pass loses it: another face would be animated
            rest = self.face.landmarks(img, prev=guess, detect=False)
        except NoFaceError:
            raise NoFaceError("the face in the portrait is too small at the requested size") from None
        return img, rest, box

    @staticmethod
    def _softness(job_box: tuple, img: np.ndarray) -> float:
        """Blur (pixels) for drawn parts: the photo's own, wider where it was enlarged."""
        scale = img.shape[1] / max(1, job_box[2] - job_box[0])
        return float(np.clip(0.5 * scale, 0.5, 2.5))

    @staticmethod
    def _cover_box(pts: np.ndarray, sw: int, sh: int, aspect: float) -> tuple:
        """The largest crop of the given aspect (the whole image when it matches), centred
        on the face as far as the image allows."""
        if abs(sw / sh - aspect) < 0.01:
            return 0, 0, sw, sh
        if sw / sh > aspect:
            cw, ch = sh * aspect, float(sh)
        else:
            cw, ch = float(sw), sw / aspect
        lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
        cx, cy = (lo + hi) / 2
        x0 = min(max(0.0, cx - cw / 2), sw - cw)
        y0 = min(max(0.0, cy - ch / 2), sh - ch)
        return int(round(x0)), int(round(y0)), int(round(x0 + cw)), int(round(y0 + ch))

    def generate(self, job: PortraitJob, progress: Optional[ProgressFn] = None,
                 should_stop: Optional[StopFn] = None) -> RenderResult:
        """Animate `job.image_path` from `job.audio_path`; writes a silent MP4 to `job.out_path`.

        Frames: round(duration * fps), duration = job.duration or the audio's length,
        at most job.max_frames. Audio shorter than the duration is padded with silence.
        """
        if job.emotion not in EMOTIONS:
            raise ValueError(f"unknown emotion {job.emotion!r}; expected one of {', '.join(EMOTIONS)}")
        if not job.fps or job.fps <= 0:
            raise ValueError("fps must be positive")
        t_start = time.perf_counter()
        fps = float(job.fps)
        if progress:
            progress(Progress("analyse", 0, 2, "reading the portrait and the speech"))
        img, rest, box = self.prepare_portrait(job)
        _check_stop(should_stop)
        if progress:
            progress(Progress("analyse", 1, 2, "face found; analysing the speech"))
        samples = _audio.load_audio(job.audio_path)
        duration = float(job.duration) if job.duration else len(samples) / SAMPLE_RATE
        n = max(1, int(round(duration * fps)))
        if job.max_frames:
            n = max(1, min(n, int(job.max_frames)))
        samples = _fit_to(samples, n / fps)
        # The mouth comes span by span while the phones are recognised in the background;
        # head motion follows the loudness, known at once.
        spans = _audio.mouth_track_stream(samples, fps, n, recognise=self.phones)
        rest = refine_inner_lips(img, rest, M.FaceFrame.from_landmarks(rest).height)
        fields = M.ActionFields(rest)
        if job.emo_scale > 0 and glasses.worn(img, fields):
            glasses.keep_rigid(fields)
        face_h = fields.frame.height
        interior = MouthInterior(img, rest, face_h, yaw_sin=fields.yaw_sin, softness=self._softness(box, img),
                                 seed=job.seed)
        shut, together = interior.shut_rest
        silent = np.zeros(n, np.float32)
        moving = job.dynamic_scale > 0
        plan = M.plan_motion(rest, MouthTrack(silent, silent, silent, spans.energy, fps), n,
                             emotion=job.emotion, emo_scale=job.emo_scale, seed=job.seed,
                             dynamic_scale=job.dynamic_scale, fields=fields,
                             jaw_rest=-shut / fields.gap_per_unit(), press_rest=together,
                             voice_pitch=pitch_per_frame(samples, fps, n) if moving else None)
        # the warp takes the lips from a little inside their inner edges, so closing them
        # never drags teeth or shadow from between them into the seam; a mouth caught
        # open, which rests shut, goes further in (FaceMesh draws its edges on the teeth)
        warper = R.Warper(img, M.lip_edges_inwards(rest, fields.frame, cap=0.02 if shut else 0.006),
                          head_ring=moving, eyes=EyeModel(rest, img))
        oh, ow = img.shape[:2]
        report = _Reporter(progress, "render", n)
        frames = self._frames(warper, interior)
        writer = VideoWriter(job.out_path, ow, oh, job.fps, threads=self.encoder_threads, codec=self.codec)
        ready = 0
        try:
            for start in range(0, n, frames.batch):
                _check_stop(should_stop)
                chunk = range(start, min(n, start + frames.batch))
                while chunk[-1] >= ready:
                    first, span = next(spans)
                    plan.set_mouth(first, span)
                    ready = first + len(span.open)  # type: ignore[arg-type]
                    if first == 0 and progress:
                        progress(Progress("analyse", 2, 2, "rendering while the speech is analysed"))
                pts = np.stack([warper.frame_points(plan.points(i), plan.head_affine(i)) for i in chunk])
                skulls, mandibles = (np.stack(t) for t in zip(*(plan.teeth_transforms(i) for i in chunk)))
                eyes = None if plan.eyes is None else np.stack([plan.eyes.state(i) for i in chunk])
                for i, frame in zip(chunk, frames.render(start, pts, skulls, mandibles, eyes)):
                    writer.write(frame)
                    report(i + 1)
            if progress:
                progress(Progress("encode", 0, 1, "finishing the video file"))
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            spans.close()
        if progress:
            progress(Progress("encode", 1, 1, "done"))
        elapsed = time.perf_counter() - t_start
        log.info("generated %d frames %dx%d in %.2fs", n, ow, oh, elapsed)
        return RenderResult(
            frames=n, fps=fps, width=ow, height=oh, duration_s=n / fps,
            extra={"crop_box": list(map(int, box)), "emotion": job.emotion,
                   "emo_scale": float(job.emo_scale), "seed": int(job.seed),
                   "render_seconds": round(elapsed, 3), **self._render_notes(frames.batch, writer)},
        )

    # ------------------------------------------------------------------ re-dub

    def redub(self, job: RedubJob, progress: Optional[ProgressFn] = None,
              should_stop: Optional[StopFn] = None) -> RenderResult:
        """Re-drive the mouth in `job.video_path` from `job.audio_path`.

        The new audio's length sets the output length. When it is longer than the video,
        the video is looped from its start (the file is re-read, so memory stays flat);
        when shorter, the video is cut. In every frame the face is tracked, the original
        mouth is closed by warping its lips together, and the mouth is then opened as the
        new speech says; silence keeps it closed. Odd picture sizes lose their last
        row/column (H.264 4:2:0 needs even sizes). Also writes `job.mask_out_path`: white
        where a frame was changed. Frames with no face found pass through unchanged;
        NoFaceError when no frame has one.
        """
        t_start = time.perf_counter()
        reader = VideoReader(job.video_path)
        samples = _audio.load_audio(job.audio_path)
        fps = float(reader.fps)
        n = max(1, int(round(len(samples) / SAMPLE_RATE * fps)))
        if progress:
            progress(Progress("analyse", 0, 1, "analysing the new speech"))
        track = _audio.mouth_track(samples, fps, n)
        _check_stop(should_stop)
        if progress:
            progress(Progress("analyse", 1, 1, "speech analysed"))
        ow, oh = reader.width - reader.width % 2, reader.height - reader.height % 2
        if ow < 2 or oh < 2:
            raise BadVideoError("the video picture is too small")
        report = _Reporter(progress, "render", n)
        writer = VideoWriter(job.out_path, ow, oh, reader.fps, threads=self.encoder_threads, codec=self.codec)
        mask_writer = VideoWriter(job.mask_out_path, ow, oh, reader.fps, threads=1, crf=28)
        dub = _Redubber(self.face, track, seed=job.seed, render=self._redub_frame())
        loops = 0
        try:
            for i, (frame, loops) in enumerate(reader.looped(n, ow, oh)):  # noqa: B007 - read after the loop
                _check_stop(should_stop)
                out, mask = dub.frame(i, frame)
                writer.write(out)
                mask_writer.write(mask)
                report(i + 1)
            if dub.faceless == n:
                raise NoFaceError("no face found in the video")
            if progress:
                progress(Progress("encode", 0, 1, "finishing the video files"))
            writer.close()
            mask_writer.close()
        except BaseException:
            writer.abort()
            mask_writer.abort()
            raise
        if progress:
            progress(Progress("encode", 1, 1, "done"))
        elapsed = time.perf_counter() - t_start
        log.info("re-dubbed %d frames %dx%d in %.2fs (%d without a face)", n, ow, oh, elapsed,
                 dub.faceless)
        return RenderResult(
            frames=n, fps=fps, width=ow, height=oh, duration_s=n / fps,
            extra={"source_frames": reader.frame_count, "loops": loops,
                   "frames_without_face": dub.faceless, "render_seconds": round(elapsed, 3),
                   **self._render_notes(1, writer)},
        )


class _Redubber:
    """Per-frame work of a re-dub: track, shut the old mouth, open the new one.

    Each frame is its own portrait: its jaw is shut by as much as its teeth show it open
    and its lips brought together (mouth.MouthInterior), then the same jaw, lip shapes
    and mouth inside as a portrait job move it from the new speech."""

    def __init__(self, face: FaceAnalyzer, track: MouthTrack, seed: int = 0, render=None):
        self.face = face
        self.render = render or _numba_redub_frame
        self.prev: Optional[np.ndarray] = None
        self.faceless = 0
        self.track = track
        self.n = len(np.asarray(track.open))
        self.seed = seed

    def frame(self, i: int, rgb: np.ndarray) -> tuple:
        h, w = rgb.shape[:2]
        try:
            pts = self.face.landmarks(rgb, prev=self.prev)
        except NoFaceError:
            self.prev = None
            self.faceless += 1
            return rgb, np.zeros((h, w), np.uint8)
        self.prev = pts
        pts = refine_inner_lips(rgb, pts, M.FaceFrame.from_landmarks(pts).height)
        fields = M.ActionFields(pts, only=M.ActionFields.MOUTH)
        fr = fields.frame
        interior = MouthInterior(rgb, pts, fr.height, yaw_sin=fields.yaw_sin, seed=self.seed)
        # the old speech goes: the jaw shuts as far as the frame shows it open, and the
        # lips come together whatever the frame had them do
        shut, _ = interior.shut_rest
        jaw_rest = -shut / fields.gap_per_unit()
        together = 1.0
        if jaw_rest:
            fields.shut_lips(jaw_rest)
        k = min(i, self.n - 1)
        step = MouthTrack(*(np.asarray(getattr(self.track, name))[k:k + 1] for name in ("open", "width", "press",  # type: ignore[arg-type, misc]
                                                                                       "energy")),
                          fps=self.track.fps,
                          fv=None if self.track.fv is None else np.asarray(self.track.fv)[k:k + 1])
        dest = pts[:, :2].astype(np.float64).copy()
        weights = M.mouth_weights(step, 1, jaw_rest, together)
        for name, wt in weights.items():
            dest += float(wt[0]) * fields.fields[name]
        warper = R.Warper(rgb, M.lip_edges_inwards(pts, fr, cap=0.02), vertices=_lower_face(fields),
                          ring_scale=0.3)
        dest = warper.clamp(dest)
        anchors = pts[list(F.LIPS_ALL)]
        src = anchors[:, :2].astype(np.float64)
        mandible = M.fit_affine(src, src + float(weights["jaw"][0]) * fields.bone(anchors))
        out, moved = self.render(warper, interior, dest, M.fit_affine(src, src), mandible, i)
        mask = np.zeros((h, w), np.uint8)
        x0, y0, x1, y1 = warper.roi
        mask[y0:y1, x0:x1] = moved
        cv2.fillPoly(mask, [np.round(dest[list(F.LIPS_INNER), :2]).astype(np.int32)], 255)
        mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))  # type: ignore[assignment]
        return out, mask


def _numba_redub_frame(warper: R.Warper, interior: MouthInterior, dest: np.ndarray, skull: np.ndarray,
                       mandible: np.ndarray, i: int) -> tuple:
    """A re-dubbed frame with numba: the warp and its moved-pixels mask, then the mouth."""
    out, moved = warper.warp_with_mask(dest)
    interior.draw(out, dest, skull, mandible, i)
    return out, moved


def _lower_face(fields: M.ActionFields) -> np.ndarray:
    """Mesh points from just under the eyes down: all that a re-dub moves, and a margin."""
    v = fields.f[:, 1]
    top = float(fields.f[F.NOSE_TIP, 1]) - 0.06
    return np.nonzero(v >= top)[0].astype(np.int32)
