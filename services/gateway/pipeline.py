"""Run one task end to end over gRPC: normalise audio, render on a model replica, mux, record.

Every step reads and writes objects under the task's prefix; the task record is updated
through conditional writes, so a record always shows the step the task is really in.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import grpc

from libs.grpcutil.errors import error_code_of
from libs.store.client import ObjectStore
from libs.tasks import TaskRecord, TaskStatus, TaskStore
from services.gateway.clients import Clients, Replica
from services.gateway.settings import GatewaySettings
from talkserve.common.v1 import common_pb2
from talkserve.dicetalk.v1 import dicetalk_pb2
from talkserve.echomimic.v1 import echomimic_pb2
from talkserve.latentsync.v1 import latentsync_pb2
from talkserve.media.v1 import media_pb2

log = logging.getLogger(__name__)

# gRPC codes after which running the same task again cannot help.
_PERMANENT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
              grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE}

# Share of the overall progress each step takes.
_NORMALISE, _RENDER_END = 0.05, 0.9


def task_key(task_id: str, *parts: str) -> str:
    return "/".join(("tasks", task_id, *parts))


def ref(key: str) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(key=key)


class TaskFailed(Exception):
    """The task cannot succeed; `code` and the message go into the record."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class Retryable(Exception):
    """The step failed for a reason outside the task (a replica died, a store hiccup)."""


@dataclass
class Run:
    """A task being run by this gateway, with the handle that cancels its current RPC."""

    record: TaskRecord
    replica: Replica
    stop: threading.Event
    call: object = None

    def cancel(self) -> None:
        self.stop.set()
        if self.call is not None:
            self.call.cancel()


class Pipeline:
    """Runs tasks of every kind; one instance per gateway."""

    def __init__(self, settings: GatewaySettings, clients: Clients, tasks: TaskStore, store: ObjectStore):
        self.settings = settings
        self.clients = clients
        self.tasks = tasks
        self.store = store

    # -- steps ---------------------------------------------------------------------------------

    def _set(self, task_id: str, progress: float | None = None, message: str | None = None, **fields) -> TaskRecord:
        def mutate(rec: TaskRecord) -> None:
            if progress is not None:
                rec.progress = max(rec.progress, min(progress, 1.0))
            if message is not None:
                rec.message = message
            for name, value in fields.items():
                setattr(rec, name, value)

        return self.tasks.update(task_id, mutate)

    def _media(self, method: str, request, run: Run):
        try:
            return getattr(self.clients.media, method)(request, timeout=self.settings.rpc_timeout_seconds)
        except grpc.RpcError as err:
            if err.code() in _PERMANENT:
                raise TaskFailed(err.details() or str(err.code()), error_code_of(err)) from err
            raise Retryable(f"media service: {err.code().name}: {err.details()}") from err

    def _normalise(self, run: Run, source_key: str, dest_key: str) -> float:
        reply = self._media("NormalizeAudio", media_pb2.NormalizeAudioRequest(
            source=ref(source_key), destination=ref(dest_key)), run)
        return reply.duration_seconds

    def _render(self, run: Run, method: str, request, lo: float, hi: float) -> common_pb2.VideoResult:
        """Call a model replica's streaming RPC, recording its progress into the task."""
        task_id = run.record.id
        last_write = 0.0
        try:
            call = getattr(run.replica.model, method)(request, timeout=self.settings.rpc_timeout_seconds)
            run.call = call
            if run.stop.is_set():
                call.cancel()
            for event in call:
                if event.HasField("result"):
                    return event.result
                now = time.monotonic()
                if now - last_write >= self.settings.progress_interval_seconds:
                    last_write = now
                    p = event.progress
                    self._set(task_id, lo + (hi - lo) * p.fraction, p.message or "Generating video...")
        except grpc.RpcError as err:
            if run.stop.is_set():
                raise TaskFailed("cancelled", "cancelled") from err
            if err.code() in _PERMANENT:
                raise TaskFailed(err.details() or str(err.code()), error_code_of(err)) from err
            raise Retryable(f"{run.replica.kind} replica {run.replica.target}: {err.code().name}: {err.details()}") from err
        finally:
            run.call = None
        raise Retryable(f"{run.replica.kind} replica {run.replica.target} ended the stream without a result")

    def _mux(self, run: Run, video_key: str, audio_key: str, dest_key: str) -> None:
        self._media("Mux", media_pb2.MuxRequest(video=ref(video_key), audio=ref(audio_key),
                                                destination=ref(dest_key)), run)

    # -- kinds ---------------------------------------------------------------------------------

    def run(self, run: Run) -> None:
        """Run the task to COMPLETED, or raise TaskFailed / Retryable."""
        kind = run.record.kind
        if kind == "dicetalk":
            self._run_dicetalk(run)
        elif kind == "echomimic":
            self._run_echomimic(run)
        elif kind == "latentsync":
            self._run_latentsync(run)
        else:
            raise TaskFailed(f"unknown task kind {kind!r}", "bad_kind")

    def _portrait(self, run: Run, method: str, make_request) -> None:
        rec = run.record
        tid = rec.id
        self._set(tid, 0.01, "Preparing audio...", status=TaskStatus.PROCESSING)
        wav = task_key(tid, "work", "audio.wav")
        self._normalise(run, rec.inputs["audio"], wav)
        silent = task_key(tid, "work", "video.mp4")
        self._set(tid, _NORMALISE, "Generating video...")
        result = self._render(run, method, make_request(wav, silent), _NORMALISE, _RENDER_END)
        self._set(tid, _RENDER_END, "Adding audio...")
        out = task_key(tid, "outputs", "result.mp4")
        self._mux(run, silent, rec.inputs["audio"], out)
        self.store.delete_prefix(task_key(tid, "work") + "/")
        self._complete(tid, {"video": out}, result)

    def _complete(self, task_id: str, outputs: dict[str, str], result: common_pb2.VideoResult) -> None:
        self._set(task_id, 1.0, "Video generated successfully", status=TaskStatus.COMPLETED,
                  outputs=outputs, engine=result.engine,
                  result={"frames": result.frames, "fps": result.fps, "width": result.width,
                          "height": result.height, "duration_seconds": result.duration_seconds})

    def _run_dicetalk(self, run: Run) -> None:
        p = run.record.params

        def make(wav: str, out: str):
            req = dicetalk_pb2.SynthesizeRequest(
                job_id=run.record.id, image=ref(run.record.inputs["image"]), audio=ref(wav), output=ref(out),
                emotion=dicetalk_pb2.Emotion.Value("EMOTION_" + p["emotion"].upper()),
                ref_scale=p["ref_scale"], emo_scale=p["emo_scale"], crop=p["crop"],
                inference_steps=p["inference_steps"], fps=p["fps"], seed=p["seed"],
                dynamic_scale=p["dynamic_scale"], min_resolution=p["min_resolution"],
                expand_ratio=p["expand_ratio"],
            )
            if p.get("duration") is not None:
                req.duration = p["duration"]
            return req

        self._portrait(run, "Synthesize", make)

    def _run_echomimic(self, run: Run) -> None:
        p = run.record.params

        def make(wav: str, out: str):
            return echomimic_pb2.GenerateRequest(
                job_id=run.record.id, reference_image=ref(run.record.inputs["image"]), audio=ref(wav),
                output=ref(out), **{k: p[k] for k in (
                    "width", "height", "length", "seed", "facemask_dilation_ratio", "facecrop_dilation_ratio",
                    "context_frames", "context_overlap", "cfg", "steps", "sample_rate", "fps", "device")},
            )

        self._portrait(run, "Generate", make)

    def _run_latentsync(self, run: Run) -> None:
        rec = run.record
        tid, p = rec.id, rec.params
        self._set(tid, 0.01, "Preparing audio...", status=TaskStatus.PROCESSING)
        wav = task_key(tid, "work", "audio.wav")
        self._normalise(run, rec.inputs["audio"], wav)
        silent, mask = task_key(tid, "work", "video.mp4"), task_key(tid, "outputs", "mask.mp4")
        self._set(tid, _NORMALISE, "Lip-syncing video...")
        result = self._render(run, "Sync", latentsync_pb2.SyncRequest(
            job_id=tid, video=ref(rec.inputs["video"]), audio=ref(wav), output=ref(silent),
            mask_output=ref(mask), inference_ckpt_path=p.get("inference_ckpt_path") or "",
            inference_steps=p.get("inference_steps", 20), guidance_scale=p.get("guidance_scale", 1.0),
            seed=p.get("seed", 0),
        ), _NORMALISE, _RENDER_END)
        self._set(tid, _RENDER_END, "Adding audio...")
        out = task_key(tid, "outputs", "result.mp4")
        self._mux(run, silent, rec.inputs["audio"], out)
        self.store.delete_prefix(task_key(tid, "work") + "/")
        self._complete(tid, {"video": out, "mask": mask}, result)
