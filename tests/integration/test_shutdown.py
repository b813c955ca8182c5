"""Stopping `zbrain serve --workers N` as a person does (Ctrl-C): running jobs
get their grace, then every process of theirs is stopped and the jobs are
recorded as interrupted at once, not found lost a lease TTL later."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.conftest import Processes, wait_for
from zbrain import Cause, JobState, SyncClient

# A job that starts a child of its own, writes both pids, then waits forever.
JOB = ["sh", "-c", 'sleep 600 & echo "$$ $!" >> "$PIDS"; wait']


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_stops_every_job_process_and_records_them_interrupted(
    processes: Processes, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    data = tmp_path / "data"
    server, address = processes.server(
        data, "--workers", "2", env={"ZBRAIN_WORKER_GRACE": "1s", "PIDS": str(pids)}
    )
    with SyncClient.connect(address) as client:
        jobs = [client.submit(JOB, env={"PIDS": str(pids)}, max_retries=3) for _ in range(2)]
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 4)

    os.killpg(server.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert server.wait(60) == 0

    started = [int(pid) for pid in pids.read_text().split()]
    assert [pid for pid in started if alive(pid)] == [], "no process of any job remains"
    _, address = processes.server(data)
    with SyncClient.connect(address) as client:
        after = [client.get(job.id) for job in jobs]
    assert {job.state for job in after} == {JobState.RETRYING}
    assert {job.last_transition.cause for job in after if job.last_transition} == {
        Cause.INTERRUPTED
    }


def test_a_worker_stopped_by_sigterm_interrupts_what_outlives_its_grace(
    processes: Processes, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    _, address = processes.server(tmp_path / "data")
    worker = processes.worker(address, "--grace", "0.5s", "--concurrency", "1")
    with SyncClient.connect(address) as client:
        job = client.submit(JOB, env={"PIDS": str(pids)}, max_retries=0)
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        done = client.get(job.id)

    assert [int(pid) for pid in pids.read_text().split() if alive(int(pid))] == []
    assert done.state is JobState.FAILED
    assert done.last_transition is not None
    assert done.last_transition.cause is Cause.INTERRUPTED
    assert "shut down" in done.last_error
