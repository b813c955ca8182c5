"""Online backup and restore of the embedded store (`zbrain backup`, `zbrain restore`).

A backup is a data directory of its own: `zbrain.db`, a consistent snapshot
made with SQLite's online backup API while the server keeps running (WAL lets
the snapshot's read run beside the server's writes), and `artifacts/`, the
blobs the snapshot refers to. Restoring copies it into a data directory no
server is using; `zbrain serve --data-dir` then serves it as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from zbrain.errors import FailedPreconditionError, StoreError

from .driver import make_data_dir

DATABASE = "zbrain.db"
ARTIFACTS = "artifacts"
SERVER_LOCK = "server.lock"


@dataclass(frozen=True)
class Copied:
    """What a backup or a restore copied."""

    jobs: int
    blobs: int
    bytes: int


@contextlib.contextmanager
def serving(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for one server: a second server, or a restore,
    is refused while this one runs. (An advisory lock: it ends with the process,
    however it ends.)"""
    make_data_dir(data_dir)
    with (data_dir / SERVER_LOCK).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPreconditionError(
                f"another ZBrain server is using {data_dir}; stop it first"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def backup(data_dir: Path, out: Path, artifacts_dir: Path | None = None) -> Copied:
    """Snapshot the store of `data_dir` (running or not) into the new directory
    `out`, with the artifact blobs the snapshot refers to."""
    source_path = data_dir / DATABASE
    if not source_path.is_file():
        raise FailedPreconditionError(f"there is no ZBrain database in {data_dir}")
    if out.exists() and any(out.iterdir()):
        raise FailedPreconditionError(f"{out} is not empty; give a new directory for the backup")
    out.mkdir(parents=True, exist_ok=True)
    target_path = out / DATABASE
    with _translated("back up"):
        source = sqlite3.connect(source_path, timeout=30)
        target = sqlite3.connect(target_path)
        try:
            # All pages in one step: one read transaction, so one consistent snapshot.
            source.backup(target, pages=-1)
            _check(target, target_path)
            jobs, blobs = _contents(target)
        finally:
            target.close()
            source.close()
    copied = _copy_blobs(blobs, artifacts_dir or data_dir / ARTIFACTS, out / ARTIFACTS)
    _sync(out)
    return Copied(jobs, len(blobs), target_path.stat().st_size + copied)


def restore(backup_dir: Path, data_dir: Path, *, force: bool = False) -> Copied:
    """Copy a backup into `data_dir`, which no server may be using; an existing
    database there is replaced only with `force`."""
    source_path = backup_dir / DATABASE
    if not source_path.is_file():
        raise FailedPreconditionError(f"{backup_dir} is not a ZBrain backup (no {DATABASE})")
    with _translated("read the backup"):
        source = sqlite3.connect(source_path)
        try:
            _check(source, source_path)
            jobs, blobs = _contents(source)
        finally:
            source.close()
    target_path = data_dir / DATABASE
    with serving(data_dir), _translated("restore"):
        if target_path.exists() and not force:
            raise FailedPreconditionError(
                f"{data_dir} holds a database already; pass --force to replace it"
            )
        partial = target_path.with_name(DATABASE + ".restoring")
        shutil.copyfile(source_path, partial)
        with partial.open("rb") as copied:
            os.fsync(copied.fileno())
        # The old database's log and index belong to it, not to the restored one.
        for leftover in ("-wal", "-shm"):
            target_path.with_name(DATABASE + leftover).unlink(missing_ok=True)
        os.replace(partial, target_path)
        copied_bytes = _copy_blobs(blobs, backup_dir / ARTIFACTS, data_dir / ARTIFACTS)
        _sync(data_dir)
    return Copied(jobs, len(blobs), target_path.stat().st_size + copied_bytes)


def _check(db: sqlite3.Connection, path: Path) -> None:
    (verdict,) = db.execute("PRAGMA integrity_check").fetchone()
    if verdict != "ok":
        raise StoreError(f"{path} failed SQLite's integrity check: {verdict}")


def _contents(db: sqlite3.Connection) -> tuple[int, set[str]]:
    """How many jobs a database holds, and the blobs its artifacts refer to."""
    (jobs,) = db.execute("SELECT count(*) FROM jobs").fetchone()
    blobs = {sha256 for (sha256,) in db.execute("SELECT DISTINCT sha256 FROM artifacts")}
    return int(jobs), blobs


def _copy_blobs(blobs: set[str], source: Path, target: Path) -> int:
    """Copy the named blobs (content-addressed, never changed once written);
    one already there is the same content. Return the bytes copied."""
    copied = 0
    for sha256 in sorted(blobs):
        origin = source / sha256[:2] / sha256
        destination = target / sha256[:2] / sha256
        if destination.exists():
            continue
        if not origin.exists():
            raise StoreError(f"the artifact blob {sha256} is missing from {source}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, destination)
        copied += destination.stat().st_size
    return copied


def _sync(folder: Path) -> None:
    """Flush a folder's new files and names to disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for directory in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"could not {action}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"could not {action}: {exc.filename}: {exc.strerror}") from exc
