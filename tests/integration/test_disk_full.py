"""A full disk under the SQLite store: submits are refused with a clear
RESOURCE_EXHAUSTED, the server stays up, nothing acknowledged is lost, and it
takes submits again by itself once space returns.

The store lives on a small tmpfs the test mounts (which needs root): without
the right to mount, the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Processes
from zbrain import SyncClient
from zbrain.errors import ResourceExhaustedError

BIG_INPUT = {"padding": "x" * (200 << 10)}  # 200 KiB a job: the disk fills fast


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the test's duration."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (under CI this test must run)")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def test_a_full_disk_refuses_submits_loses_nothing_and_recovers(
    processes: Processes, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", "3m") as disk:
        server, address = processes.server(disk / "data")
        acknowledged: list[str] = []
        with SyncClient.connect(address) as client:
            with pytest.raises(ResourceExhaustedError) as refused:
                for _ in range(200):
                    acknowledged.append(client.submit(["true"], input=BIG_INPUT).id)
            still_there = client.get(acknowledged[-1])

            resize(disk, "64m")
            deadline = time.monotonic() + 30
            while True:  # it recovers by itself: no restart, no command
                try:
                    acknowledged.append(client.submit(["true"], input=BIG_INPUT).id)
                    break
                except ResourceExhaustedError:
                    assert time.monotonic() < deadline, "submits never came back"
                    time.sleep(0.2)

        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(60) == 0
        with sqlite3.connect(disk / "data" / "zbrain.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        _, address = processes.server(disk / "data")
        with SyncClient.connect(address) as client:
            stored = [client.get(job_id).id for job_id in acknowledged]

    assert "disk is full" in str(refused.value)
    assert len(acknowledged) > 3
    assert still_there.id == acknowledged[-2]
    assert stored == acknowledged
