"""The `zbrain` command line end to end, against a real `zbrain serve` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Processes


def zbrain(address: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zbrain", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "ZBRAIN_SERVER": address},
        timeout=60,
    )


@pytest.fixture
def address(processes: Processes, tmp_path: Path) -> str:
    """A `zbrain serve --workers 2` process, as `make run` starts it."""
    _, address = processes.server(tmp_path / "data", "--workers", "2")
    return address


def test_submit_get_list_logs_as_a_user_would(address: str) -> None:
    submitted = zbrain(address, "submit", "--", "echo", "hello")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    waited = zbrain(address, "wait", job_id, "--timeout", "30s")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "SUCCEEDED" in waited.stdout

    shown = zbrain(address, "get", job_id)
    assert f"id        {job_id}" in shown.stdout
    assert '["echo", "hello"]' in shown.stdout

    logs = zbrain(address, "logs", job_id)
    assert logs.stdout == "hello\n"

    listed = zbrain(address, "list")
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATE", "ATTEMPT", "CREATED", "COMMAND"]
    assert job_id in listed.stdout


def test_json_output_is_one_object_per_line(address: str) -> None:
    for n in range(3):
        assert (
            zbrain(address, "submit", "--input", json.dumps({"n": n}), "--", "true").returncode == 0
        )
    listed = zbrain(address, "list", "--json", "--oldest-first")
    jobs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [job["input"] for job in jobs] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_submit_options_reach_the_job(address: str, tmp_path: Path) -> None:
    input_file = tmp_path / "input.json"
    input_file.write_text('{"from": "file"}')
    out = zbrain(
        address,
        "submit",
        "--json",
        "--org",
        "team-a",
        "--timeout",
        "90s",
        "--retries",
        "5",
        "--env",
        "GREETING=hi there",
        "--label",
        "kind=test",
        "--input",
        f"@{input_file}",
        "--",
        "sh",
        "-c",
        "echo $GREETING",
    )
    job = json.loads(out.stdout)
    assert job["org_id"] == "team-a"
    assert job["timeout_s"] == 90
    assert job["max_retries"] == 5
    assert job["env"] == {"GREETING": "hi there"}
    assert job["labels"] == {"kind": "test"}
    assert job["input"] == {"from": "file"}
    assert job["cmd"] == ["sh", "-c", "echo $GREETING"]


def test_cancel_reports_what_happened(address: str) -> None:
    job_id = zbrain(
        address, "submit", "--org", "nobody-serves-this", "--", "sleep", "60"
    ).stdout.strip()
    assert "canceled" in zbrain(address, "cancel", job_id).stdout
    again = zbrain(address, "cancel", job_id)
    assert again.returncode == 0
    assert "already finished (CANCELED)" in again.stdout


def test_failed_job_fails_wait(address: str) -> None:
    out = zbrain(
        address, "submit", "--wait", "--retries", "0", "--", "sh", "-c", "echo broken >&2; exit 4"
    )
    assert out.returncode == 1
    assert "exited with status 4: broken" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "not-an-id"], "malformed job id"),
        (["get", "01939a4e-8b2c-7def-8123-456789abcdef"], "not found"),
        (["submit", "--input", "{bad", "--", "true"], "--input is not valid JSON"),
        (["submit", "--"], "nothing to run"),
        (["submit", "--env", "NOEQUALS", "--", "true"], "expected KEY=VALUE"),
        (["list", "--state", "sleeping"], "unknown state"),
        (["list", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    address: str, args: list[str], message: str
) -> None:
    out = zbrain(address, *args)
    assert out.returncode in (1, 2)
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_server_is_a_clear_error(processes: Processes) -> None:
    out = zbrain("127.0.0.1:1", "list")
    assert out.returncode == 1
    assert "cannot reach the ZBrain server at 127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_shuts_down_gracefully_and_keeps_jobs(processes: Processes, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server, address = processes.server(data)
    job_id = zbrain(address, "submit", "--", "true").stdout.strip()

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    assert server.stdout is not None
    assert "ZBrain stopped" in server.stdout.read()

    _, address = processes.server(data)
    assert "PENDING" in zbrain(address, "get", job_id).stdout


def test_serve_refuses_a_bad_setting(processes: Processes, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zbrain", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "ZBRAIN_LEASE_TTL": "soon"},
        timeout=30,
    )
    assert out.returncode == 1
    assert "ZBRAIN_LEASE_TTL" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_port_already_in_use(processes: Processes, tmp_path: Path) -> None:
    _, address = processes.server(tmp_path / "first")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zbrain",
            "serve",
            "--listen",
            address,
            "--data-dir",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"cannot listen on {address}" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_reports_an_unusable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = subprocess.run(
        [sys.executable, "-m", "zbrain", "serve", "--data-dir", str(blocker / "data")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "cannot create the data directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_logs_json_lines_with_job_fields(processes: Processes, tmp_path: Path) -> None:
    server, address = processes.server(tmp_path / "data", "--workers", "1", "--log-format", "json")
    out = zbrain(address, "submit", "--wait", "--retries", "0", "--", "false")
    assert out.returncode == 1
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    assert server.stdout is not None
    entries = [json.loads(line) for line in server.stdout if line.startswith("{")]
    failed = [e for e in entries if e["message"].startswith("job failed")]
    assert failed, entries
    assert {"job_id", "org_id", "worker_id", "trace_id"} <= set(failed[0])


def test_a_job_over_the_memory_it_was_given_fails_naming_the_limit(address: str) -> None:
    hog = "import time; block = bytearray(256 << 20); time.sleep(60)"
    out = zbrain(
        address,
        "submit", "--memory", "64M", "--cpu", "30s", "--retries", "0", "--wait",
        "--", sys.executable, "-c", hog,
    )  # fmt: skip

    assert out.returncode == 1, out.stdout + out.stderr
    assert "limits    memory 64 MiB, cpu 30s" in out.stdout
    assert "RESOURCE_LIMIT_EXCEEDED" in out.stdout
    assert "memory limit exceeded" in out.stdout


def test_a_limit_that_cannot_work_is_refused_with_the_field_named(address: str) -> None:
    out = zbrain(address, "submit", "--open-files", "1", "--", "true")

    assert out.returncode != 0
    assert "job.resources.open_files: must be 0 (no limit) or at least 3" in out.stderr
