"""The steps every kind of task is made of: record progress, call the media service, render on a
model replica, mux, complete.

Each kind's runner (services/gateway/kinds/) strings these steps together. Every step reads
and writes objects under the task's prefix, and the task record is updated through
conditional writes, so a record always shows the step the task is really in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from libs.store.client import NotFound, ObjectStore
from libs.tasks import LeaseLost, TaskRecord, TaskStatus, TaskStore, utcnow
from services.gateway.cache import remember
from services.gateway.clients import Clients, Replica
from services.gateway.faults import HandedBack, Retryable, TaskFailed, failure
from services.gateway.keys import ref, task_key
from services.gateway.rpc import Stream
from services.gateway.settings import GatewaySettings
from talkserve.common.v1 import common_pb2
from talkserve.media.v1 import media_pb2

log = logging.getLogger(__name__)

# Share of the overall progress each step takes.
NORMALISE, RENDER_END = 0.05, 0.9

Req = TypeVar("Req")
Resp = TypeVar("Resp")
C = TypeVar("C")
Report = Callable[[float, str], Any]


class Event(Protocol):
    """An event of a model service's stream: progress, or (last) the result."""

    @property
    def progress(self) -> common_pb2.Progress: ...

    def HasField(self, field_name: str) -> bool: ...  # noqa: N802 - protobuf's name


def progress_detail(p: common_pb2.Progress) -> dict:
    """A progress event as the native API shows it: stage, frame i of N, seconds left."""
    stage = common_pb2.JobStage.Name(p.stage).removeprefix("JOB_STAGE_").lower()
    return {"stage": stage, "done": p.done, "total": p.total,
            "eta_seconds": round(p.eta_seconds, 1) if p.eta_seconds >= 0 else None}


@dataclass
class Run:
    """A task being run by this gateway, with the handle that cancels its current RPC."""

    record: TaskRecord
    replica: Replica
    stop: threading.Event
    segment: int | None = None
    call: Stream[Any] | None = None
    handback: bool = False
    # Set by the dispatcher: gives the replica's slot back once the render is over, so the next
    # unit renders there while this one is still being muxed and stored.
    release_slot: Callable[[], None] | None = None

    def client(self, make: Callable[[grpc.Channel], C]) -> C:
        """The typed client of the replica this unit runs on."""
        return self.replica.client(make)

    def cancel(self, handback: bool = False) -> None:
        """Stop the unit: cancelled for good, or (`handback`) to be run again elsewhere."""
        self.handback = self.handback or handback
        self.stop.set()
        if self.call is not None:
            self.call.cancel()

    def check(self) -> None:
        """Raise if the unit was stopped between two steps."""
        if self.stop.is_set():
            raise HandedBack("gateway shutting down") if self.handback else TaskFailed("cancelled", "cancelled")


class Pipeline:
    """The steps of tasks of every kind; one instance per gateway."""

    def __init__(self, settings: GatewaySettings, clients: Clients, tasks: TaskStore, store: ObjectStore):
        self.settings = settings
        self.clients = clients
        self.tasks = tasks
        self.store = store
        # Progress of each unit of a task run in units (the clips of a multi-audio task).
        self.unit_progress: dict[str, dict[int, float]] = {}
        # The model service's last progress event per task, written by the next set() of its report.
        self._details: dict[str, dict] = {}
        # Called with the record after each write of a running task (webhooks' start and progress).
        # Hooks must return at once.
        self.update_hooks: list[Callable[[TaskRecord], None]] = []

    def set(self, task_id: str, progress: float | None = None, message: str | None = None,
            **fields: Any) -> TaskRecord:
        """Update a running task; a task that already ended (cancelled, say) is left alone."""
        detail = self._details.pop(task_id, None) if message is not None else None

        def mutate(rec: TaskRecord) -> bool | None:
            if rec.finished:
                return False
            self.check_owner(rec)
            if progress is not None:
                rec.progress = max(rec.progress, min(progress, 1.0))
            if message is not None:
                rec.message = message
                # A step without a detail of its own (muxing, say) must not show the render's frames.
                rec.progress_detail = detail or {}
            for name, value in fields.items():
                setattr(rec, name, value)
            if rec.status == TaskStatus.PROCESSING and rec.started_at is None:
                rec.started_at = utcnow()
            return None

        record = self.tasks.update(task_id, mutate)
        for hook in self.update_hooks:
            hook(record)
        if fields.get("status") == TaskStatus.COMPLETED and record.status == TaskStatus.COMPLETED:
            # Intermediate files go only once the task is final: a gateway that takes the task
            # over before then reuses the render they hold instead of rendering it again.
            self.store.delete_prefix(task_key(task_id, "work") + "/")
        return record

    def reporter(self, task_id: str) -> Report:
        """A `report(fraction, message)` that writes the task's progress."""
        return lambda fraction, message: self.set(task_id, fraction, message)

    def check_owner(self, rec: TaskRecord) -> None:
        """Stop a write from a gateway whose lease ran out and was taken over (a stalled one)."""
        if rec.owner != self.settings.gateway_id:
            raise HandedBack(f"task {rec.id} is held by {rec.owner or 'nobody'} now")

    def media(self, run: Run, rpc: Callable[[Req, float], Resp], request: Req) -> Resp:
        """One media-service call of a step; its failure is classified (faults.failure)."""
        run.check()
        try:
            return rpc(request, self.settings.rpc_timeout_seconds)
        except grpc.RpcError as err:
            raise failure(err, "media service", self.clients.media.serving) from err

    def normalise(self, run: Run, source_key: str, dest_key: str) -> float:
        """Decode the speech into 16 kHz mono WAV; its duration."""
        reply = self.media(run, self.clients.media.normalize_audio, media_pb2.NormalizeAudioRequest(
            source=ref(source_key), destination=ref(dest_key)))
        return reply.duration_seconds

    def mux(self, run: Run, video_key: str, audio_key: str, dest_key: str, sample_rate: int = 0) -> None:
        self.media(run, self.clients.media.mux, media_pb2.MuxRequest(
            video=ref(video_key), audio=ref(audio_key), destination=ref(dest_key), sample_rate=sample_rate))

    def render(self, run: Run, rpc: Callable[[Req, float], Stream[Event]], request: Req, lo: float, hi: float,
               report: Report) -> common_pb2.VideoResult:
        """Render a video on a model replica; a render an earlier attempt finished is reused."""
        done = self._finished_render(request.output.key)  # type: ignore[attr-defined]  # every render request has one
        if done is not None:
            log.info("task %s: reusing the render of an earlier attempt", run.record.id)
        else:
            done = self.stream(run, rpc, request, lo, hi, report, "Generating video...")
        if run.release_slot is not None:
            run.release_slot()
        return done

    def stream(self, run: Run, rpc: Callable[[Req, float], Stream[Event]], request: Req, lo: float, hi: float,
               report: Report, default_message: str) -> Any:
        """Call a model replica's streaming RPC, reporting its progress as it comes; its result."""
        last_write = 0.0
        run.check()
        # Confirm the task is still ours right before the expensive part: a step that stalled
        # past the lease (a store outage, say) may find another gateway already rendering it.
        try:
            self.tasks.renew(run.record.id, self.settings.gateway_id, self.settings.lease_seconds)
        except LeaseLost as exc:
            raise HandedBack(str(exc)) from exc
        try:
            call = rpc(request, self.settings.rpc_timeout_seconds)
            run.call = call
            if run.stop.is_set():
                call.cancel()
            for event in call:
                if event.HasField("result"):
                    return event.result  # type: ignore[attr-defined]  # each kind's result message
                now = time.monotonic()
                if now - last_write >= self.settings.progress_interval_seconds:
                    last_write = now
                    p = event.progress
                    self._details[run.record.id] = progress_detail(p)
                    report(lo + (hi - lo) * p.fraction, p.message or default_message)
        except grpc.RpcError as err:
            run.check()
            raise failure(err, f"{run.replica.kind} replica {run.replica.target}", run.replica.serving) from err
        finally:
            run.call = None
        raise Retryable(f"{run.replica.kind} replica {run.replica.target} ended the stream without a result")

    def _finished_render(self, key: str) -> common_pb2.VideoResult | None:
        try:
            meta = self.store.stat(key).metadata
        except NotFound:
            return None
        if "engine" not in meta:
            return None
        return common_pb2.VideoResult(
            video=ref(key), engine=meta["engine"], frames=int(meta["frames"]), fps=float(meta["fps"]),
            width=int(meta["width"]), height=int(meta["height"]), duration_seconds=float(meta["duration"]))

    def render_with_audio(self, run: Run, rpc: Callable[[Req, float], Stream[Event]],
                          make_request: Callable[[str, str], Req], audio_key: str, tag: str, out: str,
                          report: Report, sample_rate: int = 0) -> common_pb2.VideoResult:
        """Normalise the audio, render a silent clip (`make_request(wav, silent)`), mux the
        original audio into `out`."""
        tid = run.record.id
        wav = task_key(tid, "work", f"audio{tag}.wav")
        self.normalise(run, audio_key, wav)
        silent = task_key(tid, "work", f"video{tag}.mp4")
        report(NORMALISE, "Generating video...")
        return self.render_and_mux(run, rpc, make_request(wav, silent), audio_key, tag, silent, out, report,
                                   sample_rate)

    def render_and_mux(self, run: Run, rpc: Callable[[Req, float], Stream[Event]], request: Req, audio_key: str,
                       tag: str, silent: str, out: str, report: Report,
                       sample_rate: int = 0) -> common_pb2.VideoResult:
        """Render on a replica while the media service encodes the sound, then mux the two.

        The mux then copies both tracks; if encoding failed, it encodes the original itself.
        `sample_rate` 0 lets the media service pick the AAC rate from the sound.
        """
        encoded = task_key(run.record.id, "work", f"audio{tag}.m4a")
        run.check()
        encoding = self.clients.media.encode_audio(media_pb2.EncodeAudioRequest(
            source=ref(audio_key), destination=ref(encoded), sample_rate=sample_rate),
            self.settings.rpc_timeout_seconds)
        try:
            result = self.render(run, rpc, request, NORMALISE, RENDER_END, report)
        except BaseException:
            encoding.cancel()
            raise
        report(RENDER_END, "Adding audio...")
        try:
            encoding.result()
        except grpc.RpcError as err:
            log.warning("task %s: encoding the sound ahead failed (%s: %s); the mux encodes it",
                        run.record.id, err.code().name, err.details())
            encoded = audio_key
        self.mux(run, silent, encoded, out, sample_rate)
        return result

    def portrait(self, run: Run, rpc: Callable[[Req, float], Stream[Event]],
                 make_request: Callable[[str, str], Req]) -> None:
        """A task that turns a portrait and its speech into one video (`outputs/result.mp4`)."""
        tid = run.record.id
        self.set(tid, 0.01, "Preparing audio...", status=TaskStatus.PROCESSING)
        out = task_key(tid, "outputs", "result.mp4")
        result = self.render_with_audio(run, rpc, make_request, run.record.inputs["audio"], "", out,
                                        self.reporter(tid))
        self.complete(tid, {"video": out}, result)

    def complete(self, task_id: str, outputs: dict[str, str], result: common_pb2.VideoResult) -> None:
        record = self.set(task_id, 1.0, "Video generated successfully", status=TaskStatus.COMPLETED,
                          outputs=outputs, engine=result.engine,
                          result={"frames": result.frames, "fps": result.fps, "width": result.width,
                                  "height": result.height, "duration_seconds": result.duration_seconds})
        remember(self.store, record)
