"""The compatibility guard on the contract: protos/ against the last release.

`check` (run by `make test`) fails when the protos break the contract as last
released, kept as a buf image in protos/baseline/: a renamed or renumbered
field, a removed RPC, a changed type. Additions pass. `baseline REF` rebuilds
that image from the protos of a released commit or tag; run it deliberately,
once per release (docs/api.md, "Compatibility").

Both sides are compared as images, because buf compares a workspace of several
modules (ours and the vendored third_party one) only against a workspace.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"
BASELINE = Path("protos") / "baseline" / "zbrain-v1.binpb"
BASELINE_COMMIT = Path("protos") / "baseline" / "zbrain-v1.commit"
OUR_PROTOS = Path("protos") / "zbrain"


def build_image(workspace: Path, out: Path) -> None:
    """Build our protos (with their imports, which an image input needs) into `out`."""
    subprocess.run(
        [BUF, "build", str(workspace), "--path", str(workspace / OUR_PROTOS), "-o", str(out)],
        check=True,
    )


def check(workspace: Path) -> int:
    """Compare the protos of `workspace` with its baseline, by its buf.yaml's breaking rules."""
    with tempfile.TemporaryDirectory() as scratch:
        current = Path(scratch) / "current.binpb"
        build_image(workspace, current)
        result = subprocess.run(
            [
                BUF,
                "breaking",
                str(current),
                "--against",
                str(workspace / BASELINE),
                "--config",
                str(workspace / "buf.yaml"),
                "--exclude-imports",
            ],
            check=False,
        )
    released = (workspace / BASELINE_COMMIT).read_text().strip()[:12]
    if result.returncode != 0:
        print(
            f"protos/ break the contract as released (commit {released}, protos/baseline/): "
            "clients built against it would fail. Add a field, value or RPC instead of "
            "changing one (docs/api.md, Compatibility); a new major version is a new "
            "package (zbrain.v2).",
            file=sys.stderr,
        )
        return 1
    print(f"protos/ are compatible with the contract as released (commit {released}).")
    return 0


def baseline(ref: str) -> int:
    """Rebuild the baseline image from the protos (and buf.yaml) of `ref`."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", commit, "buf.yaml", "protos"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(scratch, filter="data")
        build_image(Path(scratch), ROOT / BASELINE)
    (ROOT / BASELINE_COMMIT).write_text(commit + "\n")
    print(f"{BASELINE} now holds the contract as of {commit}; commit it with {BASELINE_COMMIT}.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="fail if protos/ break the released contract")
    checking.add_argument(
        "--workspace", type=Path, default=ROOT, help="a copy of the repository (for tests)"
    )
    rebuilding = commands.add_parser("baseline", help="rebuild the baseline from a release")
    rebuilding.add_argument("ref", help="the released commit or tag")
    args = parser.parse_args()
    if args.command == "check":
        return check(args.workspace.resolve())
    return baseline(args.ref)


if __name__ == "__main__":
    sys.exit(main())
