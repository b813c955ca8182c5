"""Each worker process's folder of job folders: locked while it lives,
removed when it exits, and removed by the next worker when it was killed."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from zbrain.errors import InvalidArgumentError
from zbrain.worker import ProcessExecutor
from zbrain.worker._folders import OWN_PREFIX, Home, remove_abandoned

# A worker process in miniature: claims its folder, makes a job folder in it,
# says where, then waits to be killed or told to exit (a line on stdin);
# with "fork", a child it forks exits first, as a program's own child may.
WORKER = """
import os, sys
from pathlib import Path
from zbrain.worker._folders import Home
home = Home(Path(sys.argv[1]))
job = home.mkdtemp("zbrain-job-1-")
(job / "input.json").write_text("{}")
if sys.argv[2:] == ["fork"]:
    child = os.fork()
    if child == 0:
        sys.exit(0)
    os.waitpid(child, 0)
print(job, flush=True)
sys.stdin.readline()
"""


@contextmanager
def worker(temp_dir: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A miniature worker and its job folder; killed when the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, str(temp_dir), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            yield process, Path(process.stdout.readline().strip())
        finally:
            process.kill()


def test_a_killed_workers_folder_is_removed_and_a_living_ones_kept(tmp_path: Path) -> None:
    with worker(tmp_path) as (killed, killed_job), worker(tmp_path) as (_, living_job):
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        home = Home(tmp_path)  # this process's, held (a Home dropped removes its folder)
        mine = home.folder()

        removed = remove_abandoned(tmp_path)

        assert removed == [killed_job.parent]
        assert not killed_job.parent.exists()
        assert (living_job / "input.json").exists()
        assert mine.is_dir()


def test_a_worker_that_exits_removes_its_own_folder_and_its_forked_child_does_not(
    tmp_path: Path,
) -> None:
    with worker(tmp_path, "fork") as (process, job):
        assert job.exists(), "a forked child's exit left its parent's folder"
        assert job.parent.name.startswith(OWN_PREFIX)

        process.communicate("exit\n", timeout=30)

        assert process.returncode == 0
        assert not job.parent.exists()


def test_a_folder_another_worker_is_still_claiming_is_left_until_stale(tmp_path: Path) -> None:
    claiming = OWN_PREFIX.replace("zbrain-worker-", ".zbrain-worker-claiming-")
    fresh, stale = tmp_path / f"{claiming}fresh", tmp_path / f"{claiming}stale"
    fresh.mkdir()
    stale.mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    assert remove_abandoned(tmp_path) == [stale]
    assert fresh.is_dir()


def test_folders_of_another_boot_or_an_older_version_are_left(tmp_path: Path) -> None:
    other_boot = tmp_path / "zbrain-worker-0123456789ab-x1"
    old_version = tmp_path / "zbrain-01a23c41-2884-7274-b20f-80afb4dbecd4-1-abc"
    for folder in (other_boot, old_version):
        folder.mkdir()

    assert remove_abandoned(tmp_path) == []
    assert other_boot.is_dir() and old_version.is_dir()


def test_a_link_named_like_a_workers_folder_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    temp_dir = tmp_path / "temp"
    temp_dir.mkdir()
    (temp_dir / f"{OWN_PREFIX}link").symlink_to(outside)

    assert remove_abandoned(temp_dir) == []
    assert (outside / "keep.txt").read_text() == "kept"


def test_a_folder_removed_from_under_a_worker_is_claimed_again(tmp_path: Path) -> None:
    home = Home(tmp_path / "temp")
    first = home.folder()
    os.rmdir(first)

    job = home.mkdtemp("zbrain-job-2-")

    assert job.parent.is_dir() and job.parent != first
    assert remove_abandoned(tmp_path / "temp") == []  # still locked: ours


def test_without_locks_a_worker_still_runs_and_no_sweep_judges_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    another = tmp_path / f"{OWN_PREFIX}another"  # another worker's, as named while locks worked
    another.mkdir()
    monkeypatch.setattr(fcntl, "flock", no_locks)
    caplog.set_level(logging.WARNING, "zbrain.worker")
    home = Home(tmp_path)

    job = home.mkdtemp("zbrain-job-3-")

    assert job.is_dir()
    assert remove_abandoned(tmp_path) == []
    assert another.is_dir()
    said = caplog.text
    assert "cannot lock" in said and "--temp-dir" in said
    assert f"cannot check {another}" in said
    # Locks back (the failure was passing): still no sweep takes the
    # unlocked folder for a dead worker's.
    monkeypatch.undo()
    assert remove_abandoned(tmp_path) == [another]
    assert job.is_dir()


@pytest.mark.parametrize("under", [".", "sub"], ids=["a file", "under a file"])
async def test_a_temp_dir_that_cannot_hold_job_folders_is_named_in_the_error(
    tmp_path: Path, under: str
) -> None:
    (tmp_path / "file").touch()  # (root may write anywhere: a file is what stops it)
    temp_dir = tmp_path / "file" / under  # pathlib drops "."
    executor = ProcessExecutor(temp_dir)

    with pytest.raises(InvalidArgumentError) as refused:
        await executor.health_check()

    said = str(refused.value)
    assert said.startswith(f"cannot make job folders in {temp_dir}: ")
    assert "--temp-dir" in said
