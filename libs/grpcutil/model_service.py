"""What every model service shares: settings, an engine per slot, input/output staging, main loop."""

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
from typing import Callable, Iterable, Iterator

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.grpcutil.jobs import SlotPool, WorkerServicer
from libs.grpcutil.server import GrpcServer, ServerSettings, create_server, serve_until_signal
from libs.store.client import ObjectStore
from libs.talkface import api
from talkserve.common.v1 import common_pb2
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


class EnginePool:
    """One engine per slot: engine objects hold interpreters that are not thread-safe."""

    def __init__(self, factory: Callable[[], object], size: int):
        self._free: queue.Queue = queue.Queue()
        for _ in range(size):
            self._free.put(factory())

    @contextlib.contextmanager
    def engine(self) -> Iterator[object]:
        eng = self._free.get()
        try:
            yield eng
        finally:
            self._free.put(eng)


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

    @property
    def port(self) -> int:
        return self.server.port


def start_model_service(
    settings: ModelServiceSettings,
    store: ObjectStore,
    register: Callable[[grpc.Server, SlotPool, "EnginePool", Staging], Iterable[str]],
    engine_factory: Callable[[], object],
    engine_name: str = api.ENGINE_NAME,
) -> ModelReplica:
    """Start a replica at once, NOT_SERVING; load the engines in the background, then go SERVING.

    Health answers from the first moment, so a startup probe can wait out a slow model load.
    """
    slots = SlotPool(settings.slots)
    replica_id = settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    staging = Staging(store, settings.work_dir)
    pool = _LazyPool()

    def _register(server: grpc.Server):
        worker = WorkerServicer(slots, engine_name, replica_id)
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(worker, server)
        names = list(register(server, slots, pool, staging))
        return [*names, worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name]

    handle = create_server(settings, _register)
    ready = threading.Event()

    def _load():
        try:
            pool.load(engine_factory, settings.slots)
        except Exception:  # noqa: BLE001 - stays NOT_SERVING; the log says why
            log.exception("replica %s could not load its engine", replica_id)
            return
        slots.open()
        handle.set_serving(True)
        ready.set()
        log.info("replica %s ready on port %d with %d slots", replica_id, handle.port, settings.slots)

    threading.Thread(target=_load, name="engine-load", daemon=True).start()
    return ModelReplica(handle, slots, ready, replica_id)


class _LazyPool(EnginePool):
    """An engine pool filled after the server started."""

    def __init__(self):
        self._free = queue.Queue()

    def load(self, factory: Callable[[], object], size: int) -> None:
        for _ in range(size):
            self._free.put(factory())


def run_forever(replica: ModelReplica, grace: float) -> None:
    """Serve until SIGTERM; then refuse new jobs and let running ones finish within `grace`."""

    def _drain():
        replica.slots.draining = True

    serve_until_signal(replica.server, grace, on_stop=_drain)


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("TALKSERVE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(settings_cls: type[ModelServiceSettings], create: Callable) -> None:
    """Entry point of a model service: settings from env, talkface engines, serve until SIGTERM."""
    from libs.store.settings import StoreSettings
    from libs.talkface.engine import Engine

    configure_logging()
    settings = settings_cls()
    replica = create(settings, ObjectStore(StoreSettings()), lambda: Engine(models_dir=settings.models_dir,
                                                                       threads=settings.engine_threads))
    run_forever(replica, settings.grace_seconds)


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
                result = engine.generate(job, progress, should_stop)
            progress(api.Progress("upload", 0, 1, "Saving video..."))
            staging.publish(tmp / "video.mp4", output, result)
            log.info("job %s finished: %d frames in %.2f s", job_id, result.frames, time.monotonic() - started)
            return result

    return work
