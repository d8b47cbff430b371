"""Real read speech for tests and benchmarks: the LibriVox clips in pocketsphinx 5.1.1's source distribution.

The `pocketsphinx==5.1.1` sdist on PyPI carries, as test data, five clips of a person
reading Jane Austen's *Sense and Sensibility* (LibriVox, public domain; 16 kHz mono WAV,
24.7 s in all) with their texts and a PocketSphinx forced alignment of their words and
phones (`.phone.json`). They are fetched at run time with pip (`--no-binary
:all:` so the sdist, not a wheel; sha256-checked) into `<repo>/.tmp/data/` and never
committed. Three of them are also in the shared data folder (shared/data/speech).

    python -m scripts.fetch_librivox      # prints each clip's path and text
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scripts.pypi_fetch import FetchError, download

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".tmp" / "data" / "librivox"
REQUIREMENT = "pocketsphinx==5.1.1"
SDIST_NAME = "pocketsphinx-5.1.1.tar.gz"
SDIST_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
MEMBER_DIR = "pocketsphinx-5.1.1/test/data/librivox/"
CLIP_NAMES = tuple(f"sense_and_sensibility_01_austen_64kb-{n:04d}" for n in (870, 880, 890, 920, 930))


@dataclass(frozen=True)
class Clip:
    """One recorded sentence: its name, the WAV file, what the reader says and when each
    phone of it is said."""

    name: str
    wav: Path
    text: str
    alignment: Path

    @property
    def number(self) -> str:
        """The clip's number in the recording (0870, 0880, ...)."""
        return self.name.rsplit("-", 1)[-1]


def _clip(name: str, cache: Path) -> Clip:
    return Clip(name, cache / f"{name}.wav", (cache / f"{name}.txt").read_text().strip(),
                cache / f"{name}.phone.json")


def clips(cache: Path = CACHE_DIR) -> list[Clip]:
    """The five clips, fetched on first use; raises FetchError when they cannot be had."""
    wanted = [cache / f"{n}{ext}" for n in CLIP_NAMES for ext in (".wav", ".txt", ".phone.json")]
    if not all(p.is_file() for p in wanted):
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="talkserve-librivox-") as tmp:
            sdist = download(REQUIREMENT, SDIST_NAME, SDIST_SHA256, tmp, ("--no-binary", ":all:"))
            with tarfile.open(sdist) as tar:
                for path in wanted:
                    data = tar.extractfile(MEMBER_DIR + path.name).read()
                    part = path.with_suffix(path.suffix + ".part")
                    part.write_bytes(data)
                    part.replace(path)  # write-then-rename: a crash never leaves half a clip
    return [_clip(n, cache) for n in CLIP_NAMES]


def main() -> int:
    try:
        found = clips()
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for clip in found:
        print(f"{clip.wav}\t{clip.text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
