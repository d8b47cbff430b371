"""The built-in engine `talkface` behind the engine contract: entry point `talkface` of `talkserve.engines`.

A thin adapter: portrait and re-dub jobs go to libs.talkface.engine.Engine, person jobs to
libs.talkface.person. It runs on the CPU (its warp is a numba kernel); weights_dir, when
set, is where its face models are (TALKSERVE_<SERVICE>_MODELS_DIR otherwise), and it has
no use for fp16 or batch_size.
"""

from __future__ import annotations

from typing import Optional

from libs.engines.protocol import (
    CPU,
    PERSON,
    PORTRAIT,
    REDUB,
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


class TalkfaceEngine:
    """talkface's Engine (face models, phone recogniser) for one slot, plus its person models."""

    jobs = frozenset({PORTRAIT, REDUB, PERSON})
    device = CPU

    def __init__(self, options: EngineOptions):
        # Asking for a GPU and getting the CPU would leave a requested GPU idle: refuse it
        # until talkface has a GPU render path.
        if options.device == "cuda":
            raise EngineConfigError("talkface renders on the CPU only: set the engine device to auto or cpu, "
                                    "or configure an engine that uses a GPU")
        from libs.talkface import person
        from libs.talkface.engine import Engine

        self._person = person
        self._threads = options.threads
        self._engine = Engine(models_dir=options.weights_dir or options.models_dir, threads=options.threads)
        self.name = self._engine.name
        # model.json last: its presence in the store says the model is complete
        self.person_files = (*[n for n in person.MODEL_FILES if n != person.MODEL_FILE], person.MODEL_FILE)

    def generate(self, job: PortraitJob, progress: Optional[ProgressFn] = None,
                 should_stop: Optional[StopFn] = None) -> RenderResult:
        return self._engine.generate(job, progress, should_stop)

    def redub(self, job: RedubJob, progress: Optional[ProgressFn] = None,
              should_stop: Optional[StopFn] = None) -> RenderResult:
        return self._engine.redub(job, progress, should_stop)

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
