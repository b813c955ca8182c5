"""The import contract of `make lint` catches each kind of layer violation.

`lint-imports` checks the real tree on every `make lint`; these tests run it
on a copy of both packages with one deliberate violation added, to show the
contract is not one that cannot fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

VIOLATIONS = {
    "the core imports gRPC": (
        "zbrain_server/core/leak.py",
        "import grpc\n",
        "Below the edge nothing knows the wire",
    ),
    "the store imports generated messages": (
        "zbrain_server/store/leak.py",
        "from zbrain.v1 import job_pb2\n",
        "Below the edge nothing knows the wire",
    ),
    "the store imports the RPC edge": (
        "zbrain_server/store/leak.py",
        "from zbrain_server.rpc import codec\n",
        "Server layers point one way",
    ),
    "the gRPC edge imports the HTTP edge": (
        "zbrain_server/rpc/leak.py",
        "from zbrain_server.http import server\n",
        "Server layers point one way",
    ),
    "the dispatcher imports aiohttp": (
        "zbrain_server/dispatch/leak.py",
        "import aiohttp\n",
        "Below the edge nothing knows the wire",
    ),
    "the client imports the server": (
        "zbrain/leak.py",
        "import zbrain_server.app\n",
        "The client distribution never imports the server",
    ),
}


def lint_imports(packages: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contract, on the packages under `packages`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=packages,
        env={**os.environ, "PYTHONPATH": str(packages)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """A copy of both packages, importable from the returned folder."""
    shutil.copytree(ROOT / "clients" / "python" / "zbrain", tmp_path / "zbrain")
    shutil.copytree(ROOT / "server" / "zbrain_server", tmp_path / "zbrain_server")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "source", "contract"), VIOLATIONS.values(), ids=list(VIOLATIONS)
)
def test_a_layer_violation_breaks_the_contract(
    packages: Path, module: str, source: str, contract: str
) -> None:
    (packages / module).write_text(source)

    result = lint_imports(packages)

    assert result.returncode != 0
    assert f"{contract}" in result.stdout
    assert "BROKEN" in result.stdout


def test_the_tree_as_it_is_keeps_every_contract(packages: Path) -> None:
    result = lint_imports(packages)

    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout
