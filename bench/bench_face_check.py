"""Benchmark: how long the face check adds to an upload that carries a portrait.

The gateway checks a portrait twice when a job is created: `intake.check_image` (PIL reads
the header and decodes the whole image: what every upload already paid) and, new,
`PortraitChecker.check` (decode, BlazeFace on the whole picture and on tiles, FaceMesh on
each face, its pose, and the mouth check on the chosen face: libs/talkface/choice.py). Both
are timed here on the real photos of tests/realdata.py and the scikit-image astronaut, the
median of `--runs` runs after one warm-up (the models load once per gateway, timed apart).
The face check runs after check_image on the same worker thread, so its time is what an
upload's answer is delayed by.

    python -m bench.bench_face_check [--runs 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import median, row, write_result

BENCH = "Face check at upload"


def _timed(fn, runs: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return median(times) * 1000.0, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from PIL import Image
    from skimage import data

    from services.gateway.intake import check_image
    from services.gateway.portrait import PortraitChecker
    from services.gateway.uploads import FilePart
    from tests import realdata

    with tempfile.TemporaryDirectory() as tmp:
        astronaut = pathlib.Path(tmp) / "astronaut.png"
        Image.fromarray(data.astronaut()).save(astronaut)
        photos = {"astronaut": astronaut, **{name: realdata.photo(name) for name in realdata.PHOTOS}}
        checker = PortraitChecker()
        t0 = time.perf_counter()
        checker._face()
        load_ms = (time.perf_counter() - t0) * 1000.0
        rows, details = [], {"model_load_ms": round(load_ms, 1), "runs": args.runs, "photos": {}}
        for name, path in photos.items():
            part = FilePart(field="image", filename=path.name, content_type="", path=pathlib.Path(path))
            decode_ms, info = _timed(lambda part=part: check_image(part, ("JPEG", "PNG"), 25_000_000), args.runs)
            face_ms, face = _timed(lambda path=path: checker.check(str(path)), args.runs)
            size = f"{info.width}x{info.height}"  # type: ignore[attr-defined]
            details["photos"][name] = {"size": size, "decode_ms": round(decode_ms, 1), "face_check_ms": round(face_ms, 1),
                                       "face": face.describe()}  # type: ignore[attr-defined]
            rows.append(row(BENCH, f"{name} {size}: face check", face_ms, "ms", "decode check (check_image)",
                            decode_ms, "n/a", None, note=f"face {face.describe()}"))  # type: ignore[attr-defined]
        print(f"models loaded once per gateway in {load_ms:.0f} ms")
        write_result(args.json, BENCH, rows, details)


if __name__ == "__main__":
    main()
