"""Generate the Python stubs for protos/ into the client package, or check them.

The stubs are committed so that users of the client need no code generator.
`--check` regenerates into a scratch folder and fails when the committed files
differ, so a proto changed without regenerating never goes unnoticed.
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
# The googleapis files the contract imports (google.api.http, google.rpc):
# on the include path only. Their Python modules come from
# googleapis-common-protos, so stubs are generated for zbrain/v1 alone.
THIRD_PARTY = PROTO_ROOT / "third_party"
PACKAGE_ROOT = ROOT / "clients" / "python"
GENERATED = Path("zbrain") / "v1"
INIT_TEXT = '"""Generated protobuf and gRPC stubs for zbrain.v1 (see scripts/gen_protos.py)."""\n'


def generate(out_root: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins into out_root."""
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / GENERATED).glob("*.proto")
    )
    (out_root / GENERATED).mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={THIRD_PARTY}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out=quiet:{out_root}",
        f"--mypy_grpc_out=quiet:{out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    (out_root / GENERATED / "__init__.py").write_text(INIT_TEXT)


def stale_files(committed: Path, fresh: Path) -> list[str]:
    """Names of files that differ, are missing, or are extra in the committed tree."""
    names = {p.name for p in committed.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}}
    names |= {p.name for p in fresh.iterdir() if p.is_file()}
    return sorted(
        name
        for name in names
        if not (committed / name).exists()
        or not (fresh / name).exists()
        or not filecmp.cmp(committed / name, fresh / name, shallow=False)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed stubs are stale"
    )
    args = parser.parse_args()
    if not args.check:
        generate(PACKAGE_ROOT)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        stale = stale_files(PACKAGE_ROOT / GENERATED, Path(scratch) / GENERATED)
    if stale:
        print(
            "Generated stubs are stale against protos/: "
            + ", ".join(stale)
            + "\nRun `make protos` and commit the result.",
            file=sys.stderr,
        )
        return 1
    print("Generated stubs match protos/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
