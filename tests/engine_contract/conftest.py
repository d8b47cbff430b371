"""Fixtures of the engine-contract tests: the tiny torch engine registered as an installed
distribution, its weights written to a directory, a portrait and speech."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from tests import servers

ENGINE = "tinytorch-test"
# Swaps red and blue: every output pixel shows that these weights, not defaults, were loaded.
MIX = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32)
GAIN = 0.3


@pytest.fixture(scope="session")
def tiny_engine_installed(tmp_path_factory) -> str:
    """Register tests.engine_contract.tiny_torch as entry point `tinytorch-test` of talkserve.engines.

    A folder on sys.path holding a .dist-info with entry_points.txt is what importlib.metadata
    reads for an installed package, so this is the real lookup without a pip install.
    """
    site = tmp_path_factory.mktemp("site")
    info = site / "talkserve_tinytorch_test-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: talkserve-tinytorch-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[talkserve.engines]\n{ENGINE} = tests.engine_contract.tiny_torch:create\n")
    sys.path.append(str(site))
    try:
        yield ENGINE
    finally:
        sys.path.remove(str(site))


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> pathlib.Path:
    """A directory with the tiny engine's checkpoint, written by the test."""
    from tests.engine_contract.tiny_torch import write_weights

    folder = tmp_path_factory.mktemp("weights")
    write_weights(folder, MIX, GAIN)
    return folder


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A 256 px portrait and about two seconds of speech (16-bit PCM WAV)."""
    folder = tmp_path_factory.mktemp("engine-inputs")
    Image.fromarray(data.astronaut()).resize((256, 256)).save(folder / "portrait.png")
    write_wav(synthesize("Bob made a map of the moon.", voice="en"), folder / "speech.wav")
    return {"portrait": folder / "portrait.png", "speech": folder / "speech.wav"}


@pytest.fixture(scope="module")
def bucket(seaweed):
    """A bucket of the test store of its own, for one module."""
    with servers.fresh_bucket(seaweed.settings) as settings:
        yield settings
