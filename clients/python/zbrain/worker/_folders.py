"""Where a process executor keeps its jobs' folders, and how the folders of
a worker that died are found and removed.

A finished attempt's folder is removed by the worker that ran it. A worker
killed mid-job (kill -9, the OOM killer, a machine reset) removes nothing,
and in the shared temp dir its folders, inputs and artifacts included,
would stay for ever. So each worker process keeps its job folders inside
one folder of its own, named `zbrain-worker-*`, on which it holds an
exclusive `flock` for as long as it lives. The kernel drops that lock when
the process ends, however it ends; a worker that starts (and every health
check, so on each reconnect) removes every such folder whose lock it can
take. Folders of workers still running are never touched, whichever
machine user or version of ZBrain started them; folders of ZBrain versions
before this one (`zbrain-JOBID-*` directly in the temp dir) are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

OWN_PREFIX = "zbrain-worker-"
# A folder is made under this name, locked, then renamed to its OWN_PREFIX
# name: a sweep never sees an unlocked folder of a worker that is starting.
_CLAIMING_PREFIX = ".zbrain-worker-claiming-"
# A process that died between making and renaming its folder leaves it
# under the claiming name; such a folder is swept once this old.
_CLAIMING_STALE_S = 60.0


class Home:
    """This process's folder for job folders, under `temp_dir`, made and
    locked on first use and removed when the process exits."""

    def __init__(self, temp_dir: Path) -> None:
        self.temp_dir = temp_dir
        self._path: Path | None = None
        self._release: weakref.finalize[..., Home] | None = None

    def folder(self) -> Path:
        """The folder, claimed on first use."""
        if self._path is None:
            self._path = self._claim()
        return self._path

    def reclaim(self) -> Path:
        """A new folder, when the one held went away (removed by a temp-dir
        cleaner, or the temp dir itself with it)."""
        if self._release is not None:
            self._release()  # the old lock's descriptor
        self._path = None
        return self.folder()

    def _claim(self) -> Path:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        claiming = Path(tempfile.mkdtemp(dir=self.temp_dir, prefix=_CLAIMING_PREFIX))
        fd = os.open(claiming, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new folder: ours alone
            path = claiming.with_name(OWN_PREFIX + claiming.name[len(_CLAIMING_PREFIX) :])
            os.rename(claiming, path)  # the lock stays with the folder
        except BaseException:
            os.close(fd)
            shutil.rmtree(claiming, ignore_errors=True)
            raise
        # At exit (after the folder remover's thread has ended), or when the
        # executor is dropped: the folder goes, then the lock with the descriptor.
        self._release = weakref.finalize(self, _remove_own, path, fd)
        return path


def _remove_own(path: Path, fd: int) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.close(fd)


def remove_abandoned(temp_dir: Path) -> list[Path]:
    """Remove the job folders of every worker process that ended without
    removing them (their lock is free); the folders removed."""
    try:
        entries = list(os.scandir(temp_dir))
    except FileNotFoundError:
        return []
    now = time.time()
    candidates = [
        Path(entry.path)
        for entry in entries
        if entry.name.startswith(OWN_PREFIX)
        or (entry.name.startswith(_CLAIMING_PREFIX) and _age_s(entry, now) > _CLAIMING_STALE_S)
    ]
    return [path for path in candidates if _remove_if_unlocked(path)]


def _age_s(entry: os.DirEntry[str], now: float) -> float:
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _remove_if_unlocked(path: Path) -> bool:
    try:  # never through a link: only a folder itself may be removed
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # gone meanwhile, a link, or not ours to open
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its worker lives
            return False
        # Held while removing: another worker's sweep skips it meanwhile.
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
