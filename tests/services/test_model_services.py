"""Model services over real gRPC sockets: health, progress streaming, errors, slots and cancellation."""

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from skimage import data

from libs.grpcutil.errors import error_code_of
from libs.speech.espeak import synthesize, write_wav
from libs.store.client import ObjectStore
from libs.engines.protocol import EngineOptions
from libs.engines.talkface import TalkfaceEngine
from services.dicetalk.server import DiceTalkSettings, create_dicetalk_server
from talkserve.common.v1 import common_pb2
from talkserve.dicetalk.v1 import dicetalk_pb2
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc
from tests.servers import dicetalk_stubs, fresh_bucket


@pytest.fixture(scope="module")
def store(seaweed, tmp_path_factory):
    with fresh_bucket(seaweed.settings) as settings:
        yield _with_inputs(ObjectStore(settings), tmp_path_factory)


def _with_inputs(store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(data.astronaut()).save(folder / "face.png")
    Image.fromarray(data.coffee()).save(folder / "coffee.png")
    write_wav(synthesize("We made a map of the bay and the moon.", voice="en"), folder / "speech.wav")
    for name in ("face.png", "coffee.png", "speech.wav"):
        store.put_file(f"inputs/{name}", str(folder / name))
    return store


def _request(image="inputs/face.png", **kw):
    return dicetalk_pb2.SynthesizeRequest(
        job_id="job-1", image=common_pb2.ObjectRef(key=image), audio=common_pb2.ObjectRef(key="inputs/speech.wav"),
        output=common_pb2.ObjectRef(key=kw.pop("out", "outputs/video.mp4")), emotion=dicetalk_pb2.EMOTION_HAPPY,
        emo_scale=6.0, fps=kw.pop("fps", 24), min_resolution=kw.pop("min_resolution", 256), dynamic_scale=1.0,
        expand_ratio=0.5, seed=3, **kw,
    )


@pytest.fixture(scope="module")
def replica(store):
    rep = create_dicetalk_server(DiceTalkSettings(port=0, slots=1), store)
    assert rep.ready.wait(120)
    yield rep
    rep.server.stop(0)


@pytest.fixture
def stub(replica):
    with dicetalk_stubs(replica.port) as stubs:
        yield stubs


def test_health_goes_from_not_serving_to_serving_when_the_engine_is_loaded(store):
    release = threading.Event()

    def slow_engine():
        release.wait(30)
        return TalkfaceEngine(EngineOptions())

    rep = create_dicetalk_server(DiceTalkSettings(port=0, slots=1), store, slow_engine)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{rep.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5).status  # noqa: E731
            assert check() == health_pb2.HealthCheckResponse.NOT_SERVING
            cap = worker_pb2_grpc.WorkerServiceStub(channel).GetCapacity(worker_pb2.GetCapacityRequest())
            assert cap.slots_free == 0, "a replica without an engine must not offer slots"
            release.set()
            assert rep.ready.wait(60)
            assert check() == health_pb2.HealthCheckResponse.SERVING
            full = health.Check(health_pb2.HealthCheckRequest(service="talkserve.dicetalk.v1.DiceTalkService"))
            assert full.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        rep.server.stop(0)


def test_stream_delivers_progress_before_the_result(stub, store):
    model, _ = stub
    events = list(model.Synthesize(_request(), timeout=120))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    progress = [e.progress for e in events[:-1]]
    assert len(progress) >= 3
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] > 0.5
    assert any(p.stage == common_pb2.JOB_STAGE_RENDERING and p.total > 0 for p in progress)
    result = events[-1].result
    assert result.engine == "talkface-1"
    assert result.frames > 24 and min(result.width, result.height) == 256
    assert store.stat("outputs/video.mp4").size > 10_000


def test_a_faceless_portrait_is_invalid_argument_with_a_clear_code(stub):
    model, _ = stub
    with pytest.raises(grpc.RpcError) as err:
        list(model.Synthesize(_request(image="inputs/coffee.png"), timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code_of(err.value) == "no_face"
    assert "face" in err.value.details()


def test_unspecified_emotion_is_refused(stub):
    model, _ = stub
    req = _request()
    req.emotion = dicetalk_pb2.EMOTION_UNSPECIFIED
    with pytest.raises(grpc.RpcError) as err:
        list(model.Synthesize(req, timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cancel_stops_the_job_and_frees_the_slot(stub):
    model, worker = stub
    call = model.Synthesize(_request(out="outputs/cancelled.mp4", min_resolution=512, fps=60), timeout=120)
    for event in call:
        if event.progress.stage == common_pb2.JOB_STAGE_RENDERING:
            break
    busy = worker.GetCapacity(worker_pb2.GetCapacityRequest())
    assert busy.slots_free == 0
    with pytest.raises(grpc.RpcError) as refused:
        list(model.Synthesize(_request(out="outputs/other.mp4"), timeout=30))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    cancelled_at = time.monotonic()
    call.cancel()
    while worker.GetCapacity(worker_pb2.GetCapacityRequest()).slots_free == 0:
        assert time.monotonic() - cancelled_at < 2.0, "the slot was not freed within 2 s"
        time.sleep(0.02)
