"""Where a process executor keeps its jobs' folders, and how the folders of
a worker that died are found and removed.

A finished attempt's folder is removed by the worker that ran it. A worker
killed mid-job (kill -9, the OOM killer) removes nothing, and in the shared
temp dir its folders, inputs and artifacts included, would stay for ever.
So each worker process keeps its job folders inside one folder of its own,
on which it holds an exclusive `flock` for as long as it lives. The kernel
drops that lock when the process ends, however it ends; a worker that
starts (and every health check, so on each reconnect) removes every such
folder whose lock it can take.

A lock only means something to the kernel that holds it: on a temp dir
shared between machines (NFS, CIFS), another machine could take the lock
of a folder whose worker lives. So a folder's name carries the boot id of
the kernel its worker ran under, and only folders of this boot are swept.
Folders of an earlier boot are left alone (on a shared temp dir they could
be another machine's; a local /tmp is emptied at boot anyway), as are those
a worker could not lock (a filesystem without locks: named so no sweep
judges them), those of ZBrain versions before this one (`zbrain-JOBID-*`
directly in the temp dir) and, by the permissions of a folder made by
`mkdtemp`, other users'.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

from ..errors import InvalidArgumentError

log = logging.getLogger("zbrain.worker")


def _boot_id() -> str:
    """This kernel's boot id (new at every boot, shared by its containers),
    shortened; "noboot" where the kernel does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
    except OSError:
        return "noboot"


_BOOT_ID = _boot_id()
OWN_PREFIX = f"zbrain-worker-{_BOOT_ID}-"
# A folder is made under this name, locked, then renamed to its OWN_PREFIX
# name: a sweep never sees an unlocked folder of a worker that is starting.
_CLAIMING_PREFIX = f".zbrain-worker-claiming-{_BOOT_ID}-"
# A folder its worker could not lock: no sweep may judge it by its lock.
_UNLOCKED_PREFIX = "zbrain-worker-unlocked-"
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

    def mkdtemp(self, prefix: str) -> Path:
        """A new folder in this process's folder; a new one of those if it
        went away (removed by a temp-dir cleaner, or the temp dir with it)."""
        try:
            return Path(tempfile.mkdtemp(dir=self.folder(), prefix=prefix))
        except FileNotFoundError:
            if self._release is not None:
                self._release()  # the old lock's descriptor
            self._path = None
            return Path(tempfile.mkdtemp(dir=self.folder(), prefix=prefix))

    def _claim(self) -> Path:
        try:
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            claiming = Path(tempfile.mkdtemp(dir=self.temp_dir, prefix=_CLAIMING_PREFIX))
        except OSError as error:  # a file, not a folder; not ours to write; a full disk
            raise InvalidArgumentError(
                f"cannot make job folders in {self.temp_dir}: {error.strerror}; the temp dir "
                "(--temp-dir, ZWORKER_TEMP_DIR) must be a folder this user can write"
            ) from error
        fd = -1
        try:
            fd = os.open(claiming, os.O_RDONLY | os.O_DIRECTORY)
            prefix = OWN_PREFIX if _lock_own(fd, claiming) else _UNLOCKED_PREFIX
            path = claiming.with_name(prefix + claiming.name[len(_CLAIMING_PREFIX) :])
            os.rename(claiming, path)  # the lock stays with the folder
        except BaseException:
            if fd >= 0:
                os.close(fd)
            shutil.rmtree(claiming, ignore_errors=True)
            raise
        # At exit (after the folder remover's thread has ended), or when the
        # executor is dropped: the folder goes, then the lock with the descriptor.
        self._release = weakref.finalize(self, _remove_own, path, fd, os.getpid())
        return path


def _lock_own(fd: int, path: Path) -> bool:
    """Lock a new folder of ours; whether it is locked. Where the filesystem
    has no locks (or none left), the worker still runs, says what it gives
    up, and names its folder so that no sweep takes the missing lock for a
    dead worker's."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise  # a folder just made is locked by nobody: never expected
    except OSError as error:
        log.warning(
            "cannot lock %s (%s): the job folders of a worker killed here will not be "
            "removed by the next one; give --temp-dir a local filesystem",
            path,
            error.strerror,
        )
        return False
    return True


def _remove_own(path: Path, fd: int, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # not a forked child's exit: the folder is its parent's
        shutil.rmtree(path, ignore_errors=True)
    os.close(fd)


def remove_abandoned(temp_dir: Path) -> list[Path]:
    """Remove the job folders of every worker process of this boot that
    ended without removing them (their lock is free); the folders removed.
    A folder that cannot be checked or removed is logged and skipped."""
    try:
        entries = list(os.scandir(temp_dir))
    except FileNotFoundError:
        return []
    except OSError as error:
        log.warning("cannot list %s to remove dead workers' job folders: %s", temp_dir, error)
        return []
    now = time.time()
    candidates = [
        Path(entry.path)
        for entry in entries
        if entry.name.startswith(OWN_PREFIX)
        or (entry.name.startswith(_CLAIMING_PREFIX) and _age_s(entry, now) > _CLAIMING_STALE_S)
    ]
    removed = [path for path in candidates if _remove_if_unlocked(path)]
    if removed:
        log.info(
            "removed the job folders of %d worker process(es) that ended without "
            "removing them, in %s",
            len(removed),
            temp_dir,
        )
    return removed


def _age_s(entry: os.DirEntry[str], now: float) -> float:
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _remove_if_unlocked(path: Path) -> bool:
    """Remove a folder whose lock nobody holds; whether this call removed it."""
    try:  # never through a link: only a folder itself may be removed
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # gone meanwhile, a link, or another user's
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Another sweep may have removed it between our open and our lock.
        if not _still_named(path, fd):
            return False
        # Held while removing: another worker's sweep skips it meanwhile. A
        # second pass for what a dead worker's orphaned job (its process
        # lives on in a session of its own) wrote during the first.
        for _ in range(2):
            shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.warning("could not remove all of %s, a dead worker's job folders", path)
            return False
        return True
    except BlockingIOError:  # its worker lives
        return False
    except OSError as error:  # no locks on this filesystem: no telling
        log.warning("cannot check %s, a worker's job folders: %s", path, error.strerror)
        return False
    finally:
        os.close(fd)


def _still_named(path: Path, fd: int) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except OSError:
        return False
