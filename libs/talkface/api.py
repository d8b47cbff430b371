"""Public types of the talkface engine: jobs, results, progress and errors.

Everything a model service needs to call the engine lives here; the engine itself
knows nothing of gRPC, protobuf or the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

ENGINE_NAME = "talkface-1"

EMOTIONS = ("contempt", "sad", "happy", "surprised", "angry", "disgusted", "fear", "neutral")


class TalkfaceError(Exception):
    """Base of every error the engine raises on purpose; `code` is stable for clients."""

    code = "engine_error"


class InputError(TalkfaceError):
    """The caller's input is at fault (an image, face, sound or video the engine cannot use):
    the job fails as the client's error, and trying again will not help."""


class BadImageError(InputError):
    """The portrait cannot be decoded as an image."""

    code = "bad_image"


class NoFaceError(InputError):
    """No face was found where one is required."""

    code = "no_face"


class NoSuchFaceError(NoFaceError):
    """The request names a face (by index or box) that the portrait does not have."""

    code = "no_such_face"


class FaceTurnedError(InputError):
    """The face is turned further (yaw or pitch) than the engine can animate."""

    code = "face_turned"


class MouthNotOnLipsError(InputError):
    """The face mesh's mouth could not be placed on the face's lips (covered mouth, bad fit)."""

    code = "mouth_not_on_lips"


class BadAudioError(InputError):
    """The audio cannot be decoded or holds no samples."""

    code = "bad_audio"


class BadVideoError(InputError):
    """The video cannot be decoded or holds no frames."""

    code = "bad_video"


class Cancelled(TalkfaceError):
    """The caller asked the engine to stop."""

    code = "cancelled"


@dataclass(frozen=True)
class Progress:
    """One progress report: `done` of `total` units of `stage` are finished."""

    stage: str  # "analyse", "render", "encode"
    done: int
    total: int
    message: str = ""


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]


@dataclass
class PortraitJob:
    """Animate one portrait image from one speech track (EchoMimic / DICE-Talk)."""

    image_path: str
    audio_path: str
    out_path: str  # a silent H.264 MP4 is written here; the media service adds the audio
    fps: int = 24
    width: Optional[int] = None  # both None: keep the portrait's aspect, shorter side = min_resolution
    height: Optional[int] = None
    min_resolution: int = 512
    crop: bool = False  # True: crop to the face region grown by expand_ratio, then resize
    expand_ratio: float = 0.5
    seed: int = 0
    emotion: str = "neutral"
    emo_scale: float = 0.0  # 0 = none; DICE-Talk's 0..10, 6 is its default
    dynamic_scale: float = 1.0  # head-motion amount
    duration: Optional[float] = None  # seconds; None = the audio's length
    max_frames: Optional[int] = None  # EchoMimic's `length`
    # Which face of a portrait with several to animate (choice.py): its index, faces ordered
    # left to right, or a box (x0, y0, x1, y1) in the portrait's pixels holding its centre;
    # neither: the largest frontal face.
    face_index: Optional[int] = None
    face_box: Optional[tuple] = None
    # The API's parameters that the fields above do not carry (diffusion settings such as cfg,
    # steps, ref_scale), as the client gave them, for engines that use them (docs/engines.md);
    # talkface has no use for them (docs/parameters.md).
    params: dict = field(default_factory=dict)


@dataclass
class RedubJob:
    """Re-drive the mouth of an existing video from new speech (LatentSync)."""

    video_path: str
    audio_path: str
    out_path: str  # silent H.264 MP4, same size and fps as the input video
    mask_out_path: str  # video of the changed region (white = changed)
    seed: int = 0
    params: dict = field(default_factory=dict)  # as PortraitJob.params (inference_steps, guidance_scale, ...)


@dataclass
class RenderResult:
    """What the engine made."""

    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    engine: str = ENGINE_NAME
    extra: dict = field(default_factory=dict)


@dataclass
class MouthTrack:
    """Per-video-frame articulation from speech, the contract between audio and motion.

    All arrays have one value per output video frame.
    - open:   0..1 jaw/lip opening (0 = lips together at rest)
    - width:  -1..1 lip spread (-1 fully rounded/narrow as OW/UW/W, +1 spread as IY)
    - press:  0..1 lips pressed together (M/B/P), overrides opening
    - energy: 0..1 loudness envelope, drives head motion and silence detection
    - fv:     0..1 lower lip under the upper teeth (F/V); None = never
    """

    open: "object"
    width: "object"
    press: "object"
    energy: "object"
    fps: float
    fv: "object" = None
