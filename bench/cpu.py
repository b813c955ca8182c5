"""Where a load's CPU goes: each process and thread, per job (or call).

    python -m bench.cpu submit [IN_FLIGHT]    # Submit from bench.load, 6 s
    python -m bench.cpu echo [IN_FLIGHT]      # the bare grpc.aio echo, 6 s
    python -m bench.cpu e2e [WORKERS]         # 20,000 no-op jobs, SDK workers
    python -m bench.cpu process [SLOTS]       # 2,000 `true` jobs, `serve --workers`

A developer's tool, not a figure of `make bench`: it starts a fresh server
(or the echo server), runs one load generator of `bench.load` against it,
and prints the user and system CPU time each thread of the server and of
its local workers (or of each SDK worker process) spent per job, read from
/proc before and after. A thread is named by its process, then "event
loop" for the main thread or the name the kernel knows it by (gRPC names
its own; Python's are all "python": in `zbrain serve` the one of the
lowest id after the loop is the SQLite writer), then its id. SDK workers
end with the load, so their last reading, taken every 0.2 s, misses their
last moments. A machine's load moves these figures: compare builds in
interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.run import ROOT, Server, cpu_times, free_port, run_load

# (pid, thread id) -> (the thread's name, user seconds, system seconds)
Times = dict[tuple[int, int], tuple[str, float, float]]


def threads(pid: int, label: str) -> Times:
    """The CPU time of each thread of a process; nothing if it has ended."""
    found: Times = {}
    try:
        tids = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return found
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        name = f"{label} {'event loop' if tid == pid else comm} {tid}"
        found[pid, tid] = (name, *cpu_times(stat))
    return found


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`: the workers a server or a load
    generator started, which no option names."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def report(before: Times, after: Times, jobs: float) -> None:
    print(f"{'thread':40} {'user':>8} {'system':>8}  ms per job")
    for key, (name, user, system) in after.items():
        _, user0, system0 = before.get(key, (name, 0.0, 0.0))
        per_job = ((user - user0) / jobs * 1e3, (system - system0) / jobs * 1e3)
        if sum(per_job) >= 0.005:
            print(f"{name:40} {per_job[0]:8.3f} {per_job[1]:8.3f}")


@contextmanager
def target(mode: str) -> Iterator[tuple[str, int]]:
    """A fresh `zbrain serve`, or the bare echo server: its address and pid."""
    if mode == "submit":
        with Server() as server:
            assert server.process is not None
            yield server.address, server.process.pid
        return
    port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "bench.load", "echo-server", str(port)], cwd=ROOT
    )
    try:
        while True:  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if echo.poll() is not None:
                raise RuntimeError(f"the echo server exited with status {echo.returncode}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", echo.pid
    finally:
        echo.terminate()
        echo.wait()


def measure_calls(mode: str, in_flight: int) -> None:
    """Submit or echo calls, `in_flight` at a time, for 6 s."""
    seconds = 6.0
    with target(mode) as (address, pid):
        before = threads(pid, "server")
        load = "submit" if mode == "submit" else "echo-unary"
        result = run_load(load, address, str(in_flight), str(seconds))
        after = threads(pid, "server")
    print(json.dumps(result))
    report(before, after, result["rate"] * seconds)


def measure_jobs(mode: str, count: int) -> None:
    """`count` SDK workers through 20,000 no-op jobs, or a local process
    worker of `count` slots through 2,000 `true` jobs."""
    jobs = 20_000 if mode == "e2e" else 2_000
    args = ("--workers", str(count)) if mode == "process" else ()
    with Server(*args) as server:
        assert server.process is not None
        pid = server.process.pid
        local = children(pid)
        deadline = time.monotonic() + 30
        while mode == "process" and not local:  # until the server has started it
            if time.monotonic() > deadline:
                raise RuntimeError("the server started no local worker within 30 s")
            time.sleep(0.05)
            local = children(pid)
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.load", *_load(mode, server.address, count, jobs)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        before = threads(pid, "server")
        for number, child in enumerate(local):
            before |= threads(child, f"worker {number}")
        sdk: Times = {}  # each SDK worker thread's last reading: they end with the load
        numbers: dict[int, int] = {}  # an SDK worker's pid -> its number, in order seen
        while load.poll() is None:
            for child in children(load.pid):
                number = numbers.setdefault(child, len(numbers))
                sdk |= threads(child, f"worker {number}")
            time.sleep(0.2)
        after = threads(pid, "server")
        for number, child in enumerate(local):
            after |= threads(child, f"worker {number}")
    after |= sdk
    assert load.stdout is not None
    print(load.stdout.read().strip())
    report(before, after, jobs)


def _load(mode: str, address: str, count: int, jobs: int) -> list[str]:
    """The arguments of `bench.load` for the mode (its own names differ)."""
    if mode == "e2e":
        return ["e2e", address, str(count), str(jobs)]
    return ["e2e-process", address, str(jobs)]


def _positive(text: str) -> int:
    number = int(text) if text.isdigit() else 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, not {text!r}")
    return number


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__)
    parser.add_argument("load", choices=["submit", "echo", "e2e", "process"])
    parser.add_argument("count", nargs="?", type=_positive, help="in flight, SDK workers or slots")
    args = parser.parse_args()
    if args.load in ("submit", "echo"):
        measure_calls(args.load, args.count or 1)
    else:
        measure_jobs(args.load, args.count or (8 if args.load == "e2e" else 2))


if __name__ == "__main__":
    main()
