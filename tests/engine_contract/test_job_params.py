"""The API parameters the built-in engine only records reach every engine in the job's `params`,
so an adapter for an upstream model can honour them (docs/engines.md)."""

import pytest

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


def test_the_named_face_travels_to_the_engine():
    from talkserve.common.v1 import common_pb2

    req = dicetalk_pb2.SynthesizeRequest(emotion=dicetalk_pb2.EMOTION_SAD, face=common_pb2.FaceChoice(index=2))
    assert dicetalk_job(req, "image", "audio", "out").face_index == 2
    box = common_pb2.FaceChoice(box=common_pb2.FaceBox(x0=10, y0=20, x1=110, y1=220))
    job = echomimic_job(echomimic_pb2.GenerateRequest(face=box), "image", "audio", "out")
    assert (job.face_index, job.face_box) == (None, (10, 20, 110, 220))
    unnamed = echomimic_job(echomimic_pb2.GenerateRequest(), "image", "audio", "out")
    assert (unnamed.face_index, unnamed.face_box) == (None, None)


def test_the_proto_rules_refuse_a_face_box_inside_out():
    import protovalidate

    from talkserve.common.v1 import common_pb2

    ok = common_pb2.FaceBox(x0=10, y0=20, x1=110, y1=220)
    protovalidate.validate(ok)
    for bad in (common_pb2.FaceBox(x0=110, y0=20, x1=10, y1=220), common_pb2.FaceChoice(index=300)):
        with pytest.raises(protovalidate.ValidationError):
            protovalidate.validate(bad)
