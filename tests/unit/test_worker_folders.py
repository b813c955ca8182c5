"""Each worker process's folder of job folders: locked while it lives,
removed when it exits, and removed by the next worker when it was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from zbrain.worker._folders import OWN_PREFIX, Home, remove_abandoned

# A worker process in miniature: claims its folder, makes a job folder in it,
# says where, then waits to be killed or told to exit (a line on stdin).
WORKER = """
import sys
from pathlib import Path
from zbrain.worker._folders import Home
home = Home(Path(sys.argv[1]))
job = home.folder() / "zbrain-job-1-x"
job.mkdir()
(job / "input.json").write_text("{}")
print(home.folder(), flush=True)
sys.stdin.readline()
"""


def start_worker(temp_dir: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(temp_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_killed_workers_folder_is_removed_and_a_living_ones_kept(tmp_path: Path) -> None:
    killed, killed_folder = start_worker(tmp_path)
    living, living_folder = start_worker(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        home = Home(tmp_path)  # this process's, held (a Home dropped removes its folder)
        mine = home.folder()

        removed = remove_abandoned(tmp_path)

        assert removed == [killed_folder]
        assert not killed_folder.exists()
        assert (living_folder / "zbrain-job-1-x" / "input.json").exists()
        assert mine.is_dir()
    finally:
        living.kill()
        living.wait()


def test_a_worker_that_exits_removes_its_own_folder(tmp_path: Path) -> None:
    process, folder = start_worker(tmp_path)
    assert folder.is_dir() and folder.name.startswith(OWN_PREFIX)

    process.communicate("exit\n", timeout=30)

    assert process.returncode == 0
    assert not folder.exists()


def test_a_folder_another_worker_is_still_claiming_is_left_until_stale(tmp_path: Path) -> None:
    fresh = tmp_path / ".zbrain-worker-claiming-fresh"
    stale = tmp_path / ".zbrain-worker-claiming-stale"
    fresh.mkdir()
    stale.mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    assert remove_abandoned(tmp_path) == [stale]
    assert fresh.is_dir()


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

    second = home.reclaim()

    assert second.is_dir() and second != first
    assert remove_abandoned(tmp_path / "temp") == []  # still locked: ours
