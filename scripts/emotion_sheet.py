"""Eight-emotion sheet: one portrait rendered in every emotion, mid-sentence and in silence.

Renders the portrait (a real photo from tests/realdata.py, fetched from PyPI; nothing but
the sheet is committed) speaking one espeak sentence followed by a pause, once per
emotion at DICE-Talk's default intensity, with the talkface engine of this checkout, and
lays out two rows of face crops: a frame mid-sentence above a frame in the pause.

    python -m scripts.emotion_sheet --out docs/images/emotions.jpg [--photo grace_hopper obama_smile]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SENTENCE = "I really did not expect to see you here today."
PAUSE_S = 1.0
CROP = 200  # pixels of each face crop on the sheet
FPS = 25
ORDER = ("neutral", "happy", "sad", "angry", "surprised", "fear", "disgusted", "contempt")


def _face_box(landmarks: np.ndarray, shape: tuple) -> tuple[int, int, int, int]:
    """A square from above the brows to below the chin."""
    from libs.talkface import face as F

    xy = landmarks[:, :2]
    cx, cy = xy[list(F.FACE_OVAL)].mean(0)
    side = 1.25 * float(np.linalg.norm(xy[F.FOREHEAD] - xy[F.CHIN]))
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    return x0, y0, min(shape[1], x0 + int(side)), min(shape[0], y0 + int(side))


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def speech_wav(path: pathlib.Path) -> tuple[float, float]:
    """Write the sentence and the pause to `path`; (seconds of speech, seconds in all)."""
    from libs.speech import Speech, synthesize, write_wav

    s = synthesize(SENTENCE, voice="en-us")
    pause = np.zeros(int(PAUSE_S * s.sample_rate), np.int16)
    write_wav(Speech(np.concatenate([pause[: len(pause) // 4], s.samples, pause]), s.sample_rate), path)
    lead = PAUSE_S / 4
    return lead + len(s.samples) / s.sample_rate, lead + len(s.samples) / s.sample_rate + PAUSE_S


def render_rows(photo: str, resolution: int = 384) -> np.ndarray:
    """Two rows (speaking, silent) of one crop per emotion of `photo`."""
    from libs.talkface import api
    from libs.talkface.analysis import decode_video
    from libs.talkface.engine import Engine
    from tests import realdata

    engine = Engine()
    speaking, silent = [], []
    with tempfile.TemporaryDirectory() as tmp:
        wav = pathlib.Path(tmp) / "speech.wav"
        spoken, total = speech_wav(wav)
        # mid-sentence: a frame with the mouth open, near the middle of the sentence
        for emotion in ORDER:
            job = api.PortraitJob(image_path=str(realdata.photo(photo)), audio_path=str(wav),
                                  out_path=str(pathlib.Path(tmp) / f"{emotion}.mp4"), fps=FPS,
                                  min_resolution=resolution, crop=True, dynamic_scale=0.0,
                                  emotion=emotion, emo_scale=6.0, seed=3)
            _, rest, _ = engine.prepare_portrait(job)
            engine.generate(job)
            frames = list(decode_video(job.out_path)[1])
            x0, y0, x1, y1 = _face_box(rest, frames[0].shape)
            for row, t in ((speaking, spoken * 0.55), (silent, total - 0.3)):
                f = frames[min(len(frames) - 1, int(t * FPS))][y0:y1, x0:x1]
                crop = cv2.resize(f, (CROP, CROP), interpolation=cv2.INTER_AREA)
                _label(crop, f"{emotion}{' (silent)' if row is silent else ''}")
                row.append(crop)
    return np.vstack([np.hstack(speaking), np.hstack(silent)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--photo", nargs="+", default=["grace_hopper", "obama_smile"])
    a = p.parse_args(argv)
    rows = [render_rows(name) for name in a.photo]
    gap = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.vstack([x for r in rows for x in (r, gap)][:-1])
    cv2.imwrite(a.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 78])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
