"""The built-in engine `talkface` behind the engine contract: entry point `talkface` of `talkserve.engines`.

A thin adapter: portrait and re-dub jobs go to libs.talkface.engine.Engine, person jobs to
libs.talkface.person. Where portrait frames render is decided here, from the device setting
and the engine option `render` (TALKSERVE_<SERVICE>_ENGINE_OPTIONS='{"render": "torch"}'):

| device | render `auto` (default) | render `torch` | render `numba` |
| --- | --- | --- | --- |
| `auto` | torch on the GPU when torch sees one, else numba on the CPU (torch is not even imported where no NVIDIA driver shows) | torch on the GPU, else on the CPU | numba |
| `cpu` | numba | torch on the CPU | numba |
| `cuda` | torch on the GPU (none: EngineConfigError) | the same | EngineConfigError |

The torch path batches `batch_size` frames per pass and, on a GPU, encodes with NVENC where
PyAV has it (encode.choose_codec). weights_dir, when set, is where its face models are
(TALKSERVE_<SERVICE>_MODELS_DIR otherwise); fp16 is not used (float32 everywhere: the
output must equal the numba path's).
"""

from __future__ import annotations

import importlib.util
from typing import Optional

from libs.engines.protocol import (
    CPU,
    PERSON,
    PORTRAIT,
    REDUB,
    DeviceInfo,
    EngineConfigError,
    EngineOptions,
    PersonTrainJob,
    PersonTrainResult,
    PersonVideoJob,
    PortraitJob,
    ProgressFn,
    RedubJob,
    RenderResult,
    StopFn,
)

RENDERS = ("auto", "numba", "torch")


def placement(options: EngineOptions) -> tuple[Optional[str], DeviceInfo]:
    """Where talkface renders portrait frames: the torch device (None: numba on the CPU) and
    the DeviceInfo to report. Raises EngineConfigError for what cannot be honoured."""
    render = options.extra.get("render", "auto")
    if render not in RENDERS:
        raise EngineConfigError(f"talkface's render option must be one of {', '.join(RENDERS)}, not {render!r}")
    if render == "numba":
        if options.device == "cuda":
            raise EngineConfigError("talkface's numba render runs on the CPU: set the device to auto or cpu, "
                                    "or the render to torch (or auto) for a GPU")
        return None, CPU
    if options.device == "cpu" and render == "auto":
        return None, CPU
    from libs.engines.device import gpu_possible, torch_device

    if options.device == "auto" and render == "auto" and (not gpu_possible()
                                                         or importlib.util.find_spec("torch") is None):
        return None, CPU  # no GPU driver, or no torch: numba, without importing torch to ask

    device, info = torch_device(options.device)  # cuda without a GPU raises
    if info.gpu or render == "torch":
        return str(device), info
    return None, CPU


class TalkfaceEngine:
    """talkface's Engine (face models, phone recogniser) for one slot, plus its person models."""

    jobs = frozenset({PORTRAIT, REDUB, PERSON})

    def __init__(self, options: EngineOptions):
        from libs.talkface import encode, person
        from libs.talkface.engine import Engine

        render_device, self.device = placement(options)
        codec, self.codec_reason = encode.choose_codec(self.device.gpu)
        self._person = person
        self._threads = options.threads
        self._engine = Engine(models_dir=options.weights_dir or options.models_dir, threads=options.threads,
                              render_device=render_device, batch=options.batch_size, codec=codec)
        self.name = self._engine.name
        # model.json last: its presence in the store says the model is complete
        self.person_files = (*[n for n in person.MODEL_FILES if n != person.MODEL_FILE], person.MODEL_FILE)

    def generate(self, job: PortraitJob, progress: Optional[ProgressFn] = None,
                 should_stop: Optional[StopFn] = None) -> RenderResult:
        result = self._engine.generate(job, progress, should_stop)
        result.extra["device"] = self.device.name
        result.extra["encoder_choice"] = self.codec_reason
        return result

    def redub(self, job: RedubJob, progress: Optional[ProgressFn] = None,
              should_stop: Optional[StopFn] = None) -> RenderResult:
        return self._engine.redub(job, progress, should_stop)

    def open_live(self, image_path: str, settings):
        """A live session on the portrait `image_path` (libs.talkface.live.LiveSession)."""
        from libs.talkface.live import LiveSession

        return LiveSession(self._engine, image_path, settings)

    def train_person(self, job: PersonTrainJob, progress: Optional[ProgressFn] = None,
                     should_stop: Optional[StopFn] = None) -> PersonTrainResult:
        options = self._person.TrainOptions(max_seconds=job.max_seconds, base_seconds=job.base_seconds,
                                            max_atlas_entries=job.max_atlas_entries)
        info = self._person.build_person_model(self._engine.face, job.video_path, job.out_dir, options,
                                               progress, should_stop, threads=self._threads)
        return PersonTrainResult(engine=info.engine, frames_read=info.frames_read,
                                 frames_with_face=info.frames_with_face, fps=info.fps, width=info.width,
                                 height=info.height, seconds=info.seconds, atlas_entries=info.atlas_entries)

    def generate_person(self, job: PersonVideoJob, progress: Optional[ProgressFn] = None,
                        should_stop: Optional[StopFn] = None) -> RenderResult:
        return self._person.generate_person_video(job.model_dir, job.audio_path, job.out_path, progress,
                                                  should_stop, threads=self._threads)


def create(options: EngineOptions) -> TalkfaceEngine:
    """The entry point: one talkface engine for one slot."""
    return TalkfaceEngine(options)
