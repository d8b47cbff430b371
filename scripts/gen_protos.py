"""Generate the Python gRPC stubs from proto/ into gen/ and put gen/ on the interpreter's path.

The stubs are build output: never committed, always regenerated from the .proto files.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import sysconfig

from grpc_tools import protoc
import grpc_tools

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Compile every .proto under proto/ into out_dir; return the generated files."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def install_path_hook() -> pathlib.Path:
    """Write a .pth file so `import talkserve.<name>.v1` finds gen/ in this environment."""
    pth = pathlib.Path(sysconfig.get_paths()["purelib"]) / "talkserve-gen.pth"
    pth.write_text(f"{GEN_DIR}\n")
    return pth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=GEN_DIR)
    parser.add_argument("--no-path-hook", action="store_true")
    args = parser.parse_args()
    files = generate(args.out)
    if not args.no_path_hook and args.out == GEN_DIR:
        install_path_hook()
    sys.stderr.write(f"generated {len(files)} files in {args.out}\n")


if __name__ == "__main__":
    main()
