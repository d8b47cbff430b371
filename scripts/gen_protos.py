"""Generate the Python gRPC stubs from proto/ into gen/ and put gen/ on the interpreter's path.

The stubs are build output: never committed, always regenerated from the .proto files.

The protos import `buf/validate/validate.proto` (protovalidate's rules). Its descriptor
comes from the installed `protovalidate` wheel, which embeds it in its generated module:
protoc reads it with `--descriptor_set_in` (no network, no vendored copy), and its Python
module `buf.validate.validate_pb2` is generated into gen/ beside ours. Buf compiles from
sources and the Buf Schema Registry that serves the dependency is not reachable here, so
the file is also printed back from its descriptor into gen/deps/ (a module of buf.yaml),
and checked: protoc must read the printed file back to the very same descriptor.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import pathlib
import shutil
import sys
import sysconfig

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from proto_source import proto_source

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"
VALIDATE_PROTO = "buf/validate/validate.proto"


def validate_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """buf/validate/validate.proto as protovalidate's wheel embeds it (a serialized descriptor)."""
    spec = importlib.util.find_spec("protovalidate")
    if spec is None or spec.origin is None:
        raise SystemExit("protovalidate is not installed (pip install -e '.[dev]')")
    module = pathlib.Path(spec.origin).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    marker = b"\n" + bytes([len(VALIDATE_PROTO)]) + VALIDATE_PROTO.encode()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes) and node.value.startswith(marker):
            return descriptor_pb2.FileDescriptorProto.FromString(node.value)
    raise SystemExit(f"no descriptor of {VALIDATE_PROTO} in {module}")


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Compile every .proto under proto/ (and validate.proto) into out_dir; return the generated files."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    deps = out_dir / "deps.binpb"
    deps.write_bytes(descriptor_pb2.FileDescriptorSet(file=[validate_descriptor()]).SerializeToString())
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    common = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--descriptor_set_in={deps}"]
    _protoc(*common, f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *protos)
    _protoc(*common, f"--python_out={out_dir}", f"--pyi_out={out_dir}", VALIDATE_PROTO)
    deps.unlink()
    write_validate_source(out_dir, well_known)
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def write_validate_source(out_dir: pathlib.Path, well_known: pathlib.Path) -> None:
    """Print validate.proto into out_dir/deps for Buf, and prove the print faithful."""
    # The options of validate.proto use its own extensions: parse them with its module loaded.
    # No bytecode next to the generated files: gen/ holds exactly what protoc wrote.
    sys.path.insert(0, str(out_dir))
    sys.dont_write_bytecode, writes = True, sys.dont_write_bytecode
    try:
        importlib.import_module("buf.validate.validate_pb2")
    finally:
        sys.path.remove(str(out_dir))
        sys.dont_write_bytecode = writes
    original = descriptor_pb2.FileDescriptorProto.FromString(validate_descriptor().SerializeToString())
    source = out_dir / "deps" / VALIDATE_PROTO
    source.parent.mkdir(parents=True)
    source.write_text(proto_source(original))
    check = out_dir / "check.binpb"
    _protoc("grpc_tools.protoc", f"-I{out_dir / 'deps'}", f"-I{well_known}", f"--descriptor_set_out={check}",
            VALIDATE_PROTO)
    printed = descriptor_pb2.FileDescriptorSet.FromString(check.read_bytes()).file[0]
    check.unlink()
    if printed != original:
        raise SystemExit(f"{source} does not compile back to protovalidate's descriptor")


def _protoc(*args: str) -> None:
    if protoc.main(list(args)) != 0:
        raise SystemExit("protoc failed")


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
