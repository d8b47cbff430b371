"""What every model service shares: settings, the configured engine per slot, input/output staging, main loop."""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import queue
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs import logs
from libs.engines.loader import check_engine, load_engine
from libs.engines.protocol import PORTRAIT, DeviceInfo, Engine, EngineOptions
from libs.grpcutil.jobs import SlotPool, WorkerServicer
from libs.grpcutil.live import LiveServicer
from libs.grpcutil.server import GrpcServer, ServerSettings, create_server, serve_until_signal
from libs.store.client import ObjectStore
from libs.talkface import api
from talkserve.common.v1 import common_pb2
from talkserve.live.v1 import live_pb2, live_pb2_grpc
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger(__name__)


class ModelServiceSettings(ServerSettings):
    """Settings of one model-service replica; the env prefix is set by each service."""

    model_config = SettingsConfigDict(extra="ignore")

    slots: int = Field(2, ge=1, description="jobs this replica runs at once")
    replica_id: str = ""
    work_dir: str = Field(default_factory=tempfile.gettempdir)
    models_dir: str | None = None
    engine_threads: int = Field(2, ge=1, description="threads each engine's face models and encoder use")
    # Which engine serves this replica (an entry point of talkserve.engines) and how it is built.
    engine: str = Field("talkface", min_length=1, description="engine name in the entry points talkserve.engines")
    engine_weights_dir: str | None = Field(None, description="the engine's checkpoints")
    engine_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a GPU when one is present")
    engine_fp16: bool = Field(False, description="half precision where the device supports it")
    engine_batch_size: int = Field(8, ge=1, description="frames run through the model at once")
    engine_options: dict[str, str] = Field(default_factory=dict, description="engine-specific options (JSON)")
    # Live sessions (portrait services whose engine renders live): how many at once, and when an
    # idle one ends. One 512 px, 25 fps session keeps about 0.17 of a core busy (bench/bench_live.py).
    live_slots: int = Field(1, ge=0, description="live sessions this replica holds at once; 0: none")
    live_idle_timeout_s: float = Field(30.0, gt=0, description="a live session with no message this long ends")


def engine_options(settings: ModelServiceSettings) -> EngineOptions:
    """What the settings tell an engine factory."""
    return EngineOptions(weights_dir=settings.engine_weights_dir, device=settings.engine_device,
                         fp16=settings.engine_fp16, batch_size=settings.engine_batch_size,
                         threads=settings.engine_threads, models_dir=settings.models_dir,
                         extra=dict(settings.engine_options))


def configured_engine(settings: ModelServiceSettings, job_kind: str) -> Callable[[], Engine]:
    """A factory for the engine the settings name, as loaded from its entry point."""
    options = engine_options(settings)
    return lambda: load_engine(settings.engine, options, job_kind)


class EnginePool:
    """One engine per slot (talkface's hold interpreters that are not thread-safe), filled after
    the server started; what the engines are and where they run, once loaded."""

    def __init__(self, configured: str):
        self._free: queue.Queue = queue.Queue()
        self.name = configured  # the configured name until the engine names itself
        self.device: DeviceInfo | None = None

    def load(self, factory: Callable[[], Engine], size: int, job_kind: str) -> None:
        for _ in range(size):
            engine = factory()
            check_engine(engine, job_kind)
            self._free.put(engine)
        self.name, self.device = engine.name, engine.device

    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        eng = self._free.get()
        try:
            yield eng
        finally:
            self._free.put(eng)


class LiveEngine:
    """The engine that prepares live sessions' portraits (one of its own, beside the slots' engines,
    so a long file job never holds up a session's start); a session then renders on its own."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def load(self, factory: Callable[[], Engine]) -> bool:
        """Build the engine; False when it renders no live sessions (it has no open_live)."""
        engine = factory()
        if not callable(getattr(engine, "open_live", None)):
            return False
        self._engine = engine
        return True

    def open_live(self, portrait: str, settings):
        if self._engine is None:
            raise RuntimeError("this replica's engine renders no live sessions")
        with self._lock:  # the face models are not thread-safe
            return self._engine.open_live(portrait, settings)  # type: ignore[attr-defined]


class Staging:
    """Moves a job's inputs from the store into a private temp dir and its outputs back."""

    def __init__(self, store: ObjectStore, work_dir: str):
        self.store = store
        self.work_dir = work_dir

    @contextlib.contextmanager
    def job_dir(self, job_id: str) -> Iterator[pathlib.Path]:
        safe = "".join(c for c in job_id if c.isalnum() or c in "-_")[:64] or "job"
        with tempfile.TemporaryDirectory(prefix=f"{safe}-", dir=self.work_dir) as tmp:
            yield pathlib.Path(tmp)

    def fetch(self, ref: common_pb2.ObjectRef, dest: pathlib.Path) -> pathlib.Path:
        self.store.get_file(ref.key, str(dest))
        return dest

    def publish(self, path: pathlib.Path, ref: common_pb2.ObjectRef, result: api.RenderResult | None = None) -> None:
        """Upload a finished video; the result travels as object metadata, so a retried task can reuse it."""
        self.store.put_file(ref.key, str(path), content_type="video/mp4",
                            metadata=result_metadata(result) if result else None)


def result_metadata(result: api.RenderResult) -> dict[str, str]:
    """What a render produced, as object metadata (S3 metadata values are ASCII strings)."""
    return {"engine": result.engine, "frames": str(result.frames), "fps": repr(float(result.fps)),
            "width": str(result.width), "height": str(result.height), "duration": repr(float(result.duration_s))}


def given_params(**values) -> dict:
    """The API parameters a client gave, for PortraitJob/RedubJob.params: proto3's zero means not given."""
    return {name: value for name, value in values.items() if value}


def face_choice(choice: common_pb2.FaceChoice) -> dict:
    """PortraitJob's face_index / face_box from a request's FaceChoice (unset: neither)."""
    which = choice.WhichOneof("face")
    if which == "index":
        return {"face_index": choice.index}
    if which == "box":
        b = choice.box
        return {"face_box": (b.x0, b.y0, b.x1, b.y1)}
    return {}


def video_result(result: api.RenderResult, video: common_pb2.ObjectRef,
                 mask: common_pb2.ObjectRef | None = None) -> common_pb2.VideoResult:
    """The proto form of an engine result."""
    return common_pb2.VideoResult(
        video=video, mask=mask, frames=result.frames, fps=result.fps, width=result.width,
        height=result.height, duration_seconds=result.duration_s, engine=result.engine,
    )


@dataclass
class ModelReplica:
    """A started replica: its server, its slots, and an event set once its engines are loaded."""

    server: GrpcServer
    slots: SlotPool
    ready: threading.Event
    replica_id: str
    live_slots: SlotPool | None = None

    @property
    def port(self) -> int:
        return self.server.port


def start_model_service(
    settings: ModelServiceSettings,
    store: ObjectStore,
    register: Callable[[grpc.Server, SlotPool, "EnginePool", Staging], Iterable[str]],
    job_kind: str,
    engine_factory: Callable[[], Engine] | None = None,
) -> ModelReplica:
    """Start a replica at once, NOT_SERVING; load the engines in the background, then go SERVING.

    Health answers from the first moment, so a startup probe can wait out a slow model load.
    `engine_factory` builds one slot's engine; by default the engine the settings name.
    """
    slots = SlotPool(settings.slots)
    replica_id = settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    staging = Staging(store, settings.work_dir)
    pool = EnginePool(settings.engine)
    factory = engine_factory or configured_engine(settings, job_kind)

    # portrait services also hold live sessions, where their engine renders them
    live_slots = SlotPool(settings.live_slots) if job_kind == PORTRAIT and settings.live_slots > 0 else None
    live_engine = LiveEngine()

    def _register(server: grpc.Server):
        worker = WorkerServicer(slots, pool, replica_id, live_slots)
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(worker, server)
        names = list(register(server, slots, pool, staging))
        if live_slots is not None:
            live_pb2_grpc.add_LiveServiceServicer_to_server(
                LiveServicer(live_slots, live_engine.open_live, staging, replica_id, settings.live_idle_timeout_s),
                server)
            names.append(live_pb2.DESCRIPTOR.services_by_name["LiveService"].full_name)
        return [*names, worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name]

    handle = create_server(settings, _register)
    ready = threading.Event()

    def _load():
        try:
            pool.load(factory, settings.slots, job_kind)
            if live_slots is not None and live_engine.load(factory):
                live_slots.open()
        except Exception:  # noqa: BLE001 - stays NOT_SERVING; the log says why
            log.exception("replica %s could not load its engine %s", replica_id, settings.engine)
            return
        slots.open()
        handle.set_serving(True)
        ready.set()
        log.info("replica %s ready on port %d with %d slots of %s on %s", replica_id, handle.port,
                 settings.slots, pool.name, pool.device.name if pool.device else "?")

    threading.Thread(target=_load, name="engine-load", daemon=True).start()
    return ModelReplica(handle, slots, ready, replica_id, live_slots)


def run_forever(replica: ModelReplica, grace: float) -> None:
    """Serve until SIGTERM; then refuse new jobs and let running ones finish within `grace`."""

    def _drain():
        replica.slots.draining = True
        if replica.live_slots is not None:
            replica.live_slots.draining = True

    serve_until_signal(replica.server, grace, on_stop=_drain)


def main(settings_cls: type[ModelServiceSettings], create: Callable) -> None:
    """Entry point of a model service: settings from env, the configured engine, serve until SIGTERM."""
    from libs.store.settings import StoreSettings

    settings = settings_cls()
    logs.configure(settings.replica_id or settings_cls.__name__.removesuffix("Settings").lower())
    replica = create(settings, ObjectStore(StoreSettings()))
    run_forever(replica, settings.grace_seconds)


def named(result: api.RenderResult, engine: Engine) -> api.RenderResult:
    """The result as published: it names the engine that made it (the engine's name when it left it empty)."""
    if not result.engine:
        result.engine = engine.name
    return result


def portrait_work(staging: Staging, engines: EnginePool, job_id: str,
                  image: common_pb2.ObjectRef, audio: common_pb2.ObjectRef,
                  output: common_pb2.ObjectRef, make_job: Callable[[str, str, str], api.PortraitJob]):
    """The work of one portrait job: stage inputs, render with a free engine, publish the video."""

    def work(progress: api.ProgressFn, should_stop: api.StopFn) -> api.RenderResult:
        with staging.job_dir(job_id) as tmp:
            image_path = staging.fetch(image, tmp / "image")
            audio_path = staging.fetch(audio, tmp / "audio.wav")
            job = make_job(str(image_path), str(audio_path), str(tmp / "video.mp4"))
            started = time.monotonic()
            with engines.engine() as engine:
                result = named(engine.generate(job, progress, should_stop), engine)
            progress(api.Progress("upload", 0, 1, "Saving video..."))
            staging.publish(tmp / "video.mp4", output, result)
            log.info("job %s finished: %d frames in %.2f s (%s)", job_id, result.frames, time.monotonic() - started,
                     result.extra)
            return result

    return work
