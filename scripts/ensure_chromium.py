"""Make sure a Chromium the browser tests can drive is installed; print its path.

The browser tests run Playwright against Debian's `chromium` package, never a browser that
`playwright install` downloads (that needs the internet). Looked for, in this order:

1. `$CHROMIUM`, then `chromium` / `chromium-browser` on PATH, then `/usr/bin/chromium`.
2. As root, `apt-get install -y chromium` when apt has a candidate for it (after one
   `apt-get update` if the package lists know none).

    python -m scripts.ensure_chromium          # prints the chromium path, exit 1 if none
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys

log = logging.getLogger("ensure_chromium")

DEFAULT_PATH = "/usr/bin/chromium"
PACKAGE = "chromium"
# apt-get can take minutes on a slow mirror (the package and its libraries are ~100 MB).
APT_TIMEOUT = 900


def _works(path: str | None) -> bool:
    if not path or not os.access(path, os.X_OK):
        return False
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and "chrom" in done.stdout.lower()


def find() -> str | None:
    """The path of a working Chromium already installed, or None."""
    found = [os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"), DEFAULT_PATH]
    for path in dict.fromkeys(p for p in found if p):
        if _works(path):
            return path
    return None


def _apt_candidate() -> bool:
    try:
        out = subprocess.run(["apt-cache", "policy", PACKAGE], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    match = re.search(r"Candidate:\s*(\S+)", out)
    return bool(match) and match.group(1) != "(none)"


def _apt(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(["apt-get", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=APT_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("apt-get %s failed: %s", " ".join(args), exc)
        return False
    if done.returncode != 0:
        log.warning("apt-get %s failed: %s", " ".join(args), done.stderr.strip()[-2000:])
    return done.returncode == 0


def why_not_installable() -> str | None:
    """Why this process cannot install Chromium, or None when it can try."""
    if os.geteuid() != 0:
        return "chromium is not installed and installing it needs root (run: sudo apt-get install -y chromium)"
    if not shutil.which("apt-get"):
        return "chromium is not installed and this system has no apt-get"
    return None


def ensure() -> str:
    """Return the path of a working Chromium, installing Debian's package if needed; raise if impossible."""
    path = find()
    if path:
        return path
    reason = why_not_installable()
    if reason:
        raise RuntimeError(reason)
    if not _apt_candidate():
        log.info("apt knows no %s package yet; running apt-get update", PACKAGE)
        _apt("update", "-q")
    if not _apt_candidate():
        raise RuntimeError(f"apt has no candidate for the {PACKAGE} package")
    log.info("installing %s with apt-get (this takes a minute or two)", PACKAGE)
    _apt("install", "-y", "-q", "--no-install-recommends", PACKAGE)
    path = find()
    if not path:
        raise RuntimeError(f"apt-get install {PACKAGE} did not leave a working chromium")
    return path


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sys.stdout.write(ensure() + "\n")
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
