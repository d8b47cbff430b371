"""talkface's render chosen by the engine settings: numba by default, torch when asked for (on
the CPU here) or when a GPU is present; a dicetalk replica set to talkface on torch serves a
DICE-Talk job end to end; the encoder is NVENC only where it really opens."""

from __future__ import annotations

import importlib.util

import pytest

from tests.engine_contract import torch_required  # noqa: F401 - skips or fails first, by policy
import torch  # noqa: E402

from libs.engines import loader  # noqa: E402
from libs.engines.protocol import CPU, EngineConfigError, EngineOptions  # noqa: E402
from libs.engines.talkface import placement  # noqa: E402
from libs.store.client import ObjectStore  # noqa: E402
from libs.talkface import encode, torch_render  # noqa: E402
from services.dicetalk.server import DiceTalkSettings, create_dicetalk_server  # noqa: E402
from tests.engine_contract.test_service import _capacity, dicetalk_job_through_the_gateway  # noqa: E402

GPU = torch.cuda.is_available()


def _options(device="auto", **extra) -> EngineOptions:
    return EngineOptions(device=device, extra=extra)


def test_numba_stays_the_default_on_a_cpu():
    assert placement(_options("cpu")) == (None, CPU)
    assert placement(_options("cpu", render="numba")) == (None, CPU)
    assert placement(_options("auto", render="numba")) == (None, CPU)
    if not GPU:
        assert placement(_options()) == (None, CPU), "auto without a GPU: numba on the CPU"


def test_torch_on_the_cpu_when_asked_for():
    assert placement(_options("cpu", render="torch")) == ("cpu", CPU)
    if not GPU:
        assert placement(_options("auto", render="torch")) == ("cpu", CPU)


def test_auto_takes_the_gpu_with_torch_when_there_is_one():
    device, info = placement(_options())
    if GPU:
        assert device.startswith("cuda") and info.gpu and info.name == torch.cuda.get_device_name()
    else:
        assert (device, info) == (None, CPU)


def test_auto_without_torch_installed_is_numba(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert placement(_options()) == (None, CPU)


def test_auto_without_a_gpu_driver_does_not_ask_torch(monkeypatch):
    """No NVIDIA driver to be seen: numba, and torch is not asked (importing it costs a replica
    1.4 s and 250 MB); where a driver shows, torch decides."""
    from libs.engines import device

    monkeypatch.setattr(device, "gpu_possible", lambda: False)
    monkeypatch.setattr(device, "torch_device", lambda requested: pytest.fail("torch was asked"))
    assert placement(_options()) == (None, CPU)


def test_a_gpu_torch_sees_leaves_its_driver_to_be_seen():
    from libs.engines.device import gpu_possible

    if GPU:
        assert gpu_possible(), "torch sees a GPU where no driver trace shows: auto would miss it"


def test_what_cannot_be_honoured_is_refused():
    with pytest.raises(EngineConfigError, match="numba render runs on the CPU"):
        placement(_options("cuda", render="numba"))
    with pytest.raises(EngineConfigError, match="render option must be one of"):
        placement(_options("cpu", render="opencl"))
    if not GPU:
        with pytest.raises(EngineConfigError, match="no CUDA GPU"):
            loader.load_engine("talkface", EngineOptions(device="cuda"), "portrait")


def test_the_encoder_is_nvenc_only_where_it_opens():
    assert encode.choose_codec(False) == (encode.X264, "the render runs on the CPU")
    codec, why = encode.choose_codec(True)
    if not GPU:
        # PyAV's wheel lists h264_nvenc whether or not a driver is there: it must not be trusted
        assert codec == encode.X264 and ("did not open" in why or "has no h264_nvenc" in why), why


def test_a_dicetalk_replica_on_talkface_torch_serves_a_job(bucket, inputs, monkeypatch):
    """TALKSERVE_DICETALK_ENGINE_DEVICE=cpu and _ENGINE_OPTIONS={"render": "torch"}: the frames
    come from the torch path, the replica says it runs on the CPU, and /api/health says no GPU."""
    chunks = []
    render = torch_render.TorchFrames.render

    def counted(self, first, pts, *rest):
        chunks.append(len(pts))
        return render(self, first, pts, *rest)

    monkeypatch.setattr(torch_render.TorchFrames, "render", counted)
    settings = DiceTalkSettings(port=0, slots=1, replica_id="talkface-torch-0", engine_device="cpu",
                                engine_batch_size=8, engine_options={"render": "torch"})
    rep = create_dicetalk_server(settings, ObjectStore(bucket))
    try:
        assert rep.ready.wait(120), "talkface on torch did not load"
        cap = _capacity(rep.port)
        assert (cap.engine, cap.device_kind, cap.gpu) == ("talkface-1", "cpu", False)
        health, job = dicetalk_job_through_the_gateway(rep, bucket, inputs)
        assert health["gpu_available"] is False
        assert job["engine"] == "talkface-1"
        assert chunks and max(chunks) == 8 and sum(chunks) > 20, chunks
    finally:
        rep.server.stop(0)


def test_an_nvenc_writer_that_does_not_open_gives_way_to_libx264(tmp_path):
    import av
    import numpy as np

    if GPU:
        pytest.skip("NVENC may open on this machine")
    with encode.VideoWriter(tmp_path / "v.mp4", 128, 128, 24, codec=encode.NVENC) as writer:
        assert writer.codec == encode.X264 and "h264_nvenc did not open" in writer.codec_note
        for _ in range(3):
            writer.write(np.zeros((128, 128, 3), np.uint8))
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].frames == 3
