"""Contact sheet of mouth crops over time: what a viewer sees of an engine's mouth.

Renders each photo speaking one recording with the talkface engine of the checkout it is
run from (so an older checkout gives the "before" row), crops the same box around the
portrait's mouth from frames spread over the video, and writes one row of crops per
photo. The photos and speech come from PyPI packages (tests/realdata.py); nothing is
committed but the sheet.

    python -m scripts.mouth_sheet --out after.png [--clip 0920] [--frames 8] [--label after]
    python -m scripts.mouth_sheet --join before.png after.png --out docs/images/mouth.jpg
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ("grace_hopper", "obama_smile", "obama_speaking", "tom_hanks")
CROP = 150  # pixels of each crop on the sheet


def _mouth_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """A square around the lips and chin, sized by the face."""
    from libs.talkface import face as F

    xy = landmarks[:, :2]
    cx, cy = xy[list(F.LIPS_OUTER)].mean(0)
    side = 0.42 * float(np.linalg.norm(xy[F.FOREHEAD] - xy[F.CHIN]))
    x0, y0 = int(cx - side / 2), int(cy - side * 0.38)
    return x0, y0, x0 + int(side), y0 + int(side)


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def render_rows(clip: str, frames: int, label: str) -> np.ndarray:
    """One row of `frames` mouth crops per photo, from videos this checkout renders."""
    from libs.talkface import api
    from libs.talkface.analysis import decode_video
    from libs.talkface.engine import Engine
    from tests import realdata

    engine = Engine()
    wav = next(c.wav for c in realdata.speech_clips() if c.name == clip)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in PHOTOS:
            job = api.PortraitJob(image_path=str(realdata.photo(name)), audio_path=str(wav),
                                  out_path=str(pathlib.Path(tmp) / f"{name}.mp4"), fps=25, min_resolution=512,
                                  crop=True, dynamic_scale=0.0)
            portrait, rest, _ = engine.prepare_portrait(job)
            engine.generate(job)
            _, video = decode_video(job.out_path)
            all_frames = list(video)
            x0, y0, x1, y1 = _mouth_box(rest)
            picks = np.linspace(0, len(all_frames) - 1, frames + 2).astype(int)[1:-1]
            crops = []
            for i in picks:
                f = all_frames[i]
                h, w = f.shape[:2]
                crop = f[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
                crop = cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_AREA)
                _label(crop, f"{label} {i / 25:.2f}s")
                crops.append(crop)
            rows.append(np.hstack(crops))
    return np.vstack(rows)


def join(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Interleave the rows of two sheets: each photo's before row above its after row."""
    n = len(PHOTOS)
    rh = before.shape[0] // n
    out = []
    for k in range(n):
        out += [before[k * rh:(k + 1) * rh], after[k * rh:(k + 1) * rh], np.full((6, before.shape[1], 3), 255, np.uint8)]
    return np.vstack(out[:-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--clip", default="0920")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--label", default="")
    p.add_argument("--join", nargs=2, metavar=("BEFORE", "AFTER"))
    a = p.parse_args(argv)
    if a.join:
        sheet = join(cv2.imread(a.join[0]), cv2.imread(a.join[1]))
        cv2.imwrite(a.out, sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9, cv2.IMWRITE_JPEG_QUALITY, 88])
        return 0
    sheet = render_rows(a.clip, a.frames, a.label)
    cv2.imwrite(a.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
