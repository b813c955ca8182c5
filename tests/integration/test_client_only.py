"""The client distribution on its own: a fresh virtual environment with only
`pip install ./clients/python` submits, inspects and runs jobs against a real
server, and carries none of the server's dependencies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import Processes

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("asyncpg", "aiosqlite", "opentelemetry-sdk", "prometheus-client", "zbrain-server")


@pytest.fixture(scope="module")
def client_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment holding the client distribution and what it needs."""
    home = tmp_path_factory.mktemp("client-only")
    venv.EnvBuilder(with_pip=True).create(home)
    # Built from a copy: setuptools builds in the source folder, which must stay clean.
    source = shutil.copytree(ROOT / "clients" / "python", home / "source")
    installed = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    return home


def run(env: Path, *args: str, server: str = "") -> subprocess.CompletedProcess[str]:
    """A `zbrain` command of the client-only environment, outside this checkout."""
    return subprocess.run(
        [str(env / "bin" / "zbrain"), *args],
        capture_output=True,
        text=True,
        cwd=env,
        env={
            "PATH": f"{env / 'bin'}:{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", "/root"),
            "ZBRAIN_SERVER": server,
        },
        timeout=60,
    )


def test_the_client_installs_none_of_the_servers_dependencies(client_env: Path) -> None:
    listed = subprocess.run(
        [str(client_env / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {package["name"].lower() for package in json.loads(listed.stdout)}

    assert "zbrain" in names
    assert names.isdisjoint(SERVER_ONLY)


def test_the_client_alone_submits_inspects_and_runs_jobs(
    client_env: Path, processes: Processes, tmp_path: Path
) -> None:
    _, address = processes.server(tmp_path / "served")
    worker = subprocess.Popen(
        [str(client_env / "bin" / "zbrain"), "worker", "--server", address, "--org", "solo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=client_env,
        start_new_session=True,
    )
    try:
        submitted = run(
            client_env, "submit", "--org", "solo", "--", "echo", "alone", server=address
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()

        waited = run(client_env, "wait", job_id, "--timeout", "60s", server=address)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        shown = run(client_env, "get", job_id, "--json", server=address)
        listed = run(client_env, "list", "--org", "solo", server=address)
        logs = run(client_env, "logs", job_id, server=address)
    finally:
        worker.terminate()
        worker.wait(30)

    assert json.loads(shown.stdout)["state"] == "SUCCEEDED"
    assert job_id[-8:] in listed.stdout  # its short id
    assert logs.stdout == "alone\n"


def test_server_commands_say_what_to_install(client_env: Path) -> None:
    served = run(client_env, "serve", "--listen", "127.0.0.1:0")
    offline = run(client_env, "token", "create", "--data-dir", ".", "--org", "a", "--role", "admin")

    for result in (served, offline):
        assert result.returncode == 1
        assert "pip install zbrain-server" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_python_client_imports_without_the_server(client_env: Path) -> None:
    script = "import zbrain, zbrain.worker; from zbrain import Client, SyncClient; print('ok')"
    result = subprocess.run(
        [str(client_env / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        cwd=client_env,
        timeout=60,
    )

    assert result.stdout.strip() == "ok", result.stderr
    assert sys.executable not in result.stderr
