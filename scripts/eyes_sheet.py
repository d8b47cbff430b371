"""Contact sheet of blinks and head motion: what a viewer sees of the engine's eyes and head.

Renders each photo speaking one recording with the talkface engine of this checkout, finds
its blinks on the output (libs.talkface.alive), and writes per photo one row of eye crops
across the deepest blink (three frames before it to three after) and one row of whole
frames: the portrait, then the frames where the head is nodded and tilted most, with a
grid over them that shows the head moving against the still background. The photos and
speech come from PyPI packages (tests/realdata.py); nothing is committed but the sheet.

    python -m scripts.eyes_sheet --out docs/images/eyes.jpg [--clip 0920] [--size 384]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ("grace_hopper", "obama_smile", "obama_speaking")
TILE = 200  # pixels of each tile's width on the sheet


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def _tile(img: np.ndarray, text: str) -> np.ndarray:
    out = cv2.resize(img, (TILE, max(1, round(img.shape[0] * TILE / img.shape[1]))), interpolation=cv2.INTER_AREA)
    _label(out, text)
    return out


def _rows(name: str, clip: str, size: int, tmp: str) -> list[np.ndarray]:
    from libs.talkface import alive, analysis, api
    from libs.talkface import face as F
    from libs.talkface.engine import Engine
    from tests import realdata

    engine = Engine()
    wav = next(c.wav for c in realdata.speech_clips() if c.name == clip)
    job = api.PortraitJob(image_path=str(realdata.photo(name)), audio_path=str(wav),
                          out_path=str(pathlib.Path(tmp) / f"{name}.mp4"), fps=25, min_resolution=size, crop=True)
    portrait, rest, _ = engine.prepare_portrait(job)
    engine.generate(job)
    video = analysis.analyze_video(job.out_path, engine.face, keep_frames=True)
    eyes = alive.EyeOpening(portrait, rest)
    opening = np.array([eyes.opening(f, m) for f, m in zip(video.frames, video.landmarks)])
    found = [b for b in alive.blinks(opening)[0] if b.whole]
    deepest = found[0].deepest if found else int(np.nanargmin(opening))
    xy = rest[:, :2]
    both = xy[list(F.RIGHT_EYE) + list(F.LEFT_EYE)]
    lo, hi = both.min(0), both.max(0)
    pad = 0.15 * (hi[0] - lo[0])
    x0, x1 = int(lo[0] - pad), int(hi[0] + pad)
    y0, y1 = int(lo[1] - 1.3 * pad), int(hi[1] + 0.8 * pad)
    n = video.n_frames
    blink = [_tile(video.frames[i][y0:y1, x0:x1], f"{i / 25:.2f}s open {opening[i]:.2f}")
             for i in range(max(0, deepest - 3), min(n, deepest + 4))]
    rotation = alive.head_rotation(video.landmarks, rest)
    picks = [int(np.nanargmax(rotation[:, 0])), int(np.nanargmin(rotation[:, 0])), int(np.nanargmax(np.abs(rotation[:, 2])))]
    head = []
    for img, text in [(portrait, name)] + [(video.frames[i], f"{i / 25:.2f}s nod {rotation[i, 0]:+.1f} tilt "
                                                  f"{rotation[i, 2]:+.1f}") for i in picks]:
        grid = img.copy()
        grid[::max(8, size // 8), :] = (255, 255, 0)
        grid[:, ::max(8, size // 8)] = (255, 255, 0)
        head.append(_tile(grid, text))
    return [np.hstack(blink), np.hstack(head)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--clip", default="0920")
    p.add_argument("--size", type=int, default=384)
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in PHOTOS:
            rows += _rows(name, a.clip, a.size, tmp)
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    cv2.imwrite(a.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
