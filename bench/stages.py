"""Where the time of `submit to start` goes, stage by stage.

    python -m bench.stages [PROBES]

A developer's tool, not a figure of `make bench`: it starts `zbrain serve`
and an SDK worker (default settings, an org of their own) with a few of
their functions wrapped to note `time.perf_counter()` as a probe passes (one
clock for every process of a machine), sends PROBES submits through
`zbrain.Client` one at a time, each 10 ms after the last one started, as
`bench.load submit-to-start` does, and prints each stage's median time from
just before `Client.submit`. The wrapped functions are private ones: when
they move, this tool fails at start, naming the one it cannot find, rather
than printing wrong stages.
The notes cost a few microseconds each, so the total reads a little above
the bench's figure.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

_notes: int | None = None  # the notes file, shared by the three processes
PROBE_ORG = "start-probe"  # the org bench.load's start-worker serves


def note(stage: str, at: float | None = None) -> None:
    """That a probe passed `stage` now (or `at`, a `time.perf_counter()` read elsewhere)."""
    global _notes
    if _notes is None:
        _notes = os.open(os.environ["ZBRAIN_STAGES_FILE"], os.O_WRONLY | os.O_APPEND)
    when = time.perf_counter() if at is None else at
    os.write(_notes, f"{stage} {when:.7f}\n".encode())


def _around(owner: Any, name: str, before: str | None, after: str | None) -> None:
    """Wrap the coroutine function `owner.name` with notes before and after it."""
    inner = getattr(owner, name)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            note(before)
        result = await inner(*args, **kwargs)
        if after:
            note(after)
        return result

    setattr(owner, name, wrapped)


def _before(owner: Any, name: str, stage: str) -> None:
    """Wrap the plain function `owner.name` with a note before it."""
    inner = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        note(stage)
        return inner(*args, **kwargs)

    setattr(owner, name, wrapped)


class _NotedConnection:
    """A SQLite connection that notes when its transaction's COMMIT starts."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            note("server: COMMIT (fsync) starts")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _serve(args: list[str]) -> None:
    from zbrain.cli import main
    from zbrain_server.rpc import api, telemetry, worker_service
    from zbrain_server.store.sqlite import driver

    inner_intercept = telemetry._RpcInterceptor.intercept_service

    async def intercept(self: Any, continuation: Any, details: Any) -> Any:
        if str(details.method).endswith("/Submit"):
            note("server: first interceptor")
        return await inner_intercept(self, continuation, details)

    telemetry._RpcInterceptor.intercept_service = intercept  # type: ignore[method-assign]
    _around(api.Api, "submit", "server: Submit handler", "server: answer returned to gRPC")
    _around(
        driver.SqliteDriver,
        "run_group",
        "server: group handed to the writer",
        "server: loop has the commit",
    )
    inner_group = driver.SqliteDriver._run_group

    def run_group(self: Any, db: Any, program: Any) -> Any:
        note("server: writer thread starts the transaction")
        result = inner_group(self, _NotedConnection(db), program)  # type: ignore[arg-type]
        note("server: writer thread committed")
        return result

    driver.SqliteDriver._run_group = run_group  # type: ignore[method-assign]
    _before(worker_service, "_to_responses", "server: lease written to the worker's stream")
    sys.argv = ["zbrain", "serve", *args]
    main()


async def _work(address: str) -> None:
    """`bench.load`'s worker for submit to start, with its lease's way noted."""
    from bench.load import start_worker
    from zbrain.worker import _worker

    inner_handle = _worker.Worker._handle

    def handle(self: Any, message: Any) -> None:
        if message.WhichOneof("message") in ("lease", "leases"):
            note("worker: lease read")
        inner_handle(self, message)

    _worker.Worker._handle = handle  # type: ignore[method-assign]
    inner_start = _worker.Worker._start

    def start(self: Any, lease: Any) -> None:
        inner_start(self, lease)
        note("worker: attempt's task made")

    _worker.Worker._start = start  # type: ignore[method-assign]
    await start_worker(address)


async def _probe(address: str, count: int, started: Callable[[], str]) -> None:
    """One probe at a time: the next only once the worker said the last started."""
    from zbrain import Client, _coalesce

    _around(_coalesce.SubmitCoalescer, "_alone", "client: Submit call made", None)
    async with await Client.connect(address) as client:
        for probe in range(count):
            note("client: before Client.submit")
            await client.submit(["true"], input=probe, org=PROBE_ORG)
            note("client: Client.submit returned")
            # The worker prints the probe's number and when its function began.
            number, began = (await asyncio.wait_for(asyncio.to_thread(started), 10)).split()
            assert int(number) == probe, number
            note("worker: the function's first statement", float(began))
            await asyncio.sleep(0.01)  # the worker has reported and is idle again


def _report(path: Path, skip: int) -> None:
    """Each stage's median offset from the probe's start, in time order."""
    notes = sorted(
        (float(line.rsplit(" ", 1)[1]), line.rsplit(" ", 1)[0])
        for line in path.read_text().splitlines()
    )
    probes: list[dict[str, float]] = []
    for at, stage in notes:
        if stage == "client: before Client.submit":
            probes.append({})
        if probes and stage not in probes[-1]:  # the first of each stage per probe
            probes[-1][stage] = at
    offsets: dict[str, list[float]] = defaultdict(list)
    for probe in probes[skip:]:
        start = probe["client: before Client.submit"]
        for stage, at in probe.items():
            offsets[stage].append((at - start) * 1000)
    print(f"{'stage':50} {'p50 ms':>7} {'p90 ms':>7}")
    for stage, values in sorted(offsets.items(), key=lambda item: statistics.median(item[1])):
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"{stage:50} {statistics.median(values):7.3f} {p90:7.3f}")


def _started(process: subprocess.Popen[str], sign: str, log: Path) -> str:
    """The first line of `process` matching `sign`; SystemExit with the end of
    its log (a wrapped function gone, say) when it ends before one."""
    assert process.stdout is not None
    for line in process.stdout:
        if found := re.search(sign, line):
            return found.group(1)
    raise SystemExit(f"{log.stem} ended before it was ready:\n{log.read_text()[-3000:]}")


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "serve":
        _serve(sys.argv[2:])
        return
    if mode == "worker":
        asyncio.run(_work(sys.argv[2]))
        return
    count = int(mode or 300)
    with tempfile.TemporaryDirectory(prefix="zbrain-stages-") as name:
        folder = Path(name)
        notes = folder / "notes"
        notes.touch()
        os.environ["ZBRAIN_STAGES_FILE"] = str(notes)
        here = [sys.executable, "-m", "bench.stages"]
        processes: list[subprocess.Popen[str]] = []

        def start(*args: str) -> tuple[subprocess.Popen[str], Path]:
            log = folder / f"{args[0]}.log"
            with log.open("w") as errors:
                process = subprocess.Popen(
                    [*here, *args], stdout=subprocess.PIPE, stderr=errors, text=True
                )
            processes.append(process)
            return process, log

        try:
            server, log = start("serve", "--listen", "127.0.0.1:0", "--data-dir", f"{name}/data")
            address = _started(server, r"listening on (\S+)", log)
            worker, log = start("worker", address)
            _started(worker, r"^(ready)$", log)
            assert worker.stdout is not None
            asyncio.run(_probe(address, count, worker.stdout.readline))
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(30)
        _report(notes, skip=min(10, count // 10))


if __name__ == "__main__":
    main()
