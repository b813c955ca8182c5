"""`zbrain serve --workers N` keeps its local worker: one that dies is started
again, and what it ran is retried at once rather than a lease TTL later."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import Processes, read_until, wait_for
from zbrain import Cause, JobState, SyncClient

# Each attempt notes its pid (the sleep's own, through exec), then waits.
JOB = ["sh", "-c", 'echo "$$" >> "$PIDS"; exec sleep 600']


def local_workers(server: subprocess.Popen[str]) -> list[int]:
    """The pids of the server's local `zbrain worker` processes."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    found = []
    for pid in children:
        with contextlib.suppress(FileNotFoundError):
            if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                found.append(int(pid))
    return found


def local_worker(server: subprocess.Popen[str]) -> int:
    """The pid of the server's one local `zbrain worker` process."""
    [pid] = local_workers(server)
    return pid


def test_a_killed_local_worker_is_started_again_and_its_job_retried_at_once(
    processes: Processes, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    server, address = processes.server(tmp_path / "data", "--workers", "2")
    started: list[int] = []
    try:
        with SyncClient.connect(address) as client:
            job = client.submit(JOB, env={"PIDS": str(pids)}, max_retries=1)
            wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 1)
            first = local_worker(server)
            os.kill(first, signal.SIGKILL)

            # Well within the 30 s lease TTL: the new process's hello ended the
            # dead one's lease, and the job runs again on it.
            wait_for(lambda: len(pids.read_text().split()) == 2, timeout=25)
            started = [int(pid) for pid in pids.read_text().split()]
            again = client.get(job.id)
            assert local_worker(server) != first
            assert again.state is JobState.RUNNING
            assert again.attempt == 2
            assert again.attempts[0].cause is Cause.WORKER_RESTARTED

            # The new process's other slot runs new work.
            done = client.wait(client.submit(["echo", "ok"]).id, timeout=25)
            assert done.state is JobState.SUCCEEDED
    finally:
        for pid in started or ([int(p) for p in pids.read_text().split()] if pids.exists() else []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_local_worker_that_stops_cleanly_stays_stopped(
    processes: Processes, tmp_path: Path
) -> None:
    server, _ = processes.server(tmp_path / "data", "--workers", "1")
    read_until(server, "connected (orgs")  # its signal handlers are in place by then
    os.kill(local_worker(server), signal.SIGTERM)  # it drains (nothing runs) and exits 0
    # Logged once the server has reaped it and decided: nothing starts after.
    read_until(server, "the local worker process stopped")
    assert local_workers(server) == []
    assert server.poll() is None  # the server serves on
