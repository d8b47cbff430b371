"""The gRPC contracts: buf lint is clean and the generated stubs match the .proto files."""

import filecmp
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _buf() -> str:
    exe = shutil.which("buf") or str(pathlib.Path(sys.executable).parent / "buf")
    assert pathlib.Path(exe).exists(), "buf is not installed (pip package buf-bin)"
    return exe


def test_buf_lint_is_clean():
    result = subprocess.run([_buf(), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_stubs_are_fresh(tmp_path):
    fresh = tmp_path / "gen"
    subprocess.run([sys.executable, "scripts/gen_protos.py", "--out", str(fresh), "--no-path-hook"],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    installed = ROOT / "gen"
    fresh_files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    installed_files = sorted(p.relative_to(installed) for p in installed.rglob("*")
                             if p.is_file() and "__pycache__" not in p.parts)
    assert fresh_files == installed_files, "gen/ is stale: run `python scripts/gen_protos.py`"
    _, mismatch, errors = filecmp.cmpfiles(fresh, installed, [str(p) for p in fresh_files], shallow=False)
    assert not mismatch and not errors, f"stale stubs: {mismatch + errors}; run `python scripts/gen_protos.py`"


def test_every_model_service_streams_progress_then_result():
    """Each model service's main RPC is server-streaming and its response carries progress or result."""
    from talkserve.dicetalk.v1 import dicetalk_pb2
    from talkserve.echomimic.v1 import echomimic_pb2
    from talkserve.latentsync.v1 import latentsync_pb2

    for module, service, rpc in ((dicetalk_pb2, "DiceTalkService", "Synthesize"),
                                 (echomimic_pb2, "EchoMimicService", "Generate"),
                                 (latentsync_pb2, "LatentSyncService", "Sync")):
        method = module.DESCRIPTOR.services_by_name[service].methods_by_name[rpc]
        assert method.server_streaming and not method.client_streaming
        oneof = method.output_type.oneofs_by_name["event"]
        assert {f.name for f in oneof.fields} == {"progress", "result"}
