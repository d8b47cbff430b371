"""Locate the model files (the engine's `.tflite` from the pinned MediaPipe wheel, and the folder of the others)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .api import TalkfaceError

ENV_VAR = "TALKSERVE_MODELS_DIR"

FACE_DETECTOR_SHORT = "face_detection_short_range.tflite"
FACE_DETECTOR_FULL = "face_detection_full_range_sparse.tflite"
FACE_LANDMARKS = "face_landmark.tflite"
REQUIRED = (FACE_DETECTOR_SHORT, FACE_DETECTOR_FULL, FACE_LANDMARKS)

_REPO_ROOT = Path(__file__).resolve().parents[2]


class ModelsMissingError(TalkfaceError):
    """The model files are not installed; this is a deployment fault, not a bad request."""

    code = "models_missing"


def models_root(override: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Where `scripts.fetch_models` puts the models: `override`, else $TALKSERVE_MODELS_DIR, else <repo>/models."""
    if override is not None:
        return Path(override)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return _REPO_ROOT / "models"


def models_dir(override: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The directory holding the face models (models_root), checked to hold them.

    Raises ModelsMissingError naming the missing files and the command that installs them.
    """
    base = models_root(override)
    missing = [name for name in REQUIRED if not (base / name).is_file()]
    if missing:
        raise ModelsMissingError(
            f"face models missing from {base} ({', '.join(missing)}); "
            f"run `python -m scripts.fetch_models` (set {ENV_VAR} or pass --dest to put them elsewhere)"
        )
    return base


def model_path(name: str, override: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Path of one model file, checked to exist."""
    return models_dir(override) / name
