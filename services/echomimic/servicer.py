"""gRPC servicer of the echomimic model service: translates GenerateRequest into an engine job."""

from __future__ import annotations

from libs.grpcutil.jobs import run_job
from libs.grpcutil.model_service import Staging, face_choice, given_params, portrait_work, video_result
from libs.talkface import api
from talkserve.echomimic.v1 import echomimic_pb2, echomimic_pb2_grpc


def portrait_job(req: echomimic_pb2.GenerateRequest, image: str, audio: str, out: str) -> api.PortraitJob:
    """Map EchoMimic parameters onto the engine.

    EchoMimic renders a face crop: facecrop_dilation_ratio sets how far around the face the
    frame reaches, width/height the output size, length caps the frame count. The diffusion
    parameters (cfg, steps, context_*), facemask_dilation_ratio and sample_rate are validated
    by the gateway and go in `params`, where the built-in engine ignores them. `device` is not
    passed on: where an engine runs is the replica's setting (TALKSERVE_ECHOMIMIC_ENGINE_DEVICE).
    """
    return api.PortraitJob(
        image_path=image,
        audio_path=audio,
        out_path=out,
        fps=req.fps or 24,
        width=req.width or 512,
        height=req.height or 512,
        crop=True,
        expand_ratio=req.facecrop_dilation_ratio if req.facecrop_dilation_ratio > 0 else 0.5,
        seed=req.seed,
        **face_choice(req.face),
        max_frames=req.length or None,
        params=given_params(cfg=req.cfg, steps=req.steps, context_frames=req.context_frames,
                            context_overlap=req.context_overlap, facemask_dilation_ratio=req.facemask_dilation_ratio,
                            sample_rate=req.sample_rate),
    )


class EchoMimicServicer(echomimic_pb2_grpc.EchoMimicServiceServicer):
    """Runs one clip per RPC on a free slot."""

    def __init__(self, slots, engines, staging: Staging):
        self._slots = slots
        self._engines = engines
        self._staging = staging

    def Generate(self, request, context):
        work = portrait_work(
            self._staging, self._engines, request.job_id, request.reference_image, request.audio, request.output,
            lambda image, audio, out: portrait_job(request, image, audio, out),
        )
        yield from run_job(
            context, self._slots, work,
            wrap_progress=lambda p: echomimic_pb2.GenerateResponse(progress=p),
            wrap_result=lambda r: echomimic_pb2.GenerateResponse(result=video_result(r, request.output)),
        )
