"""Lost wake-ups: jobs that wait for the safety-net tick instead of a kick.

    python -m bench.wakeups [JOBS] [--replicas] [--in-flight N] [--seed S]

A developer's tool, not a figure of `make bench`. The dispatcher hands a job
to a worker when something kicks it (a submit, a freed slot, a retry or a
delay falling due, another replica's commit); the tick every poll interval
(a second by default) is only a safety net, so a missed kick costs a user
up to a second and shows in no test that waits for its job. Here the tick
is a minute apart: a missed kick shows as a job taking tens of seconds.

It starts one SQLite server, or with --replicas two servers sharing
PostgreSQL ($ZBRAIN_BENCH_POSTGRES) with jobs submitted through the first
and every worker connected to the second (so each job reaches them through
the other replica's commit); three workers of two slots each: an echo
worker without labels, an echo worker with gpu=1 and a process worker with
kind=proc. Then JOBS jobs (default 2,000), one at a time (or N: a job
alone is woken by nothing but the kick it needs, and waits the whole tick
without it; jobs in flight together kick each other), each one of: a
plain job, one requiring gpu=1, one delayed by 50-500 ms, a command on
the process worker that fails its first attempt (retried after the
backoff), one depending on a job requiring gpu=1 (submitted just before
it), and one of a concurrency key of limit 1. It prints every job that
took longer than its allowance, and exits 1 if any did, with the seed that
replays the kinds it chose. Races show under load: run it beside `make
test`, as docs/reliability.md ("Lost wake-ups") did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.run import Server, replicas
from zbrain import Client, JobState

TICK = {"ZBRAIN_POLL_INTERVAL": "60s"}
ALLOWANCE_S = 5.0  # from submit to finish; a missed kick costs a minute
RETRIED_ALLOWANCE_S = 8.0  # and a backoff of at most two seconds before the retry
WORKERS = {
    "plain": ["--mode", "echo"],
    "gpu": ["--mode", "echo", "--label", "gpu=1"],
    "proc": ["--label", "kind=proc"],
}


@contextlib.contextmanager
def servers(replicated: bool) -> Iterator[tuple[str, str]]:
    """The address to submit through and the one the workers connect to."""
    if replicated:
        with replicas(2, env=TICK) as addresses:
            first, second = addresses.split(",")
            yield first, second
    else:
        with Server(env=TICK) as server:
            yield server.address, server.address


@contextlib.contextmanager
def workers(address: str, folder: Path) -> Iterator[None]:
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "zbrain", "worker", "--server", address, "--id", name,
             "--concurrency", "2", "--temp-dir", str(folder / name), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, args in WORKERS.items()
    ]  # fmt: skip
    try:
        yield
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(30)


async def one(client: Client, number: int, marks: Path) -> str | None:
    """Run one job of a random kind; what went wrong, or None."""
    kind = random.choice(["plain", "gpu", "delayed", "retried", "child", "keyed"])
    options: dict[str, Any] = {}
    command = ["echo"]
    allowance = ALLOWANCE_S
    if kind == "gpu":
        options["requires"] = {"gpu": "1"}
    elif kind == "delayed":
        options["delay"] = random.uniform(0.05, 0.5)
    elif kind == "child":  # released by its parent's result, on another worker
        parent = await client.submit(["echo"], requires={"gpu": "1"})
        options["depends_on"] = [parent.id]
    elif kind == "keyed":  # one at a time with the other keyed jobs
        options["concurrency_key"] = "k"
    elif kind == "retried":
        mark = marks / str(number)
        command = ["sh", "-c", f"test -e {mark} || {{ touch {mark}; exit 1; }}"]
        options.update(requires={"kind": "proc"}, max_retries=2)
        allowance = RETRIED_ALLOWANCE_S
    job = await client.submit(command, **options)
    try:
        done = await client.wait(job.id, timeout=allowance + options.get("delay", 0))
    except TimeoutError:
        late = await client.get(job.id)
        return f"{kind} job {job.id} still {late.state.name} after {allowance:.0f} s"
    if done.state is not JobState.SUCCEEDED:
        return f"{kind} job {job.id} {done.state.name}: {done.last_error}"
    return None


async def hunt(address: str, work_at: str, count: int, in_flight: int, marks: Path) -> list[str]:
    room = asyncio.Semaphore(in_flight)

    async def limited(number: int) -> str | None:
        async with room:
            problem = await one(client, number, marks)
        if problem:
            print(problem, flush=True)
        return problem

    # Every worker connected first, or the first jobs wait for them.
    async with await Client.connect(work_at) as watcher:
        while len(await watcher.workers()) < len(WORKERS):  # noqa: ASYNC110 - asked of the server
            await asyncio.sleep(0.1)
    async with await Client.connect(address) as client:
        found = await asyncio.gather(*(limited(number) for number in range(count)))
    return [problem for problem in found if problem]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__)
    parser.add_argument("jobs", nargs="?", type=int, default=2000)
    parser.add_argument("--replicas", action="store_true", help="two servers on PostgreSQL")
    parser.add_argument("--in-flight", type=int, default=1, metavar="N", help="jobs at once")
    parser.add_argument("--seed", type=int, help="replay the kinds of an earlier run")
    args = parser.parse_args()
    seed = random.randrange(2**32) if args.seed is None else args.seed
    random.seed(seed)
    print(f"seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="zbrain-wakeups-") as scratch:
        folder = Path(scratch)
        (folder / "marks").mkdir()
        with servers(args.replicas) as (submit_to, work_at), workers(work_at, folder):
            problems = asyncio.run(
                hunt(submit_to, work_at, args.jobs, args.in_flight, folder / "marks")
            )
    print(f"{args.jobs} jobs, {len(problems)} late or failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
