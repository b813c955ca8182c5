"""The README's Python examples run as written, against a real server.

Each example is taken from README.md itself, with only the server address
changed, so the README cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Processes

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
BLOCKS: list[str] = re.findall(r"```python\n(.*?)```", README, re.S)
README_ADDRESS = "127.0.0.1:50051"


def example(marker: str) -> str:
    """The README's Python block containing `marker`."""
    [found] = [block for block in BLOCKS if marker in block]
    return found


def run_example(source: str, address: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(source.replace(README_ADDRESS, address))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


@pytest.fixture
def address(processes: Processes, tmp_path: Path) -> str:
    """A `zbrain serve --workers 2`, as `make run` starts it."""
    _, address = processes.server(tmp_path / "data", "--workers", "2")
    return address


def test_the_async_client_example_runs(address: str, tmp_path: Path) -> None:
    result = run_example(example("async for recent in client.list"), address, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "SUCCEEDED ['hi']"


def test_the_sync_client_example_runs(address: str, tmp_path: Path) -> None:
    result = run_example(example("SyncClient.connect"), address, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SUCCEEDED"


def test_the_custom_worker_example_serves_its_org(address: str, tmp_path: Path) -> None:
    script = tmp_path / "greeter.py"
    script.write_text(example("class Greeter").replace(README_ADDRESS, address))
    worker = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        submit = ["submit", "--server", address, "--org", "greetings", "--wait", "--json"]
        submitted = subprocess.run(
            [sys.executable, "-m", "zbrain", *submit, "--input", '{"name": "Ada"}', "--", "greet"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert '"output": {"greeting": "hello Ada"}' in submitted.stdout
    # A program that set up no logging still says where its worker went.
    assert worker.stdout is not None
    said = worker.stdout.read()
    assert "INFO zbrain.worker: connected to" in said, said
    assert "Traceback" not in said


def test_the_workflows_commands_run_as_written(address: str, tmp_path: Path) -> None:
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if "run-graph" in b]
    bin_dir = str(Path(sys.executable).parent)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "ZBRAIN_SERVER": address, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    graph = [line.split() for line in result.stdout.splitlines() if line.startswith("report")]
    assert graph[0][2] == "SUCCEEDED"
    assert "nightly" in result.stdout and "heartbeat" in result.stdout
