"""`zbrain backup` while the server runs under load, and `zbrain restore`: every
job acknowledged before the backup began comes back, artifacts included."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import Processes
from zbrain import JobState, SyncClient
from zbrain.errors import ZBrainError


def zbrain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zbrain", *args], capture_output=True, text=True, timeout=120
    )


class Submitter(threading.Thread):
    """Submits jobs one after another until stopped; keeps the acknowledged ids."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.acknowledged: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with SyncClient.connect(self.address) as client:
            while not self.stop.is_set():
                try:
                    self.acknowledged.append(client.submit(["true"], org="load").id)
                except ZBrainError:
                    return  # the server went away: the test stopped it


def test_a_backup_under_load_restores_every_job_acknowledged_before_it(
    processes: Processes, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server, address = processes.server(data, "--workers", "1")
    with SyncClient.connect(address) as client:
        made = client.submit(["sh", "-c", 'echo kept > "$ZBRAIN_ARTIFACTS_DIR/kept.txt"'])
        assert client.wait(made.id, timeout=60).state is JobState.SUCCEEDED
    load = Submitter(address)
    load.start()
    try:
        while len(load.acknowledged) < 50:  # the load is under way
            load.join(0.05)
        before = list(load.acknowledged)
        backed_up = zbrain("backup", "--data-dir", str(data), str(tmp_path / "backup"))
        while len(load.acknowledged) < len(before) + 20:  # and goes on after it
            load.join(0.05)
    finally:
        load.stop.set()
        load.join(30)
    assert backed_up.returncode == 0, backed_up.stderr
    os.killpg(server.pid, signal.SIGKILL)  # the server and its local worker
    server.wait()

    restored = zbrain("restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "again"))
    assert restored.returncode == 0, restored.stderr
    with sqlite3.connect(tmp_path / "again" / "zbrain.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    _, address = processes.server(tmp_path / "again")
    with SyncClient.connect(address) as client:
        missing = [job_id for job_id in [made.id, *before] if not _exists(client, job_id)]
        client.download(made.id, "kept.txt", tmp_path / "kept.txt")

    assert missing == []
    assert (tmp_path / "kept.txt").read_text() == "kept\n"
    assert hashlib.sha256(b"kept\n").hexdigest() in str(
        [path.name for path in (tmp_path / "again" / "artifacts").rglob("*")]
    )


def _exists(client: SyncClient, job_id: str) -> bool:
    try:
        client.get(job_id)
    except ZBrainError:
        return False
    return True


def test_restore_refuses_a_directory_a_server_is_using(
    processes: Processes, tmp_path: Path
) -> None:
    processes.server(tmp_path / "data")
    assert (
        zbrain("backup", "--data-dir", str(tmp_path / "data"), str(tmp_path / "b")).returncode == 0
    )

    restored = zbrain("restore", str(tmp_path / "b"), "--data-dir", str(tmp_path / "data"))

    assert restored.returncode == 1
    assert "another ZBrain server is using" in restored.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("backup", "--data-dir", "{tmp}/nothing", "{tmp}/out"), "there is no ZBrain database"),
        (("restore", "{tmp}/nothing", "--data-dir", "{tmp}/d"), "is not a ZBrain backup"),
    ],
)
def test_backup_and_restore_say_what_is_wrong_in_one_line(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    result = zbrain(*(arg.format(tmp=tmp_path) for arg in args))

    assert result.returncode == 1
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
