"""The sandbox executor (`ZWORKER_MODE=sandbox`): the process executor with
each attempt isolated by bubblewrap (`bwrap`, Debian's `bubblewrap`).

Inside the sandbox a job sees the machine read-only, a private empty
`/tmp`, the worker's temp dir empty but for its own job folder (the one
place it may write, so it cannot see or touch another job's files), its own
`/proc` and `/dev`, and its own PID namespace: when the attempt is stopped
(cancel, timeout, shutdown, a limit), the namespace's first process dies
and the kernel ends every process in it, however the job forked or
detached. Without the network (the default) it has only a loopback
interface of its own, so neither the internet nor the worker machine's
127.0.0.1 is reachable; a job gets the host's network only when it asks
(`JobSpec.network`) and the worker allows it (`--allow-network`).

bwrap does this with namespaces alone, unprivileged where the kernel allows
user namespaces (Debian's default), with no daemon and no image, and starts
in a few milliseconds. Resource limits apply as in process mode (`_limits`).
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

from ..errors import ZBrainError
from ..models import NO_RESOURCES, Job, JobState, Resources
from ._limits import rlimit_prefix
from ._process import ProcessExecutor, ProcessLimits

BWRAP = "bwrap"
# bwrap exits with 128 + N when the job's process was killed by signal N.
_SIGNALLED = 128


# What the probe runs: `true`, alone in a sandbox without the network.
_PROBE_JOB = Job(
    id="probe",
    org_id="",
    cmd=("true",),
    input=None,
    env={},
    timeout=timedelta(seconds=30),
    max_retries=0,
    priority=0,
    labels={},
    state=JobState.RUNNING,
    attempt=1,
    create_time=None,
    update_time=None,
    start_time=None,
    finish_time=None,
    next_run_time=None,
    last_error="",
    output=None,
    artifacts=(),
    worker_id="",
    cancel_requested=False,
)


class SandboxUnavailableError(ZBrainError):
    """The sandbox mode cannot run here: bwrap is missing or cannot work."""


class SandboxExecutor(ProcessExecutor):
    """Runs each attempt's command in a bubblewrap sandbox (see the module)."""

    def __init__(
        self,
        temp_dir: Path | None = None,
        limits: ProcessLimits | None = None,
        executor_id: str = "sandbox",
        *,
        maxima: Resources = NO_RESOURCES,
        allow_network: bool = False,
        bwrap: str | None = None,
    ) -> None:
        super().__init__(temp_dir, limits, executor_id, maxima=maxima)
        self.allow_network = allow_network
        found = bwrap or shutil.which(BWRAP)
        if found is None:
            raise SandboxUnavailableError(
                "sandbox mode needs bubblewrap, and `bwrap` is not on PATH: install it "
                "(Debian/Ubuntu: apt-get install bubblewrap) or run in process mode"
            )
        self.bwrap = found

    def probe(self) -> None:
        """Run an empty sandbox once; SandboxUnavailableError with bwrap's own
        words when it cannot (user namespaces disabled, a seccomp policy ...),
        so a worker refuses to start rather than fail every job."""
        folder = self._home.mkdtemp("zbrain-probe-")
        try:
            argv = self._command(_PROBE_JOB, folder, NO_RESOURCES)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailableError(f"cannot run {self.bwrap}: {exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if done.returncode != 0:
            said = done.stderr.strip() or f"exit status {done.returncode}"
            raise SandboxUnavailableError(
                f"bubblewrap cannot make a sandbox here ({said}); it needs user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1) or root"
            )

    def _command(self, job: Job, workdir: Path, limits: Resources) -> list[str]:
        temp_dir = str(self.temp_dir.resolve())
        folder = str(workdir.resolve())
        sandbox = [
            self.bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            "--tmpfs", temp_dir,  # other jobs' folders, wherever the temp dir is
            "--bind", folder, folder,
            "--chdir", folder,
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
        ]  # fmt: skip
        if not (job.network and self.allow_network):
            sandbox.append("--unshare-net")
        return [*rlimit_prefix(limits), *sandbox, "--", *job.cmd]

    def _exit_status(self, returncode: int) -> int:
        """bwrap reports a job killed by signal N as 128 + N: as the process
        executor reports it, -N."""
        return _SIGNALLED - returncode if returncode > _SIGNALLED else returncode
