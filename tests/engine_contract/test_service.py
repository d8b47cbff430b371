"""A dicetalk replica told by its settings to use the tiny torch engine: over its own gRPC API
and through the gateway's DICE-Talk API, on a real store, with the engine named in the result;
cancellation frees the slot; the capacity reply and /api/health tell the device truthfully."""

from __future__ import annotations

import io
import time

import av
import grpc
import pytest
import requests

from tests.engine_contract import torch_required  # noqa: F401 - skips or fails first, by policy

from libs.engines.protocol import DeviceInfo  # noqa: E402
from libs.engines.talkface import TalkfaceEngine  # noqa: E402
from libs.store.client import ObjectStore  # noqa: E402
from services.dicetalk.server import DiceTalkSettings, create_dicetalk_server  # noqa: E402
from services.media.server import MediaSettings, create_media_server  # noqa: E402
from talkserve.common.v1 import common_pb2  # noqa: E402
from talkserve.dicetalk.v1 import dicetalk_pb2  # noqa: E402
from talkserve.worker.v1 import worker_pb2  # noqa: E402
from tests import servers  # noqa: E402
from tests.engine_contract.tiny_torch import NAME  # noqa: E402


def _settings(engine, weights_dir, **kw) -> DiceTalkSettings:
    """What TALKSERVE_DICETALK_ENGINE* would say; a short pause per batch leaves time to cancel."""
    return DiceTalkSettings(port=0, slots=1, replica_id="tiny-0", engine=engine, engine_weights_dir=str(weights_dir),
                            engine_batch_size=4, engine_options={"seconds_per_batch": "0.05"}, **kw)


@pytest.fixture(scope="module")
def replica(bucket, tiny_engine_installed, weights_dir, inputs):
    store = ObjectStore(bucket)
    store.put_file("inputs/portrait.png", str(inputs["portrait"]))
    store.put_file("inputs/speech.wav", str(inputs["speech"]))
    rep = create_dicetalk_server(_settings(tiny_engine_installed, weights_dir, engine_device="cpu"), store)
    assert rep.ready.wait(60), "the tiny engine did not load"
    yield rep
    rep.server.stop(0)


@pytest.fixture
def stubs(replica):
    with servers.dicetalk_stubs(replica.port) as pair:
        yield pair


def _request(out: str) -> dicetalk_pb2.SynthesizeRequest:
    return dicetalk_pb2.SynthesizeRequest(
        job_id="tiny-job", image=common_pb2.ObjectRef(key="inputs/portrait.png"),
        audio=common_pb2.ObjectRef(key="inputs/speech.wav"), output=common_pb2.ObjectRef(key=out),
        emotion=dicetalk_pb2.EMOTION_HAPPY, fps=25, min_resolution=128)


def _capacity(port: int) -> worker_pb2.GetCapacityResponse:
    with servers.dicetalk_stubs(port) as (_, worker):
        return worker.GetCapacity(worker_pb2.GetCapacityRequest(), timeout=5)


def test_the_capacity_reply_names_the_engine_and_its_device(stubs):
    _, worker = stubs
    cap = worker.GetCapacity(worker_pb2.GetCapacityRequest())
    assert (cap.engine, cap.device_kind, cap.device_name, cap.gpu) == (NAME, "cpu", "cpu", False)


def test_a_dicetalk_job_over_rpc_names_the_tiny_engine(stubs, bucket):
    model, _ = stubs
    events = list(model.Synthesize(_request("outputs/tiny.mp4"), timeout=60))
    result = events[-1].result
    assert result.engine == NAME and result.width == result.height == 128 and result.frames > 20
    assert sum(e.progress.stage == common_pb2.JOB_STAGE_RENDERING for e in events[:-1]) >= result.frames // 4
    info = ObjectStore(bucket).stat("outputs/tiny.mp4")
    assert info.metadata["engine"] == NAME, "the stored result names its engine too"


def test_cancelling_the_rpc_stops_the_engine_and_frees_the_slot(stubs):
    model, worker = stubs
    call = model.Synthesize(_request("outputs/cancelled.mp4"), timeout=60)
    for event in call:
        if event.progress.stage == common_pb2.JOB_STAGE_RENDERING:
            break
    assert worker.GetCapacity(worker_pb2.GetCapacityRequest()).slots_free == 0
    call.cancel()
    deadline = time.monotonic() + 2
    while worker.GetCapacity(worker_pb2.GetCapacityRequest()).slots_free == 0:
        assert time.monotonic() < deadline, "the slot was not freed within 2 s"
        time.sleep(0.02)
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.CANCELLED


def dicetalk_job_through_the_gateway(replica, bucket, inputs, size: int = 128) -> tuple[dict, dict]:
    """A DICE-Talk job on `replica` through the gateway's REST API, waited for: the gateway's
    /api/health and the finished job (/v1/jobs); asserts the video downloads, with sound."""
    media = create_media_server(MediaSettings(port=0), ObjectStore(bucket))
    back = servers.Backend(bucket, f"127.0.0.1:{media.port}", {
        "dicetalk": [f"127.0.0.1:{replica.port}"], "echomimic": [], "latentsync": [], "voice": []}, [replica])
    try:
        with servers.gateway(back) as url:
            health = requests.get(f"{url}/api/health", timeout=10).json()
            with open(inputs["portrait"], "rb") as img, open(inputs["speech"], "rb") as aud:
                started = requests.post(f"{url}/api/v1/synthesis/start", files={"image": img, "audio": aud},
                                        data={"emotion": "happy", "min_resolution": str(size)}, timeout=60)
            assert started.status_code == 200, started.text
            task_id = started.json()["task_id"]
            deadline = time.monotonic() + 60
            while (status := requests.get(f"{url}/api/v1/synthesis/{task_id}/status", timeout=10).json())[
                    "status"] not in ("COMPLETED", "FAILED"):
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
            assert status["status"] == "COMPLETED", status
            job = requests.get(f"{url}/v1/jobs/{task_id}", timeout=10).json()
            video = requests.get(f"{url}/api/v1/synthesis/{task_id}/download", timeout=30)
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            with av.open(io.BytesIO(video.content)) as container:
                assert container.streams.audio, "the media service added the speech"
                assert (container.streams.video[0].width, container.streams.video[0].height) == (size, size)
            return health, job
    finally:
        media.stop(0)


def test_a_dicetalk_job_through_the_gateway(replica, bucket, inputs):
    """The DICE-Talk REST API end to end on the tiny engine: the job names it, the video has sound."""
    health, job = dicetalk_job_through_the_gateway(replica, bucket, inputs)
    assert health["model_loaded"] and health["gpu_available"] is False
    assert job["engine"] == NAME


def test_cuda_without_a_gpu_leaves_the_replica_unready(bucket, tiny_engine_installed, weights_dir):
    """A GPU engine configured where torch sees no GPU: no slots, no claim of a GPU."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the replica would load (see the device test)")
    rep = create_dicetalk_server(_settings(tiny_engine_installed, weights_dir, engine_device="cuda"),
                                 ObjectStore(bucket))
    try:
        assert not rep.ready.wait(1)
        cap = _capacity(rep.port)
        assert (cap.slots_free, cap.gpu, cap.device_kind) == (0, False, "")
        assert cap.engine == tiny_engine_installed, "before it loads, the configured name"
    finally:
        rep.server.stop(0)


class _OnGpu(TalkfaceEngine):
    """talkface that claims a GPU: stands in for a GPU engine on a GPU, which this machine lacks."""

    def __init__(self, options):
        super().__init__(options)
        self.device = DeviceInfo("cuda", "Test GPU")


def test_gpu_available_follows_the_engines_device(bucket, inputs):
    """/api/health: false with a CPU engine, true once a replica's engine sits on a GPU.

    The real GPU case cannot run here (no GPU): a talkface engine that reports a GPU stands in,
    to check what the replica and the gateway make of the engine's placement.
    """
    from libs.engines.protocol import EngineOptions

    store = ObjectStore(bucket)
    media = create_media_server(MediaSettings(port=0), store)
    cpu = create_dicetalk_server(DiceTalkSettings(port=0, slots=1), store)
    gpu = create_dicetalk_server(DiceTalkSettings(port=0, slots=1), store, lambda: _OnGpu(EngineOptions()))
    try:
        assert cpu.ready.wait(60) and gpu.ready.wait(60)
        assert (_capacity(gpu.port).gpu, _capacity(gpu.port).device_name) == (True, "Test GPU")
        for replicas, expected in (([cpu], False), ([cpu, gpu], True)):
            targets = {"dicetalk": [f"127.0.0.1:{r.port}" for r in replicas], "echomimic": [], "latentsync": [],
                       "voice": []}
            back = servers.Backend(bucket, f"127.0.0.1:{media.port}", targets, replicas)
            with servers.gateway(back) as url:
                assert requests.get(f"{url}/api/health", timeout=10).json()["gpu_available"] is expected
    finally:
        for server in (cpu.server, gpu.server, media):
            server.stop(0)
