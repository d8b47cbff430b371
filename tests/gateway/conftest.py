"""Fixtures for gateway tests: real services on port 0, a real store, real inputs."""

import pathlib

import pytest
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from tests import servers


@pytest.fixture(scope="session")
def portrait(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("inputs") / "portrait.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("inputs") / "speech.wav"
    write_wav(synthesize("Hello there. Bob made a map of the moon.", voice="en"), path)
    return path


@pytest.fixture(scope="module")
def stack(seaweed):
    """(gateway base URL, backend) shared by a module's tests."""
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket) as back:
        with servers.gateway(back) as url:
            yield url, back
