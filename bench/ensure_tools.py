"""Make sure the command-line tools the benchmarks drive are installed.

`wrk` (HTTP load generator) comes from Debian's `wrk` package: installed with apt-get when
it is missing and we run as root; otherwise the message says what to run. `py-spy` (sampling
profiler, used to explain a missed polling target) is a PyPI package of the `bench` extra.

    python -m bench.ensure_tools [wrk] [py-spy]
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

APT_PACKAGES = {"wrk": "wrk"}
PIP_HINT = {"py-spy": "pip install -e '.[bench]'   (or: pip install py-spy)"}


class ToolMissing(RuntimeError):
    """A tool is not installed and could not be installed here."""


def which(tool: str) -> str | None:
    """The tool on PATH, or next to this Python (a venv's bin/)."""
    found = shutil.which(tool)
    if found:
        return found
    beside = pathlib.Path(sys.executable).parent / tool
    return str(beside) if beside.exists() else None


def ensure(tool: str) -> str:
    """The path of `tool`, installing a Debian package as root when needed; ToolMissing otherwise."""
    found = which(tool)
    if found:
        return found
    if tool in PIP_HINT:
        raise ToolMissing(f"{tool} is not installed: {PIP_HINT[tool]}")
    package = APT_PACKAGES.get(tool)
    if package is None:
        raise ToolMissing(f"{tool} is not installed and bench/ensure_tools.py does not know how to install it")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolMissing(f"{tool} is not installed; install it with: sudo apt-get install -y {package}")
    sys.stderr.write(f"installing {package} with apt-get...\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ToolMissing(f"apt-get install {package} failed:\n{done.stderr[-2000:]}")
    found = which(tool)
    if not found:
        raise ToolMissing(f"{package} was installed but {tool} is not on PATH")
    return found


def main(argv=None) -> int:
    tools = (argv if argv is not None else sys.argv[1:]) or ["wrk", "py-spy"]
    failed = 0
    for tool in tools:
        try:
            print(f"{tool}: {ensure(tool)}")
        except ToolMissing as exc:
            print(f"{tool}: MISSING - {exc}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
