"""The API parameters the built-in engine only records reach every engine in the job's `params`,
so an adapter for an upstream model can honour them (docs/engines.md)."""

from services.dicetalk.servicer import portrait_job as dicetalk_job
from services.echomimic.servicer import portrait_job as echomimic_job
from talkserve.dicetalk.v1 import dicetalk_pb2
from talkserve.echomimic.v1 import echomimic_pb2


def test_dicetalk_diffusion_settings_travel_in_params():
    req = dicetalk_pb2.SynthesizeRequest(emotion=dicetalk_pb2.EMOTION_SAD, ref_scale=3.0, inference_steps=25)
    job = dicetalk_job(req, "image", "audio", "out")
    assert job.params == {"ref_scale": 3.0, "inference_steps": 25}
    assert job.emotion == "sad"


def test_echomimic_settings_travel_in_params_but_not_the_device():
    req = echomimic_pb2.GenerateRequest(cfg=2.5, steps=30, context_frames=12, context_overlap=3,
                                        sample_rate=16000, device="cuda")
    job = echomimic_job(req, "image", "audio", "out")
    # Not given (proto3 zero) is left out; where an engine runs is the replica's setting, not the client's.
    assert job.params == {"cfg": 2.5, "steps": 30, "context_frames": 12, "context_overlap": 3, "sample_rate": 16000}
