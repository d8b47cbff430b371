"""A person model's base video for the live tests: a few frames of a portrait, held still."""

from __future__ import annotations

import cv2
import numpy as np

from libs.talkface.encode import VideoWriter


def write_person_video(portrait: str, path: str, frames: int = 5, fps: int = 25) -> None:
    """`frames` copies of the portrait at `portrait`, cut to even sides (H.264 4:2:0), as an MP4."""
    rgb = cv2.cvtColor(cv2.imread(portrait), cv2.COLOR_BGR2RGB)
    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    with VideoWriter(path, w, h, fps) as writer:
        for _ in range(frames):
            writer.write(np.ascontiguousarray(rgb[:h, :w]))
