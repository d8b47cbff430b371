"""gRPC servicer of the dicetalk model service: translates SynthesizeRequest into an engine job."""

from __future__ import annotations

from libs.grpcutil.errors import InvalidRequest
from libs.grpcutil.jobs import run_job
from libs.grpcutil.model_service import Staging, face_choice, given_params, portrait_work, video_result
from libs.talkface import api
from talkserve.dicetalk.v1 import dicetalk_pb2, dicetalk_pb2_grpc


def emotion_name(value: int) -> str:
    """`EMOTION_HAPPY` → `happy`; the unspecified value is refused."""
    if value == dicetalk_pb2.EMOTION_UNSPECIFIED:
        raise InvalidRequest("emotion is required")
    return dicetalk_pb2.Emotion.Name(value).removeprefix("EMOTION_").lower()


def portrait_job(req: dicetalk_pb2.SynthesizeRequest, image: str, audio: str, out: str) -> api.PortraitJob:
    """Map DICE-Talk parameters onto the engine; ref_scale and inference_steps go in `params`
    (talkface only records them)."""
    return api.PortraitJob(
        image_path=image,
        audio_path=audio,
        out_path=out,
        fps=req.fps or 24,
        min_resolution=req.min_resolution or 256,
        crop=req.crop,
        expand_ratio=req.expand_ratio or 0.5,
        seed=req.seed,
        **face_choice(req.face),
        emotion=emotion_name(req.emotion),
        emo_scale=req.emo_scale,
        dynamic_scale=req.dynamic_scale or 1.0,
        duration=req.duration if req.HasField("duration") else None,
        params=given_params(ref_scale=req.ref_scale, inference_steps=req.inference_steps),
    )


class DiceTalkServicer(dicetalk_pb2_grpc.DiceTalkServiceServicer):
    """Runs one synthesis per RPC on a free slot."""

    def __init__(self, slots, engines, staging: Staging):
        self._slots = slots
        self._engines = engines
        self._staging = staging

    def Synthesize(self, request, context):
        emotion_name(request.emotion)  # refused before a slot is taken (the proto's rules say so too)
        work = portrait_work(
            self._staging, self._engines, request.job_id, request.image, request.audio, request.output,
            lambda image, audio, out: portrait_job(request, image, audio, out),
        )
        yield from run_job(
            context, self._slots, work,
            wrap_progress=lambda p: dicetalk_pb2.SynthesizeResponse(progress=p),
            wrap_result=lambda r: dicetalk_pb2.SynthesizeResponse(result=video_result(r, request.output)),
        )
