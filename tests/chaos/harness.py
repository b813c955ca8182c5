"""What the chaos tests share.

- `Fleet`: `zbrain serve` and `zbrain worker` processes, each logging to a
  file of its own (a chaos run says more than a pipe holds), killed with
  SIGKILL, restarted on the same address.
- `RunLog`: the file every chaos job appends "JOB_ID ATTEMPT" to as it
  starts, so what ran is read off the disk, not off the server's word.
- `Submitter`: submits under fire, each job with a request id of its own,
  retrying an unanswered call with that same id until it is acknowledged.
- `audit`: what the server says happened (jobs, and the typed causes of
  their events) held against the run log: lost, failed, duplicate and
  rerun attempts.
- `Figures` and `publish`: what each test reports, printed and appended as
  one JSON line to the file named by ZBRAIN_CHAOS_REPORT (see
  docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import LISTENING, eventually
from zbrain import Cause, Client, Event, Job, JobState
from zbrain.errors import DeadlineExceededError, UnavailableError

# Children see the repository (for `python -m tests.chaos...`) and say
# everything at once.
CHILD_ENV = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")])
    ),
}
START_TIMEOUT_S = 60.0  # a Python process starting on a busy two-core machine
REPORT_VARIABLE = "ZBRAIN_CHAOS_REPORT"
SEED_VARIABLE = "ZBRAIN_CHAOS_SEED"
# Client channels redial a restarted server within a second, not after
# gRPC's default backoff (which grows to two minutes).
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
# Why an attempt that ran may be followed by another run of its job: its
# worker died or was cut off (the lease expired), or was restarted under the
# same id, or stopped it on shutdown.
RERUN_CAUSES = frozenset({Cause.LEASE_EXPIRED, Cause.WORKER_RESTARTED, Cause.INTERRUPTED})


def chaos_seed() -> int:
    """The seed of a test's random choices: ZBRAIN_CHAOS_SEED to replay a run."""
    return int(os.environ.get(SEED_VARIABLE) or random.randrange(1 << 32))


# -- processes ------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A `zbrain serve` process and the address it listens on."""

    process: subprocess.Popen[bytes]
    address: str


class Fleet:
    """The server and worker processes of one test, each in its own process
    group and logging to its own file under `logs`; all killed at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self._children: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """`python ARGS` (after `prefix`, such as `ip netns exec NS`), logging to a file."""
        log = self.logs / f"{len(self._children):02d}-{name}.log"
        with log.open("wb") as output:
            child = subprocess.Popen(
                [*prefix, sys.executable, *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **CHILD_ENV, **(env or {})},
                start_new_session=True,
            )
        self._children.append((child, log))
        return child

    def log_of(self, child: subprocess.Popen[bytes]) -> str:
        """What a child has said so far."""
        [log] = [log for known, log in self._children if known is child]
        return log.read_text(errors="replace")

    async def server(
        self,
        data_dir: Path,
        *args: str,
        listen: str = "127.0.0.1:0",
        env: Mapping[str, str] | None = None,
    ) -> Served:
        """A `zbrain serve` process, once it listens; `listen` names a fixed
        address, to come back on after a kill."""
        child = self.spawn(
            "server",
            ["-m", "zbrain", "serve", "--listen", listen, "--data-dir", str(data_dir), *args],
            env=env,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while True:
            said = self.log_of(child)
            started = LISTENING.search(said)
            if started:
                return Served(child, started.group(1))
            if child.poll() is not None or loop.time() > deadline:
                raise AssertionError(f"server did not start:\n{said}")
            await asyncio.sleep(0.05)

    def worker(
        self,
        address: str,
        worker_id: str,
        *args: str,
        concurrency: int = 4,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """A `zbrain worker` process (process mode) with a temp dir of its own."""
        temp = self.logs.parent / "worker-temp" / worker_id
        return self.spawn(
            f"worker-{worker_id}",
            [
                "-m",
                "zbrain",
                "worker",
                "--server",
                address,
                "--id",
                worker_id,
                "--concurrency",
                str(concurrency),
                "--temp-dir",
                str(temp),
                *args,
            ],
            env=env,
            prefix=prefix,
        )

    @staticmethod
    def kill(child: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process (its group: the process and anything it did not
        put in a session of its own) and reap it. A process worker's jobs run
        in sessions of their own, so they outlive it, as they would an OOM kill."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    def kill_all(self, *, show_logs: bool) -> None:
        """Kill every child; with `show_logs`, print the end of each log."""
        for child, _ in self._children:
            self.kill(child)
        if not show_logs:
            return
        print(f"--- logs in {self.logs} ---")
        for child, log in self._children:
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print(f"--- {log.name} (pid {child.pid}, exit {child.returncode}) ---")
            print("\n".join(tail))


def peak_rss_bytes(pid: int) -> int:
    """The most memory a process has held resident so far (VmHWM in
    /proc/PID/status): unlike the current size, it does not depend on the
    moment it is read."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


# -- what ran -------------------------------------------------------------------


class RunLog:
    """The file chaos jobs append "JOB_ID ATTEMPT" to when they start."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def env(self) -> dict[str, str]:
        """The job environment that tells the command where the log is."""
        return {"RUNS": str(self.path)}

    def command(self, seconds: float, then: str = "") -> list[str]:
        """A job that records its run, sleeps `seconds`, then runs shell `then`."""
        script = f'echo "$ZBRAIN_JOB_ID $ZBRAIN_ATTEMPT" >> "$RUNS"; sleep {seconds:g}'
        return ["sh", "-c", f"{script}; {then}" if then else script]

    def runs(self) -> collections.Counter[tuple[str, int]]:
        """How many times each (job id, attempt) ran."""
        if not self.path.exists():
            return collections.Counter()
        pairs = (line.split() for line in self.path.read_text().splitlines() if line.strip())
        return collections.Counter((job_id, int(attempt)) for job_id, attempt in pairs)

    def count(self) -> int:
        """Runs so far."""
        return sum(self.runs().values())

    async def reach(self, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` runs in all are logged."""

        async def reached() -> bool:
            return self.count() >= count

        await eventually(reached, timeout)

    async def more(self, count: int, timeout: float = 60.0) -> None:
        """Wait until `count` more runs are logged: jobs are flowing."""
        await self.reach(self.count() + count, timeout)


# -- submitting under fire --------------------------------------------------------


class Submitter:
    """Submits jobs until stopped, `in_flight` calls at a time, keeping at most
    `backlog` jobs acknowledged but not yet run (so the load follows the
    machine's speed). A call that fails UNAVAILABLE or times out (its server
    was killed) is retried with the same request id until the job is
    acknowledged: a retry never makes a second job. `acknowledged` maps
    request ids to the job ids Submit returned."""

    def __init__(
        self, client: Client, runs: RunLog, *, job_seconds: float, max_retries: int, backlog: int
    ) -> None:
        self.client = client
        self.runs = runs
        self.job_seconds = job_seconds
        self.max_retries = max_retries
        self.backlog = backlog
        self.acknowledged: dict[str, str] = {}
        self.retried_calls = 0
        self._stop = asyncio.Event()

    async def run(self, *, in_flight: int, give_up_s: float = 90.0) -> None:
        """Submit until `stop()`."""
        await asyncio.gather(*(self._loop(give_up_s) for _ in range(in_flight)))

    def stop(self) -> None:
        self._stop.set()

    async def _loop(self, give_up_s: float) -> None:
        while not self._stop.is_set():
            if len(self.acknowledged) - self.runs.count() >= self.backlog:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)
                continue
            await self.submit_one(give_up_s)

    async def submit_one(self, give_up_s: float = 90.0) -> str:
        """Submit one job and return its id once acknowledged."""
        request_id = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up_s
        while True:
            try:
                job = await self.client.submit(
                    self.runs.command(self.job_seconds),
                    env=self.runs.env,
                    max_retries=self.max_retries,
                    request_id=request_id,
                )
            except (UnavailableError, DeadlineExceededError):
                if loop.time() > deadline:
                    raise
                self.retried_calls += 1
                await asyncio.sleep(0.05)
            else:
                self.acknowledged[request_id] = job.id
                return job.id


async def all_finished(client: Client, timeout: float = 90.0) -> None:
    """Wait until no job waits or runs any more."""

    async def finished() -> bool:
        waiting = (JobState.PENDING, JobState.RUNNING, JobState.RETRYING)
        try:
            return not [job async for job in client.list(states=waiting, limit=1)]
        except (UnavailableError, DeadlineExceededError):
            return False  # a server still coming back

    await eventually(finished, timeout)


# -- what the server says happened ----------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChange:
    """One job_state_changed event, decoded."""

    job_id: str
    attempt: int
    lease_epoch: int
    from_state: JobState
    to_state: JobState
    cause: Cause
    worker_id: str


def state_change(event: Event) -> StateChange:
    data = event.data
    return StateChange(
        job_id=event.job_id,
        attempt=int(data.get("attempt", 0)),
        lease_epoch=int(data.get("lease_epoch", 0)),
        from_state=JobState[data["from_state"]],
        to_state=JobState[data["to_state"]],
        cause=Cause[
            data.get("cause", "TRANSITION_CAUSE_UNSPECIFIED").removeprefix("TRANSITION_CAUSE_")
        ],
        worker_id=data.get("worker_id", ""),
    )


@dataclass
class History:
    """Every job's state changes, and every worker's connections, in order."""

    changes: dict[str, list[StateChange]] = field(default_factory=dict)
    connections: list[tuple[str, datetime | None]] = field(default_factory=list)

    def connections_of(self, worker_id: str) -> int:
        """How many times a worker connected."""
        return sum(1 for worker, _ in self.connections if worker == worker_id)

    def attempt_ends(self, job_id: str) -> dict[int, StateChange]:
        """How each lease of the job ended (leaving RUNNING), by lease epoch."""
        return {
            change.lease_epoch: change
            for change in self.changes.get(job_id, [])
            if change.from_state is JobState.RUNNING and change.to_state is not JobState.RUNNING
        }

    def leases(self, job_id: str) -> list[StateChange]:
        """The job's LEASED changes, oldest first."""
        return [c for c in self.changes.get(job_id, []) if c.cause is Cause.LEASED]


async def history(client: Client, org: str | None = None) -> History:
    """Read every recorded event of an organisation (the default one) once."""
    found = History()
    async for event in client.events(org=org):
        if event.type == "job_state_changed":
            found.changes.setdefault(event.job_id, []).append(state_change(event))
        elif event.type == "worker_presence" and event.data.get("connected"):
            found.connections.append((event.data["worker_id"], event.time))
    return found


async def workers_back(
    client: Client, workers: Collection[str], since: datetime, timeout: float = 60.0
) -> None:
    """Wait until each of `workers` has connected at or after `since` (its
    worker_presence event says so), with no help from the test."""

    async def all_back() -> bool:
        try:
            back = {
                event.data["worker_id"]
                async for event in client.events(topic_prefix="workers/")
                if event.data.get("connected") and event.time is not None and event.time >= since
            }
        except (UnavailableError, DeadlineExceededError):
            return False
        return back >= set(workers)

    await eventually(all_back, timeout)


@dataclass(frozen=True, slots=True)
class Rerun:
    """A run of a job that was followed by another: how its attempt ended, and where it ran."""

    job_id: str
    attempt: int
    cause: Cause | None
    worker_id: str


@dataclass
class Audit:
    """The server's account of the acknowledged jobs held against the run log."""

    acknowledged: int
    runs: int
    lost: list[str]  # acknowledged, but absent or not finished
    failed: list[str]  # finished, but not SUCCEEDED
    extra: list[str]  # jobs the store holds that no acknowledged submit made
    never_ran: list[str]  # succeeded, but no run of its last attempt was recorded
    duplicates: dict[tuple[str, int], int]  # (job, attempt) that ran more than once
    reruns: list[Rerun]

    @property
    def unexplained_reruns(self) -> list[Rerun]:
        """Reruns whose earlier attempt did not end for a reason that justifies one."""
        return [rerun for rerun in self.reruns if rerun.cause not in RERUN_CAUSES]

    def rerun_causes(self) -> dict[str, int]:
        """How many reruns followed an attempt that ended for each cause."""
        counted = collections.Counter(r.cause.name if r.cause else "NONE" for r in self.reruns)
        return dict(sorted(counted.items()))

    def rerun_workers(self) -> dict[str, int]:
        """How many reruns followed an attempt on each worker."""
        return dict(sorted(collections.Counter(r.worker_id for r in self.reruns).items()))


async def audit(client: Client, acknowledged: Collection[str], runs: RunLog) -> Audit:
    """Check the acknowledged jobs (ids) against the store and the run log."""
    jobs: dict[str, Job] = {job.id: job async for job in client.list(page_size=1000)}
    past = await history(client)
    ran = runs.runs()
    attempts_run: dict[str, list[int]] = {}
    for job_id, attempt in sorted(ran):
        attempts_run.setdefault(job_id, []).append(attempt)
    reruns = []
    for job_id, attempts in attempts_run.items():
        ends = past.attempt_ends(job_id)
        epoch_of = {lease.attempt: lease.lease_epoch for lease in past.leases(job_id)}
        for attempt in attempts[:-1]:
            end = ends.get(epoch_of.get(attempt, -1))
            reruns.append(
                Rerun(job_id, attempt, end.cause if end else None, end.worker_id if end else "")
            )
    wanted = set(acknowledged)
    return Audit(
        acknowledged=len(wanted),
        runs=sum(ran.values()),
        lost=sorted(i for i in wanted if i not in jobs or not jobs[i].state.is_terminal),
        failed=sorted(
            i for i in wanted if i in jobs and jobs[i].state in (JobState.FAILED, JobState.CANCELED)
        ),
        extra=sorted(set(jobs) - wanted),
        never_ran=sorted(
            i
            for i in wanted
            if i in jobs and jobs[i].state is JobState.SUCCEEDED and (i, jobs[i].attempt) not in ran
        ),
        duplicates={pair: count for pair, count in ran.items() if count > 1},
        reruns=reruns,
    )


def assert_at_least_once_never_twice(found: Audit) -> None:
    """The guarantees every chaos test holds the server to: every acknowledged
    job succeeded, no submit made a second job, every success was a run of its
    command, no attempt ran twice, and every rerun followed a lost attempt."""
    assert (found.lost, found.failed, found.extra) == ([], [], []), "lost, failed, extra jobs"
    assert found.never_ran == [], "jobs succeeded without their command running"
    assert found.duplicates == {}, "attempts ran more than once"
    assert found.unexplained_reruns == [], "jobs ran again though their attempt was not lost"


# -- figures ----------------------------------------------------------------------


@dataclass
class Figures:
    """What one chaos test did and found, as docs/reliability.md records it."""

    test: str
    seed: int
    seconds: float
    kills: int
    acknowledged: int
    runs: int
    lost: int
    failed: int
    duplicates: int
    reruns: int
    rerun_causes: dict[str, int]
    rerun_workers: dict[str, int]
    duplicate_attempts: list[str]  # "JOB attempt N ran K times", to explain any duplicate
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, test: str, seed: int, started: float, kills: int, found: Audit, **details: Any
    ) -> Figures:
        return cls(
            test=test,
            seed=seed,
            seconds=round(time.monotonic() - started, 1),
            kills=kills,
            acknowledged=found.acknowledged,
            runs=found.runs,
            lost=len(found.lost),
            failed=len(found.failed),
            duplicates=len(found.duplicates),
            reruns=len(found.reruns),
            rerun_causes=found.rerun_causes(),
            rerun_workers=found.rerun_workers(),
            duplicate_attempts=[
                f"{job_id} attempt {attempt} ran {count} times"
                for (job_id, attempt), count in sorted(found.duplicates.items())
            ],
            details=details,
        )


def publish(figures: Figures | Mapping[str, Any]) -> None:
    """Print a test's figures and append them to $ZBRAIN_CHAOS_REPORT, one JSON object a line."""
    record = asdict(figures) if isinstance(figures, Figures) else dict(figures)
    line = json.dumps(record, sort_keys=False, default=str)
    print(f"chaos figures: {line}")
    target = os.environ.get(REPORT_VARIABLE)
    if target:
        with open(target, "a") as report:
            report.write(line + "\n")
