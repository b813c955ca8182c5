"""Resource limits of one attempt of a command: which apply, how they are
put on the process, and whether one of them is what stopped it.

A job's `Resources` are clamped by the worker's maxima (`effective`). Four
limits are kernel rlimits, set in the child before it runs the job's
program: the command is started through util-linux's `prlimit`, which sets
them on itself and then execs the program (so the worker needs no
`preexec_fn`, which is unsafe with threads, and keeps the fast spawn path
for the jobs without limits). Setting them on the child after it started
(`resource.prlimit(pid, ...)`) would leave a window in which the program
already runs unbounded.

- CPU seconds: RLIMIT_CPU, soft at the limit (SIGXCPU) and hard a second
  later (SIGKILL, for a program that catches SIGXCPU).
- File size: RLIMIT_FSIZE; a write past it raises SIGXFSZ.
- Open files: RLIMIT_NOFILE; opening one more fails with EMFILE.
- Processes: RLIMIT_NPROC, which Linux counts per user (per user
  namespace in sandbox mode); it does not bind root.

Memory is not an rlimit: RLIMIT_AS counts reserved address space (a JVM or
Go runtime reserves far more than it uses, so such a limit breaks them),
Linux ignores RLIMIT_RSS, and a failed allocation is reported by each
program in its own words, so the worker could not tell that a limit ended
it. Cgroups would measure it exactly but are not available to a worker in
general. So the worker samples the resident memory of the job's process
tree (`MemoryWatch`) and kills the whole tree once it is over the limit,
which the attempt then reports as RESOURCE_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from ..models import NO_RESOURCES, Resources
from ..sizes import format_size

# How often a job's resident memory is measured. A job can go over its limit
# by what it allocates in one interval before it is stopped.
MEMORY_SAMPLE_INTERVAL_S = 0.05
PRLIMIT = "prlimit"  # util-linux, in every Debian installation
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def effective(requested: Resources, maxima: Resources) -> Resources:
    """The limits an attempt runs with: each the job's, bounded by the
    worker's maximum; the maximum alone when the job sets none."""
    if not maxima:
        return requested
    if not requested:
        return maxima

    def bound(asked: int, most: int) -> int:
        return min(asked, most) if asked and most else asked or most

    return Resources(
        memory_bytes=bound(requested.memory_bytes, maxima.memory_bytes),
        cpu_seconds=bound(requested.cpu_seconds, maxima.cpu_seconds),
        processes=bound(requested.processes, maxima.processes),
        open_files=bound(requested.open_files, maxima.open_files),
        file_size_bytes=bound(requested.file_size_bytes, maxima.file_size_bytes),
    )


def rlimit_prefix(limits: Resources) -> list[str]:
    """The argv that sets the rlimits of `limits` and then runs the rest of
    the command line; empty when there are none."""
    options = []
    if limits.cpu_seconds:
        options.append(f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}")
    if limits.file_size_bytes:
        options.append(f"--fsize={limits.file_size_bytes}")
    if limits.open_files:
        options.append(f"--nofile={limits.open_files}")
    if limits.processes:
        options.append(f"--nproc={limits.processes}")
    return [PRLIMIT, *options, "--"] if options else []


def exceeded(returncode: int | None, limits: Resources) -> str:
    """The limit a process that ended with `returncode` went over, in words
    (empty when its end says nothing of a limit): the kernel signals a CPU
    or file size limit with a signal of its own."""
    if limits is NO_RESOURCES or returncode is None or returncode >= 0:
        return ""
    if -returncode == signal.SIGXCPU and limits.cpu_seconds:
        return f"CPU time limit exceeded: {limits.cpu_seconds}s of CPU time used (SIGXCPU)"
    if -returncode == signal.SIGXFSZ and limits.file_size_bytes:
        return (
            f"file size limit exceeded: a write went past "
            f"{format_size(limits.file_size_bytes)} (SIGXFSZ)"
        )
    return ""


@dataclass(slots=True)
class MemoryWatch:
    """The resident memory of a process and its descendants, against a limit."""

    root_pid: int
    limit_bytes: int
    peak_bytes: int = 0

    def over_limit(self) -> bool:
        """Measure once; whether the tree is over its limit now."""
        used = sum(_resident_bytes(pid) for pid in tree(self.root_pid))
        self.peak_bytes = max(self.peak_bytes, used)
        return used > self.limit_bytes

    def describe(self) -> str:
        return (
            f"memory limit exceeded: the job's processes used {format_size(self.peak_bytes)} "
            f"of resident memory; the limit is {format_size(self.limit_bytes)}"
        )


def tree(root_pid: int) -> Iterator[int]:
    """The process and every descendant still linked to it (each thread's
    children included); processes that are gone are skipped."""
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        yield pid
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{pid}/task/{thread}/children", "rb") as handle:
                    pending.extend(int(child) for child in handle.read().split())
            except OSError:
                continue


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0
