"""Engines by entry point: the built-in talkface is declared, the tiny torch engine loads its
weights from a directory onto the chosen device, runs in batches, cancels, and what breaks the
contract is refused before a slot is offered."""

from __future__ import annotations

import pathlib
import tomllib
from importlib.metadata import entry_points

import av
import numpy as np
import pytest
from PIL import Image

from tests.engine_contract import torch_required  # noqa: F401 - skips or fails first, by policy
import torch  # noqa: E402

from libs.engines import loader  # noqa: E402
from libs.engines.protocol import (  # noqa: E402
    CPU,
    Cancelled,
    DeviceInfo,
    EngineConfigError,
    EngineOptions,
    PortraitJob,
)
from tests.engine_contract.conftest import GAIN, MIX  # noqa: E402
from tests.engine_contract.tiny_torch import NAME, TinyTorchEngine  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(engine, weights_dir, **options):
    return loader.load_engine(engine, EngineOptions(weights_dir=str(weights_dir), device="cpu", **options),
                              "portrait")


def _job(inputs, tmp_path, **kw):
    return PortraitJob(image_path=str(inputs["portrait"]), audio_path=str(inputs["speech"]),
                       out_path=str(tmp_path / "out.mp4"), min_resolution=128, fps=kw.pop("fps", 25), **kw)


def _frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)


def test_talkface_is_declared_as_an_entry_point_and_known_without_metadata():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["talkserve.engines"]
    assert declared == loader.BUILTIN, "the images rely on the built-in list matching pyproject.toml"
    installed = {ep.name: ep.value for ep in entry_points(group=loader.GROUP)}
    assert installed.get("talkface") == loader.BUILTIN["talkface"], "make install registers the entry point"
    assert loader.available()["talkface"].value == loader.BUILTIN["talkface"]


def test_talkface_runs_on_the_cpu_unless_a_gpu_is_there():
    engine = loader.load_engine("talkface", EngineOptions(), "person")
    assert engine.name == "talkface-1" and engine.jobs == {"portrait", "redub", "person"}
    assert engine.person_files[-1] == "model.json"
    if torch.cuda.is_available():
        assert engine.device.gpu, "device auto renders on the GPU with torch"
    else:
        assert engine.device == CPU and not engine.device.gpu
        with pytest.raises(EngineConfigError, match="no CUDA GPU"):
            loader.load_engine("talkface", EngineOptions(device="cuda"), "portrait")


def test_an_unknown_engine_names_the_installed_ones(tiny_engine_installed):
    with pytest.raises(EngineConfigError, match=r"no engine 'echomimic-v2'.*talkface.*tinytorch-test"):
        loader.load_engine("echomimic-v2", EngineOptions(), "portrait")


def test_weights_are_loaded_from_the_directory_onto_the_device(tiny_engine_installed, weights_dir):
    engine = _load(tiny_engine_installed, weights_dir, batch_size=4)
    assert isinstance(engine, TinyTorchEngine) and engine.name == NAME
    assert engine.device == CPU and engine.dtype == torch.float32
    assert {p.device.type for p in engine.net.parameters()} == {"cpu"}
    assert torch.equal(engine.net.mix.weight.view(3, 3), torch.as_tensor(MIX))
    assert engine.net.gain.item() == pytest.approx(GAIN)


def test_missing_weights_keep_the_engine_from_loading(tiny_engine_installed, tmp_path):
    with pytest.raises(EngineConfigError, match="no tiny.pt"):
        _load(tiny_engine_installed, tmp_path)


def test_device_auto_takes_a_gpu_only_when_one_is_present(tiny_engine_installed, weights_dir):
    engine = loader.load_engine(tiny_engine_installed, EngineOptions(weights_dir=str(weights_dir), fp16=True),
                                "portrait")
    if torch.cuda.is_available():
        assert engine.device.gpu and engine.device.name == torch.cuda.get_device_name()
        assert engine.dtype == torch.float16
    else:
        assert engine.device == CPU and engine.dtype == torch.float32, "fp16 is for GPUs"
        with pytest.raises(EngineConfigError, match="no CUDA GPU"):
            loader.load_engine(tiny_engine_installed, EngineOptions(weights_dir=str(weights_dir), device="cuda"),
                               "portrait")


def test_frames_run_in_batches_and_show_the_loaded_weights(tiny_engine_installed, weights_dir, inputs, tmp_path):
    engine = _load(tiny_engine_installed, weights_dir, batch_size=8)
    seen = []
    result = engine.generate(_job(inputs, tmp_path), seen.append)
    assert result.engine == NAME and result.width == result.height == 128
    n = result.frames
    assert n == pytest.approx(result.duration_s * 25) and n > 20
    assert engine.batches == [8] * (n // 8) + ([n % 8] if n % 8 else [])
    assert [p.done for p in seen] == [min(8 * (i + 1), n) for i in range(len(engine.batches))]
    frames = _frames(tmp_path / "out.mp4")
    assert len(frames) == n
    # Red and blue swapped: the output's red is the portrait's blue (beyond codec noise).
    portrait = np.asarray(Image.open(inputs["portrait"]).resize((128, 128)), np.float32)
    quiet = int(np.argmin(frames.mean(axis=(1, 2, 3))))
    err_swapped = np.abs(frames[quiet][..., 0] - portrait[..., 2]).mean()
    err_plain = np.abs(frames[quiet][..., 0] - portrait[..., 0]).mean()
    assert err_swapped < 12 < err_plain, (err_swapped, err_plain)
    # Loud frames are brighter: the gain the test wrote, times the speech's loudness.
    assert frames.mean(axis=(1, 2, 3)).max() - frames.mean(axis=(1, 2, 3)).min() > 0.5 * GAIN * 255 * 0.5


def test_a_cancelled_job_stops_between_batches(tiny_engine_installed, weights_dir, inputs, tmp_path):
    engine = _load(tiny_engine_installed, weights_dir, batch_size=4)
    with pytest.raises(Cancelled):
        engine.generate(_job(inputs, tmp_path), should_stop=lambda: len(engine.batches) >= 2)
    assert engine.batches == [4, 4], "no batch runs after the stop was seen"
    assert not (tmp_path / "out.mp4").exists(), "a cancelled job leaves no partial video"


class _Nameless:
    name = ""
    jobs = frozenset({"portrait"})
    device = CPU
    person_files = ()

    def generate(self, job, progress=None, should_stop=None): ...
    def redub(self, job, progress=None, should_stop=None): ...
    def train_person(self, job, progress=None, should_stop=None): ...
    def generate_person(self, job, progress=None, should_stop=None): ...


def test_what_breaks_the_contract_is_refused(tiny_engine_installed, weights_dir):
    with pytest.raises(EngineConfigError, match="does not run redub jobs"):
        loader.load_engine(tiny_engine_installed, EngineOptions(weights_dir=str(weights_dir)), "redub")
    with pytest.raises(EngineConfigError, match="has no name"):
        loader.check_engine(_Nameless(), "portrait")
    with pytest.raises(EngineConfigError, match="lacks .*device.*generate"):
        loader.check_engine(object(), "portrait")
    unplaced = _Nameless()
    unplaced.name, unplaced.device = "x-1", DeviceInfo("tpu", "?")
    with pytest.raises(EngineConfigError, match="does not say where it runs"):
        loader.check_engine(unplaced, "portrait")
