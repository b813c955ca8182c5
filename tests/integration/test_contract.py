"""The compatibility guard of `make test` (scripts/contract.py check): `buf
breaking` against the contract as last released, on a copy of the protos
changed the way a careless edit would change them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the repository's buf workspace: buf.yaml and protos/ with the baseline."""
    assert BUF.exists(), "buf is missing: run `make setup` (npm ci) first"
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    return tmp_path


def edit(workspace: Path, name: str, old: str, new: str) -> None:
    path = workspace / "protos" / "zbrain" / "v1" / name
    text = path.read_text()
    assert old in text, f"{name} no longer holds {old!r}: update this test"
    path.write_text(text.replace(old, new, 1))


def check(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "contract.py"), "check", "--workspace", workspace],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_protos_as_committed_keep_the_released_contract(workspace: Path) -> None:
    result = check(workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renamed_field_fails_naming_the_field(workspace: Path) -> None:
    edit(workspace, "job.proto", "  int32 max_retries = 7;", "  int32 retry_budget = 7;")

    result = check(workspace)

    assert result.returncode == 1
    assert 'Field "7" on message "Job" changed name from "max_retries" to "retry_budget"' in (
        result.stdout
    )
    assert "break the contract as released" in result.stderr


def test_a_renumbered_field_fails_naming_the_field(workspace: Path) -> None:
    edit(workspace, "job.proto", "  string last_error = 17;", "  string last_error = 40;")

    result = check(workspace)

    assert result.returncode == 1
    assert 'Previously present field "17" with name "last_error" on message "Job"' in result.stdout


def test_a_removed_rpc_fails_naming_it(workspace: Path) -> None:
    edit(
        workspace,
        "job_service.proto",
        "  rpc ListArtifacts(ListArtifactsRequest) returns (ListArtifactsResponse) {\n"
        '    option (google.api.http) = {get: "/v1/jobs/{job_id}/artifacts"};\n'
        "  }\n",
        "",
    )

    result = check(workspace)

    assert result.returncode == 1
    assert 'Previously present RPC "ListArtifacts" on service "JobService"' in result.stdout


def test_additions_pass(workspace: Path) -> None:
    edit(
        workspace,
        "job.proto",
        "  Transition last_transition = 25;\n",
        "  Transition last_transition = 25;\n"
        "  // Who submitted the job.\n"
        "  string submitter = 60;\n",
    )
    edit(
        workspace,
        "job.proto",
        "  LOG_STREAM_SYSTEM = 3;\n",
        "  LOG_STREAM_SYSTEM = 3;\n"
        "  // Lines the worker's own tooling wrote.\n"
        "  LOG_STREAM_TOOL = 4;\n",
    )
    edit(
        workspace,
        "job_service.proto",
        "service JobService {\n",
        "service JobService {\n"
        "  // Touch marks a job as seen.\n"
        "  rpc Touch(GetRequest) returns (GetResponse);\n",
    )

    result = check(workspace)

    assert result.returncode == 0, result.stdout + result.stderr
