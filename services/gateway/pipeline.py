"""Run one task end to end over gRPC: normalise audio, render on a model replica, mux, record.

Every step reads and writes objects under the task's prefix; the task record is updated
through conditional writes, so a record always shows the step the task is really in.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc

from libs.grpcutil.errors import error_code_of
from libs.store.client import NotFound, ObjectStore
from libs.tasks import LeaseLost, TaskRecord, TaskStatus, TaskStore, utcnow
from services.gateway.cache import remember
from services.gateway.clients import Clients, Replica
from services.gateway.faults import Fault, classify
from services.gateway.keys import ref, task_key
from services.gateway.settings import GatewaySettings
from talkserve.common.v1 import common_pb2
from talkserve.dicetalk.v1 import dicetalk_pb2
from talkserve.echomimic.v1 import echomimic_pb2
from talkserve.latentsync.v1 import latentsync_pb2
from talkserve.media.v1 import media_pb2

log = logging.getLogger(__name__)

ECHOMIMIC_FIELDS = ("width", "height", "length", "seed", "facemask_dilation_ratio", "facecrop_dilation_ratio",
                    "context_frames", "context_overlap", "cfg", "steps", "sample_rate", "fps", "device")

# Share of the overall progress each step takes.
_NORMALISE, _RENDER_END = 0.05, 0.9

# The AAC rate of clips that are joined into one video: the media service's finer rate, so no
# clip loses sound whatever rate it came at.
JOINED_AAC_RATE = 48000


# Which model service runs each kind of task; modules that add task kinds register here too.
MODEL_KIND = {"dicetalk": "dicetalk", "echomimic": "echomimic", "echomimic_multi": "echomimic",
              "latentsync": "latentsync"}

# Task kind -> function(pipeline, run) running one unit of it; filled below and by extensions.
RUNNERS: dict[str, Callable[["Pipeline", "Run"], None]] = {}


def register_kind(kind: str, model_kind: str, runner: Callable[["Pipeline", "Run"], None]) -> None:
    """Teach the gateway a new kind of task, run on replicas of `model_kind`."""
    MODEL_KIND[kind] = model_kind
    RUNNERS[kind] = runner


def progress_detail(p: common_pb2.Progress) -> dict:
    """A progress event as the native API shows it: stage, frame i of N, seconds left."""
    stage = common_pb2.JobStage.Name(p.stage).removeprefix("JOB_STAGE_").lower()
    return {"stage": stage, "done": p.done, "total": p.total,
            "eta_seconds": round(p.eta_seconds, 1) if p.eta_seconds >= 0 else None}


class TaskFailed(Exception):
    """The task cannot succeed; `code` and the message go into the record."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class Retryable(Exception):
    """The step failed for a reason outside the task (a replica died, a store hiccup)."""

    def __init__(self, message: str, counts: bool = True):
        super().__init__(message)
        # False when the task never started (no free slot after all): not an attempt.
        self.counts = counts


class Outage(Retryable):
    """A service or the store was unreachable: the unit runs again once it is back, and the
    job keeps its attempts (the dispatcher waits with backoff, for `outage_retry_seconds`)."""

    def __init__(self, message: str):
        super().__init__(message, counts=False)


def failure(exc: BaseException, where: str, peer_alive: Callable[[], bool] | None = None) -> Exception:
    """The exception a step raises for a failed gRPC call or store operation (see faults.classify)."""
    fault = classify(exc, peer_alive)
    if isinstance(exc, grpc.RpcError):
        if fault is Fault.PERMANENT:
            return TaskFailed(exc.details() or exc.code().name, error_code_of(exc))
        detail = f"{where}: {exc.code().name}: {exc.details()}"
    else:
        detail = f"{where}: {type(exc).__name__}: {exc}"
    if fault is Fault.OUTAGE:
        return Outage(detail)
    return Retryable(detail, counts=fault is not Fault.BUSY)


class HandedBack(Exception):
    """The unit stops here and another gateway runs it: this one is shutting down, or lost
    the task's lease to another gateway."""


@dataclass
class Run:
    """A task being run by this gateway, with the handle that cancels its current RPC."""

    record: TaskRecord
    replica: Replica
    stop: threading.Event
    segment: int | None = None
    call: object = None
    handback: bool = False
    # Set by the dispatcher: gives the replica's slot back once the render is over, so the next
    # unit renders there while this one is still being muxed and stored.
    release_slot: Callable[[], None] | None = None

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
    """Runs tasks of every kind; one instance per gateway."""

    def __init__(self, settings: GatewaySettings, clients: Clients, tasks: TaskStore, store: ObjectStore):
        self.settings = settings
        self.clients = clients
        self.tasks = tasks
        self.store = store
        self._segment_progress: dict[str, dict[int, float]] = {}
        # The model service's last progress event per task, written by the next set() of its report.
        self._details: dict[str, dict] = {}

    # -- steps ---------------------------------------------------------------------------------

    def set(self, task_id: str, progress: float | None = None, message: str | None = None, **fields) -> TaskRecord:
        """Update a running task; a task that already ended (cancelled, say) is left alone."""
        detail = self._details.pop(task_id, None) if message is not None else None

        def mutate(rec: TaskRecord) -> bool | None:
            if rec.finished:
                return False
            self._check_owner(rec)
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

        record = self.tasks.update(task_id, mutate)
        if fields.get("status") == TaskStatus.COMPLETED and record.status == TaskStatus.COMPLETED:
            # Intermediate files go only once the task is final: a gateway that takes the task
            # over before then reuses the render they hold instead of rendering it again.
            self.store.delete_prefix(task_key(task_id, "work") + "/")
        return record

    def _check_owner(self, rec: TaskRecord) -> None:
        """Stop a write from a gateway whose lease ran out and was taken over (a stalled one)."""
        if rec.owner != self.settings.gateway_id:
            raise HandedBack(f"task {rec.id} is held by {rec.owner or 'nobody'} now")

    def media(self, method: str, request, run: Run):
        run.check()
        try:
            return getattr(self.clients.media, method)(request, timeout=self.settings.rpc_timeout_seconds)
        except grpc.RpcError as err:
            raise failure(err, "media service", self.clients.media_serving) from err

    def _normalise(self, run: Run, source_key: str, dest_key: str) -> float:
        reply = self.media("NormalizeAudio", media_pb2.NormalizeAudioRequest(
            source=ref(source_key), destination=ref(dest_key)), run)
        return reply.duration_seconds

    def render(self, run: Run, method: str, request, lo: float, hi: float, report) -> common_pb2.VideoResult:
        """Render a video on a model replica; a render an earlier attempt finished is reused."""
        done = self._finished_render(request.output.key)
        if done is not None:
            log.info("task %s: reusing the render of an earlier attempt", run.record.id)
        else:
            done = self.stream(run, method, request, lo, hi, report, "Generating video...")
        if run.release_slot is not None:
            run.release_slot()
        return done

    def stream(self, run: Run, method: str, request, lo: float, hi: float, report, default_message: str):
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

    def _mux(self, run: Run, video_key: str, audio_key: str, dest_key: str, sample_rate: int = 0) -> None:
        self.media("Mux", media_pb2.MuxRequest(video=ref(video_key), audio=ref(audio_key),
                                                destination=ref(dest_key), sample_rate=sample_rate), run)

    # -- kinds ---------------------------------------------------------------------------------

    @staticmethod
    def pending_segments(record: TaskRecord) -> list[int | None]:
        """The units of a task still to run: its segments without output, or the task itself."""
        if record.kind != "echomimic_multi":
            return [None]
        return [i for i in range(record.params["segments"]) if f"segment_{i}" not in record.outputs]

    def run(self, run: Run) -> None:
        """Run one unit to its end, or raise TaskFailed / Retryable."""
        runner = RUNNERS.get(run.record.kind)
        if runner is None:
            raise TaskFailed(f"unknown task kind {run.record.kind!r}", "bad_kind")
        runner(self, run)

    def _portrait(self, run: Run, method: str, make_request) -> None:
        tid = run.record.id
        self.set(tid, 0.01, "Preparing audio...", status=TaskStatus.PROCESSING)
        out = task_key(tid, "outputs", "result.mp4")
        result = self._render_with_audio(run, method, make_request, run.record.inputs["audio"], "", out,
                                         lambda f, m: self.set(tid, f, m))
        self.complete(tid, {"video": out}, result)

    def _render_with_audio(self, run: Run, method: str, make_request, audio_key: str, tag: str, out: str,
                           report, sample_rate: int = 0) -> common_pb2.VideoResult:
        """Normalise the audio, render a silent clip, mux the original audio into `out`."""
        tid = run.record.id
        wav = task_key(tid, "work", f"audio{tag}.wav")
        self._normalise(run, audio_key, wav)
        silent = task_key(tid, "work", f"video{tag}.mp4")
        report(_NORMALISE, "Generating video...")
        return self._render_and_mux(run, method, make_request(wav, silent), audio_key, tag, silent, out, report,
                                    sample_rate)

    def _render_and_mux(self, run: Run, method: str, request, audio_key: str, tag: str, silent: str, out: str,
                        report, sample_rate: int = 0) -> common_pb2.VideoResult:
        """Render on a replica while the media service encodes the sound, then mux the two.

        The mux then copies both tracks; if encoding failed, it encodes the original itself.
        `sample_rate` 0 lets the media service pick the AAC rate from the sound.
        """
        encoded = task_key(run.record.id, "work", f"audio{tag}.m4a")
        run.check()
        encoding = self.clients.media.EncodeAudio.future(
            media_pb2.EncodeAudioRequest(source=ref(audio_key), destination=ref(encoded), sample_rate=sample_rate),
            timeout=self.settings.rpc_timeout_seconds)
        try:
            result = self.render(run, method, request, _NORMALISE, _RENDER_END, report)
        except BaseException:
            encoding.cancel()
            raise
        report(_RENDER_END, "Adding audio...")
        try:
            encoding.result()
        except grpc.RpcError as err:
            log.warning("task %s: encoding the sound ahead failed (%s: %s); the mux encodes it",
                        run.record.id, err.code().name, err.details())
            encoded = audio_key
        self._mux(run, silent, encoded, out, sample_rate)
        return result

    def complete(self, task_id: str, outputs: dict[str, str], result: common_pb2.VideoResult) -> None:
        record = self.set(task_id, 1.0, "Video generated successfully", status=TaskStatus.COMPLETED,
                           outputs=outputs, engine=result.engine,
                           result={"frames": result.frames, "fps": result.fps, "width": result.width,
                                   "height": result.height, "duration_seconds": result.duration_seconds})
        remember(self.store, record)

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

    @staticmethod
    def _echomimic_request(run: Run, job_id: str):
        p = run.record.params

        def make(wav: str, out: str):
            return echomimic_pb2.GenerateRequest(
                job_id=job_id, reference_image=ref(run.record.inputs["image"]), audio=ref(wav),
                output=ref(out), **{k: p[k] for k in ECHOMIMIC_FIELDS},
            )

        return make

    def _run_echomimic(self, run: Run) -> None:
        self._portrait(run, "Generate", self._echomimic_request(run, run.record.id))

    def _run_segment(self, run: Run) -> None:
        """One clip of a multi-audio task; progress is the mean over all segments."""
        tid, seg = run.record.id, run.segment
        n = run.record.params["segments"]
        fractions = self._segment_progress.setdefault(tid, {})

        def report(fraction: float, message: str) -> None:
            fractions[seg] = fraction
            overall = 0.95 * sum(fractions.values()) / n
            done = sum(1 for f in fractions.values() if f >= 1.0)
            self.set(tid, overall, f"Generating segment videos ({done}/{n} done)...")

        self.set(tid, None, None, status=TaskStatus.PROCESSING)
        out = task_key(tid, "outputs", f"segment_{seg}.mp4")
        # Clips joined by stream copy must share one AAC rate, whatever rate each sound came at.
        rate = JOINED_AAC_RATE if run.record.params.get("combine_videos") else 0
        result = self._render_with_audio(run, "Generate", self._echomimic_request(run, f"{tid}-{seg}"),
                                         run.record.inputs[f"audio_{seg}"], f"_{seg}", out, report, rate)
        report(1.0, "")

        def mutate(rec: TaskRecord) -> None:
            self._check_owner(rec)
            rec.outputs[f"segment_{seg}"] = out
            rec.engine = result.engine

        self.tasks.update(tid, mutate)

    def finish_segments(self, run: Run) -> None:
        """All clips exist: join them by stream copy if asked, then complete the task."""
        rec, _ = self.tasks.get(run.record.id)
        n = rec.params["segments"]
        outputs = {f"segment_{i}": rec.outputs[f"segment_{i}"] for i in range(n)}
        if rec.params.get("combine_videos"):
            self.set(rec.id, 0.96, "Combining videos...")
            combined = task_key(rec.id, "outputs", "combined.mp4")
            self.media("Concat", media_pb2.ConcatRequest(
                sources=[ref(outputs[f"segment_{i}"]) for i in range(n)], destination=ref(combined)), run)
            outputs["combined"] = combined
        self._segment_progress.pop(rec.id, None)
        self.set(rec.id, 1.0, "All videos generated", status=TaskStatus.COMPLETED, outputs=outputs)

    def _fetch_inputs(self, run: Run) -> dict[str, str]:
        """Download the task's URL inputs into the store (once; a retry reuses them)."""
        rec = run.record
        inputs = dict(rec.inputs)
        for name, kind in (("video", media_pb2.MEDIA_KIND_VIDEO), ("audio", media_pb2.MEDIA_KIND_AUDIO)):
            if name in inputs:
                continue
            key = task_key(rec.id, "inputs", name)
            self.set(rec.id, 0.01, f"Downloading {name}...", status=TaskStatus.PROCESSING)
            self.media("FetchUrl", media_pb2.FetchUrlRequest(
                url=rec.params[f"{name}_url"], destination=ref(key), expect=kind), run)
            inputs[name] = key
            self.set(rec.id, None, None, inputs=dict(inputs))
        return inputs

    def _run_latentsync(self, run: Run) -> None:
        rec = run.record
        tid, p = rec.id, rec.params
        rec.inputs = self._fetch_inputs(run)
        self.set(tid, 0.02, "Preparing audio...", status=TaskStatus.PROCESSING)
        wav = task_key(tid, "work", "audio.wav")
        self._normalise(run, rec.inputs["audio"], wav)
        silent, mask = task_key(tid, "work", "video.mp4"), task_key(tid, "outputs", "mask.mp4")
        self.set(tid, _NORMALISE, "Lip-syncing video...")
        out = task_key(tid, "outputs", "result.mp4")
        result = self._render_and_mux(run, "Sync", latentsync_pb2.SyncRequest(
            job_id=tid, video=ref(rec.inputs["video"]), audio=ref(wav), output=ref(silent),
            mask_output=ref(mask), inference_ckpt_path=p.get("inference_ckpt_path") or "",
            inference_steps=p.get("inference_steps", 20), guidance_scale=p.get("guidance_scale", 1.0),
            seed=p.get("seed", 0),
        ), rec.inputs["audio"], "", silent, out, lambda f, m: self.set(tid, f, m))
        self.complete(tid, {"video": out, "mask": mask}, result)


RUNNERS.update({
    "dicetalk": Pipeline._run_dicetalk,
    "echomimic": Pipeline._run_echomimic,
    "echomimic_multi": Pipeline._run_segment,
    "latentsync": Pipeline._run_latentsync,
})
