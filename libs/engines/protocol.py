"""The contract between a model service and an engine: what an engine is given and what it returns.

A model service never knows which engine it serves. It builds one engine per slot through
an entry point of the group `talkserve.engines` (see loader.py) and calls only what
`Engine` declares below. Nothing here imports grpc, protobuf, torch or the object store:
an engine reads local files and writes local files, and the service moves them to and from
the store. The portrait and re-dub jobs, their result, progress reports and the errors are
talkface's public types (libs/talkface/api.py), shared by every engine; this module adds the
person-model jobs, the options an engine is built with and where it runs.
docs/engines.md is the prose form of this contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Protocol, runtime_checkable

from libs.talkface.api import (  # noqa: F401 - re-exported: one import for adapter authors
    BadAudioError,
    BadImageError,
    BadVideoError,
    Cancelled,
    FaceTurnedError,
    MouthNotOnLipsError,
    NoFaceError,
    NoSuchFaceError,
    PortraitJob,
    Progress,
    ProgressFn,
    RedubJob,
    RenderResult,
    StopFn,
    TalkfaceError,
)

# The kinds of job; an engine lists those it can run in `Engine.jobs`.
PORTRAIT = "portrait"  # portrait + speech -> video (EchoMimic, DICE-Talk)
REDUB = "redub"  # video + new speech -> lip-synced video and mask (LatentSync)
PERSON = "person"  # train a person model from a video, then videos of that person (EchOfU)
JOB_KINDS = (PORTRAIT, REDUB, PERSON)

DEVICES = ("auto", "cpu", "cuda")


class EngineConfigError(Exception):
    """The engine cannot be built as configured (unknown name, missing weights, no GPU, ...).

    Raised while a replica loads its engines: the replica then stays NOT_SERVING and logs why.
    """


class UnsupportedJob(TalkfaceError):
    """The engine was asked for a kind of job it does not list in `jobs`."""

    code = "unsupported_job"


@dataclass(frozen=True)
class EngineOptions:
    """What a model service's settings tell an engine factory (TALKSERVE_<SERVICE>_ENGINE_*)."""

    weights_dir: Optional[str] = None  # the engine's checkpoints; None: the engine's own default
    device: str = "auto"  # "auto" (a GPU when one is present), "cpu" or "cuda"
    fp16: bool = False  # half precision where the device supports it (GPUs)
    batch_size: int = 8  # frames run through the model at once
    threads: int = 2  # CPU threads the engine and its encoder may use
    models_dir: Optional[str] = None  # talkserve's face models, for engines that detect faces with them
    extra: Mapping[str, str] = field(default_factory=dict)  # engine-specific (TALKSERVE_<SERVICE>_ENGINE_OPTIONS)

    def __post_init__(self):
        if self.device not in DEVICES:
            raise EngineConfigError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.batch_size < 1:
            raise EngineConfigError("batch_size must be at least 1")


@dataclass(frozen=True)
class DeviceInfo:
    """Where an engine runs, as it placed itself: told truthfully in every capacity reply."""

    kind: str  # "cpu" or "cuda"
    name: str  # "cpu", or the GPU's name as its driver reports it

    @property
    def gpu(self) -> bool:
        return self.kind == "cuda"


CPU = DeviceInfo("cpu", "cpu")


@dataclass
class PersonTrainJob:
    """Build a person model from a video of that person into `out_dir` (EchOfU training)."""

    video_path: str
    out_dir: str  # the engine writes every file of `Engine.person_files` here
    max_seconds: float = 300.0  # of the video that is read
    base_seconds: float = 8.0  # of the video kept as the clip later videos are made from
    max_atlas_entries: int = 1000  # talkface: most mouth appearances kept; other engines may ignore it


@dataclass
class PersonTrainResult:
    """What a person-model build made."""

    engine: str
    frames_read: int
    frames_with_face: int
    fps: float
    width: int
    height: int
    seconds: float  # the build's wall time
    atlas_entries: int = 0


@dataclass
class PersonVideoJob:
    """Make a video of a trained person speaking `audio_path` (EchOfU video generation)."""

    model_dir: str  # holds the files of `Engine.person_files`, as train_person wrote them
    audio_path: str
    out_path: str  # silent H.264 MP4; the media service adds the sound


@runtime_checkable
class Engine(Protocol):
    """What a model service calls. One object per slot; each is called by one job at a time.

    Every job method takes `progress` (called with Progress reports, may be None) and
    `should_stop` (a function that turns true when the client cancelled or went away; may
    be None). An engine checks `should_stop` at least once per batch of frames and then
    raises Cancelled. Methods for kinds not in `jobs` raise UnsupportedJob.
    """

    name: str  # "<engine>-<version>": every result names the engine that made it
    jobs: frozenset  # the kinds of job it runs, from JOB_KINDS
    device: DeviceInfo  # where it placed itself
    person_files: tuple  # files of a person model, the one that marks it complete last; () without PERSON

    def generate(self, job: PortraitJob, progress: Optional[ProgressFn] = None,
                 should_stop: Optional[StopFn] = None) -> RenderResult:
        """Animate a portrait from speech; write a silent H.264 MP4 to job.out_path."""

    def redub(self, job: RedubJob, progress: Optional[ProgressFn] = None,
              should_stop: Optional[StopFn] = None) -> RenderResult:
        """Re-drive the mouth of job.video_path from new speech; write the video and the mask video."""

    def train_person(self, job: PersonTrainJob, progress: Optional[ProgressFn] = None,
                     should_stop: Optional[StopFn] = None) -> PersonTrainResult:
        """Build a person model into job.out_dir."""

    def generate_person(self, job: PersonVideoJob, progress: Optional[ProgressFn] = None,
                        should_stop: Optional[StopFn] = None) -> RenderResult:
        """Make a video of a trained person from speech."""


@runtime_checkable
class LiveEngine(Protocol):
    """What an engine adds to render live sessions (optional: a replica whose engine lacks
    `open_live` offers no live slots). The session it returns is used by one thread: `push`
    16 kHz float32 audio, `pad_to` silence up to an audio-clock time, `frames()` renders what
    the audio allows (libs/talkface/live.py's LiveSession is the reference)."""

    def open_live(self, image_path: str, settings):
        """A live session on the portrait `image_path` with talkface's LiveSettings."""


# An entry point of `talkserve.engines` names one of these: called once per slot.
EngineFactory = Callable[[EngineOptions], Engine]
