"""EchoMimic's multi-audio tasks: one clip per audio file, optionally joined (`echomimic-multi-audio-api.md`).

A task runs as one unit per clip, so its clips spread over every replica with a free slot;
once all are rendered, `finish` joins them by stream copy when asked.
"""

from __future__ import annotations

from pydantic import Field

from libs.tasks import TaskRecord, TaskStatus
from services.gateway.keys import ref, task_key
from services.gateway.kinds.base import JobKind
from services.gateway.kinds.echomimic import EchoMimicParams, generate_request
from services.gateway.pipeline import Pipeline, Run
from services.gateway.rpc import EchoMimicClient
from services.gateway.validation import Int
from talkserve.media.v1 import media_pb2

# The AAC rate of clips that are joined into one video: the media service's finer rate, so no
# clip loses sound whatever rate it came at.
JOINED_AAC_RATE = 48000


class MultiParams(EchoMimicParams):
    """The form fields of POST /generate_multi_videos."""

    combine_videos: bool = Field(False, description="also join the clips into one video")


class MultiTask(MultiParams):
    """What a multi-audio task stores: its form fields and how many clips it makes."""

    segments: Int = Field(ge=1, description="number of audio files, one clip each")


def run_segment(pipeline: Pipeline, run: Run, p: MultiTask) -> None:
    """One clip of a multi-audio task; progress is the mean over all clips."""
    tid, seg = run.record.id, run.segment
    assert seg is not None  # a multi-audio task runs as segments only
    fractions = pipeline.unit_progress.setdefault(tid, {})

    def report(fraction: float, _message: str) -> None:  # the clips' messages give way to the count
        fractions[seg] = fraction
        overall = 0.95 * sum(fractions.values()) / p.segments
        done = sum(1 for f in fractions.values() if f >= 1.0)
        pipeline.set(tid, overall, f"Generating segment videos ({done}/{p.segments} done)...")

    pipeline.set(tid, None, None, status=TaskStatus.PROCESSING)
    out = task_key(tid, "outputs", f"segment_{seg}.mp4")
    image = run.record.inputs["image"]
    # Clips joined by stream copy must share one AAC rate, whatever rate each sound came at.
    rate = JOINED_AAC_RATE if p.combine_videos else 0
    result = pipeline.render_with_audio(
        run, run.client(EchoMimicClient).generate,
        lambda wav, silent: generate_request(p, f"{tid}-{seg}", image, wav, silent),
        run.record.inputs[f"audio_{seg}"], f"_{seg}", out, report, rate)
    report(1.0, "")

    def mutate(rec: TaskRecord) -> None:
        pipeline.check_owner(rec)
        rec.outputs[f"segment_{seg}"] = out
        rec.engine = result.engine

    pipeline.tasks.update(tid, mutate)


def finish(pipeline: Pipeline, run: Run, p: MultiTask) -> None:
    """All clips exist: join them by stream copy if asked, then complete the task."""
    rec, _ = pipeline.tasks.get(run.record.id)
    outputs = {f"segment_{i}": rec.outputs[f"segment_{i}"] for i in range(p.segments)}
    if p.combine_videos:
        pipeline.set(rec.id, 0.96, "Combining videos...")
        combined = task_key(rec.id, "outputs", "combined.mp4")
        pipeline.media(run, pipeline.clients.media.concat, media_pb2.ConcatRequest(
            sources=[ref(outputs[f"segment_{i}"]) for i in range(p.segments)], destination=ref(combined)))
        outputs["combined"] = combined
    pipeline.unit_progress.pop(rec.id, None)
    pipeline.set(rec.id, 1.0, "All videos generated", status=TaskStatus.COMPLETED, outputs=outputs)


KIND = JobKind(name="echomimic_multi", service="echomimic", params=MultiTask, run=run_segment,
               segments=lambda p: p.segments, finish=finish)
