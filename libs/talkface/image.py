"""Decode a portrait file to the RGB array the engine works on (no engine imports: the gateway uses it too)."""

from __future__ import annotations

import os
from typing import Optional

import cv2
import numpy as np

from .api import BadImageError

MAX_INPUT_SIDE = 4096  # larger portraits are scaled down first: no output needs more


def load_image(path: str) -> np.ndarray:
    """Decode an image file to RGB uint8 (EXIF rotation applied); BadImageError if it is not one."""
    name = os.path.basename(str(path))
    if not os.path.isfile(path):
        raise BadImageError(f"the portrait file {name} does not exist")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is not None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        img = _decode_with_av(path)
    if img is None or img.size == 0 or min(img.shape[:2]) < 16:
        raise BadImageError("the portrait could not be decoded as an image")
    h, w = img.shape[:2]
    if max(h, w) > MAX_INPUT_SIDE:
        s = MAX_INPUT_SIDE / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def _decode_with_av(path: str) -> Optional[np.ndarray]:
    # formats OpenCV lacks (e.g. some GIF/AVIF builds) may still decode through FFmpeg
    try:
        import av

        with av.open(str(path), mode="r") as c:
            if not c.streams.video:
                return None
            for frame in c.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except Exception:  # anything FFmpeg cannot read is simply "not an image"
        return None
    return None
