"""gRPC servicer of the latentsync model service: translates SyncRequest into a re-dub job."""

from __future__ import annotations

import logging

from libs.grpcutil.errors import InvalidRequest
from libs.grpcutil.jobs import run_job
from libs.grpcutil.model_service import Staging, given_params, named, video_result
from libs.talkface import api
from talkserve.latentsync.v1 import latentsync_pb2, latentsync_pb2_grpc

log = logging.getLogger(__name__)


class LatentSyncServicer(latentsync_pb2_grpc.LatentSyncServiceServicer):
    """Runs one re-dub per RPC on a free slot."""

    def __init__(self, slots, engines, staging: Staging, checkpoints: frozenset[str]):
        self._slots = slots
        self._engines = engines
        self._staging = staging
        # A client names a checkpoint; it never makes the server open a path of its choosing.
        self._checkpoints = checkpoints

    def Sync(self, request, context):
        if request.inference_ckpt_path and request.inference_ckpt_path not in self._checkpoints:
            raise InvalidRequest(
                f"unknown checkpoint {request.inference_ckpt_path!r}; configured: {sorted(self._checkpoints)}")

        def work(progress, should_stop):
            with self._staging.job_dir(request.job_id) as tmp:
                video = self._staging.fetch(request.video, tmp / "input-video")
                audio = self._staging.fetch(request.audio, tmp / "audio.wav")
                job = api.RedubJob(
                    video_path=str(video), audio_path=str(audio), out_path=str(tmp / "video.mp4"),
                    mask_out_path=str(tmp / "mask.mp4"), seed=request.seed,
                    params=given_params(inference_ckpt_path=request.inference_ckpt_path,
                                        inference_steps=request.inference_steps,
                                        guidance_scale=request.guidance_scale),
                )
                with self._engines.engine() as engine:
                    result = named(engine.redub(job, progress, should_stop), engine)
                progress(api.Progress("upload", 0, 1, "Saving video and mask..."))
                # Mask first: the video's presence tells a retried task that both are done.
                self._staging.publish(tmp / "mask.mp4", request.mask_output)
                self._staging.publish(tmp / "video.mp4", request.output, result)
                log.info("job %s finished: %d frames", request.job_id, result.frames)
                return result

        yield from run_job(
            context, self._slots, work,
            wrap_progress=lambda p: latentsync_pb2.SyncResponse(progress=p),
            wrap_result=lambda r: latentsync_pb2.SyncResponse(
                result=video_result(r, request.output, request.mask_output)
            ),
        )
