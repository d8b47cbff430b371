"""A live session: a portrait that talks while the speech is still arriving, frame by frame.

`LiveSession` prepares the portrait once, as a portrait job does (crop, landmarks, the mouth
inside, the warp), then takes audio as it comes (`push`) and renders every frame whose
audio and look-ahead are in (`frames`). The mouth is the file jobs' mouth track computed
as the audio arrives (live_audio.LiveMouth); blinks, breathing and small head motion are
planned ahead in blocks of BLOCK_S, so the face stays alive when no one speaks. Frames are
stamped on the session's audio clock: frame i shows the audio of [i / fps, (i + 1) / fps)
counted from the session's first sample. The caller keeps the clock running in pauses by
pushing silence (`pad_to`). Nothing here knows of gRPC; one session is used by one thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import cv2
import numpy as np

from . import motion as M
from . import render as R
from .api import EMOTIONS, ENGINE_NAME, MouthTrack, PortraitJob
from .eyes import EyeModel
from .live_audio import LOOKAHEAD_S, MAX_LOOKAHEAD_S, LiveMouth
from .mouth import MouthInterior, refine_inner_lips

FRAME_I420 = "i420"  # raw planar YUV 4:2:0, what a WebRTC video encoder takes without conversion
FRAME_JPEG = "jpeg"
FRAME_FORMATS = (FRAME_I420, FRAME_JPEG)
BLOCK_S = 300.0  # idle motion (blinks, head, breathing) is planned this far ahead at a time
BREATH_PERIOD_S = 4.0  # a breath every four seconds at rest ...
BREATH_SHIFT = 0.0015  # ... lifting the head by this much of the face height
SAMPLE_RATE = 16000


@dataclass
class LiveSettings:
    """How a live session renders (sizes in pixels; the face is cropped as in EchoMimic jobs)."""

    width: int = 512
    height: int = 512
    fps: int = 25
    emotion: str = "neutral"
    emo_scale: float = 0.0
    seed: int = 0
    dynamic_scale: float = 1.0
    expand_ratio: float = 0.5
    frame_format: str = FRAME_I420
    jpeg_quality: int = 85
    lookahead_s: float = LOOKAHEAD_S
    phones: bool = True  # PocketSphinx phones as well as the acoustic estimate

    def check(self) -> None:
        """ValueError for what cannot be rendered."""
        if self.emotion not in EMOTIONS:
            raise ValueError(f"unknown emotion {self.emotion!r}; expected one of {', '.join(EMOTIONS)}")
        if not 1 <= self.fps <= 60:
            raise ValueError("fps must be 1 to 60")
        if self.frame_format not in FRAME_FORMATS:
            raise ValueError(f"frame format must be one of {', '.join(FRAME_FORMATS)}")
        if not 0 <= self.lookahead_s <= MAX_LOOKAHEAD_S:
            raise ValueError(f"the look-ahead must be 0 to {MAX_LOOKAHEAD_S} s")
        if min(self.width, self.height) < 64 or max(self.width, self.height) > 2048:
            raise ValueError("width and height must be 64 to 2048 pixels")


@dataclass
class LiveFrame:
    """One encoded frame of a live session."""

    index: int
    pts: float  # seconds on the session's audio clock where the frame's audio starts
    data: bytes  # I420 planes (Y, then U, then V) or a JPEG file
    mouth_open: float  # the opening the speech asked for, 0..1 (what drove the frame, not a measurement)
    audio_in_s: float  # the audio clock when the frame was made: pts + 1/fps + the look-ahead at least


class LiveSession:
    """One portrait, rendered live from streaming speech (see the module doc)."""

    engine = ENGINE_NAME

    def __init__(self, engine, image_path: str, settings: LiveSettings):
        """`engine` is a libs.talkface.engine.Engine (its face models prepare the portrait)."""
        settings.check()
        self.settings = settings
        job = PortraitJob(image_path=image_path, audio_path="", out_path="", fps=settings.fps,
                          width=R.even(settings.width), height=R.even(settings.height), crop=True,
                          expand_ratio=settings.expand_ratio, seed=settings.seed, emotion=settings.emotion,
                          emo_scale=settings.emo_scale, dynamic_scale=settings.dynamic_scale)
        img, rest, box = engine.prepare_portrait(job)
        self.height, self.width = img.shape[:2]
        rest = refine_inner_lips(img, rest, M.FaceFrame.from_landmarks(rest).height)
        fields = M.ActionFields(rest)
        self._rest = rest
        self._interior = MouthInterior(img, rest, fields.frame.height, yaw_sin=fields.yaw_sin,
                                       softness=engine._softness(box, img), seed=settings.seed)
        shut, self._press_rest = self._interior.shut_rest
        self._jaw_rest = -shut / fields.gap_per_unit()
        # as generate(): the warp takes the lips from a little inside their inner edges
        self._warper = R.Warper(img, M.lip_edges_inwards(rest, fields.frame, cap=0.02 if shut else 0.006),
                                head_ring=settings.dynamic_scale > 0, eyes=EyeModel(rest, img))
        self._block_frames = max(1, int(BLOCK_S * settings.fps))
        self._block = -1
        self._plan: Optional[M.MotionPlan] = None
        self.mouth = LiveMouth(settings.fps, settings.lookahead_s, settings.phones)
        self.frames_made = 0

    # ------------------------------------------------------------------ audio

    def push(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono float32 speech (or silence) to the session's audio."""
        self.mouth.feed(samples)

    def pad_to(self, seconds: float) -> None:
        """Push silence until the audio clock reads `seconds` (nothing when it is past it)."""
        missing = int(round(seconds * SAMPLE_RATE)) - self.mouth.received
        if missing > 0:
            self.mouth.feed(np.zeros(missing, np.float32))

    @property
    def audio_seconds(self) -> float:
        return self.mouth.seconds

    # ------------------------------------------------------------------ frames

    def _plan_for(self, frame: int) -> tuple[M.MotionPlan, int]:
        """The motion plan holding `frame`, and the frame's index in it."""
        block = frame // self._block_frames
        if block != self._block or self._plan is None:
            self._plan = self._new_plan(block)
            self._block = block
        return self._plan, frame - block * self._block_frames

    def _new_plan(self, block: int) -> M.MotionPlan:
        s, n = self.settings, self._block_frames
        silent = np.zeros(n, np.float32)
        # fresh fields each block: plan_motion shuts an open portrait's lips in the fields it is given
        plan = M.plan_motion(self._rest, MouthTrack(silent, silent, silent, silent, float(s.fps)), n,
                             emotion=s.emotion, emo_scale=s.emo_scale, seed=s.seed + block,
                             dynamic_scale=s.dynamic_scale, fields=M.ActionFields(self._rest),
                             jaw_rest=self._jaw_rest, press_rest=self._press_rest)
        t = (block * n + np.arange(n)) / float(s.fps)
        breath = np.sin(2.0 * math.pi * t / BREATH_PERIOD_S) * BREATH_SHIFT * plan.fields.frame.height
        plan.shift = plan.shift + (np.asarray(plan.fields.frame.ey)[None, :] * breath[:, None]).astype(np.float32)
        return plan

    def _set_mouth(self, first: int, track: MouthTrack) -> None:
        m = len(np.asarray(track.open))
        done = 0
        while done < m:
            plan, k = self._plan_for(first + done)
            take = min(m - done, self._block_frames - k)
            cut = slice(done, done + take)
            part = MouthTrack(open=np.asarray(track.open)[cut], width=np.asarray(track.width)[cut],
                              press=np.asarray(track.press)[cut], energy=np.asarray(track.energy)[cut],
                              fps=track.fps, fv=None if track.fv is None else np.asarray(track.fv)[cut])
            plan.set_mouth(k, part)
            done += take

    def frames(self) -> Iterator[LiveFrame]:
        """Render every frame whose audio (and look-ahead) is in and that was not made yet."""
        while (span := self.mouth.next_span()) is not None:
            first, track = span
            self._set_mouth(first, track)
            opening = np.asarray(track.open, np.float32)
            for j in range(opening.size):
                yield self._render(first + j, float(opening[j]))

    def _render(self, i: int, opening: float) -> LiveFrame:
        plan, k = self._plan_for(i)
        pts = self._warper.frame_points(plan.points(k), plan.head_affine(k))
        skull, mandible = plan.teeth_transforms(k)
        rgb = self._warper.warp(pts, eyes=plan.eye_state(k))
        self._interior.draw(rgb, pts, skull, mandible, i)
        self.frames_made += 1
        return LiveFrame(index=i, pts=i / float(self.settings.fps), data=self._encode(rgb), mouth_open=opening,
                         audio_in_s=self.mouth.seconds)

    def _encode(self, rgb: np.ndarray) -> bytes:
        if self.settings.frame_format == FRAME_JPEG:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(self.settings.jpeg_quality)])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            return buf.tobytes()
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()


def i420_to_rgb(data: bytes, width: int, height: int) -> np.ndarray:
    """An I420 frame (as LiveSession makes them) back to RGB."""
    yuv = np.frombuffer(data, np.uint8).reshape(height * 3 // 2, width)
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
