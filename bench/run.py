"""ZBrain benchmarks: real server, separate client and worker processes, one table.

    python -m bench.run            # the full suite (make bench)
    python -m bench.run --tiny     # a few hundred jobs, to prove every figure is produced

Each figure is the median of --repeat runs with its spread (min..max), and is
also given as a ratio to a bare grpc.aio echo server measured in the same run,
because absolute numbers drift on a shared machine. Results are printed as a
table and written as JSON to bench/results/. No assertion is made about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import functools
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POSTGRES = os.environ.get("ZBRAIN_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Figure:
    """One measured quantity over several runs."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    ceiling: float | None = None  # the same quantity for the bare echo server

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def row(self) -> list[str]:
        spread = f"{min(self.values):,.1f}..{max(self.values):,.1f}"
        ratio = f"{self.median / self.ceiling:.2f}" if self.ceiling else "-"
        return [self.name, f"{self.median:,.1f}", self.unit, spread, ratio]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_load(*args: str, module: str = "bench.load") -> dict[str, Any]:
    """Run one load generator in its own process and return what it measured."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def cpu_times(stat: str) -> tuple[float, float]:
    """User and system seconds from the text of a /proc/…/stat file (of a
    process or of one of its threads)."""
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


class Server:
    """A `zbrain serve` process on a fresh data directory (SQLite, default durability)."""

    def __init__(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data = tempfile.mkdtemp(prefix="zbrain-bench-")
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.address = ""

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zbrain",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                self.data,
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            found = re.search(r"listening on (\S+)", line)
            if found:
                self.address = found.group(1)
                return self
        raise RuntimeError("server did not start")

    def rss_mb(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def cpu_s(self) -> float:
        """CPU time the server process has used so far (user + system)."""
        assert self.process is not None
        return sum(cpu_times(Path(f"/proc/{self.process.pid}/stat").read_text()))

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", self.data], check=False)


async def _postgres(statement: str | None = None) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES, timeout=5)
    try:
        if statement:
            await conn.execute(statement)
    finally:
        await conn.close()


def postgres_problem() -> str | None:
    """Why the PostgreSQL figures cannot be measured here, or None if they can."""
    try:
        asyncio.run(_postgres())
    except Exception as exc:  # any failure to connect means: no PostgreSQL figures
        return f"{type(exc).__name__}: {exc}"
    return None


@contextlib.contextmanager
def replicas(count: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """`count` servers over one fresh PostgreSQL schema (with `env` added to
    their environment); yields their addresses, comma-joined; the schema is
    dropped afterwards."""
    schema = f"zbrain_bench_{uuid.uuid4().hex[:12]}"
    try:
        with contextlib.ExitStack() as servers:
            started = [
                servers.enter_context(Server("--store", f"{POSTGRES}?schema={schema}", env=env))
                for _ in range(count)
            ]
            yield ",".join(server.address for server in started)
    finally:
        asyncio.run(_postgres(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def dispatch_under_submit_load(probes: str) -> dict[str, Any]:
    """Dispatch latency on a new server while another process keeps 64 Submits
    in flight; the probe worker serves an org of its own."""
    with Server() as server:
        flood = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "submit", server.address, "64", "600"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(1.0)  # the flood is at full speed before measuring
            result = run_load("dispatch", server.address, probes, "probe")
            if flood.poll() is not None:
                raise RuntimeError(
                    f"the Submit flood ended early:\n{flood.communicate()[1][-3000:]}"
                )
            return result
        finally:
            flood.terminate()
            flood.wait(30)


def on_fresh_server(server_args: tuple[str, ...], mode: str, *args: str) -> dict[str, Any]:
    """One run of a load generator against a new server: end-to-end runs count
    completions from the start of the event log, so each needs an empty store."""
    with Server(*server_args) as server:
        return run_load(mode, server.address, *args)


def measure(
    repeat: int, once: Callable[[], dict[str, Any]], keys: dict[str, tuple[str, str]]
) -> list[Figure]:
    figures = {key: Figure(name, unit) for key, (name, unit) in keys.items()}
    for _ in range(repeat):
        result = once()
        for key, figure in figures.items():
            figure.values.append(float(result[key]))
    return list(figures.values())


def suite(tiny: bool, repeat: int, sections: set[str]) -> list[Figure]:
    seconds = "1" if tiny else "4"
    figures: list[Figure] = []

    # The ceiling: a bare grpc.aio unary echo and server-streaming, same message sizes.
    echo_port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "bench.load", "echo-server", str(echo_port)], cwd=ROOT
    )
    time.sleep(1.0)
    try:
        ceiling_unary = measure(
            repeat,
            lambda: run_load("echo-unary", f"127.0.0.1:{echo_port}", "64", seconds),
            {"rate": ("echo unary @64 (ceiling)", "calls/s")},
        )[0]
        ceiling_stream = measure(
            repeat,
            lambda: run_load(
                "echo-stream", f"127.0.0.1:{echo_port}", "10", "2000" if tiny else "40000"
            ),
            {"rate": ("echo server-stream x10 (ceiling)", "msgs/s")},
        )[0]
        relay = measure(
            repeat,
            lambda: run_load("echo-relay", f"127.0.0.1:{echo_port}", "50" if tiny else "500"),
            {
                "p50_ms": ("echo relay from idle p50, one fsync (floor)", "ms"),
                "p99_ms": ("echo relay from idle p99, one fsync (floor)", "ms"),
            },
        )
    finally:
        echo.terminate()
        echo.wait()
    figures += [ceiling_unary, ceiling_stream, *relay]
    if "sqlite" in sections:
        figures += embedded(tiny, repeat, ceiling_unary, ceiling_stream, relay)
        figures += workflows(tiny, repeat)
        figures += http_edge(tiny, repeat, ceiling_unary)
    if "cli" in sections:
        figures += command_line(tiny, repeat)
    if "postgresql" in sections:
        figures += replicated(tiny, repeat, ceiling_unary)
    return figures


def embedded(
    tiny: bool, repeat: int, ceiling_unary: Figure, ceiling_stream: Figure, relay: list[Figure]
) -> list[Figure]:
    """Every figure of the performance issue, on one server with its SQLite store."""
    seconds = "1" if tiny else "4"
    jobs = 300 if tiny else 20_000
    figures: list[Figure] = []
    with Server() as server:
        for inflight in ("1", "16", "64", "256"):
            rate, p50, p99 = measure(
                repeat,
                functools.partial(run_load, "submit", server.address, inflight, seconds),
                {
                    "rate": (f"Submit @{inflight} in flight", "jobs/s"),
                    "p50_ms": (f"Submit @{inflight} p50", "ms"),
                    "p99_ms": (f"Submit @{inflight} p99", "ms"),
                },
            )
            rate.ceiling = ceiling_unary.median if inflight == "64" else None
            figures += [rate, p50, p99]
        rate, p50, p99 = measure(
            repeat,
            functools.partial(run_load, "client-submit", server.address, "64", seconds),
            {
                "rate": ("Submit @64 through zbrain.Client", "jobs/s"),
                "p50_ms": ("Submit @64 through zbrain.Client p50", "ms"),
                "p99_ms": ("Submit @64 through zbrain.Client p99", "ms"),
            },
        )
        rate.ceiling = ceiling_unary.median
        figures += [rate, p50, p99]
        for size in ("100", "1000"):
            figures += measure(
                repeat,
                functools.partial(run_load, "batch", server.address, size, "3" if tiny else "20"),
                {"rate": (f"SubmitBatch x{size}", "jobs/s")},
            )
        figures.append(Figure("server RSS after submits", "MB", [server.rss_mb()]))

    probes = "50" if tiny else "500"
    with Server() as server:
        started = measure(
            repeat,
            lambda: run_load("submit-to-start", server.address, probes),
            {
                "p50_ms": ("submit to start p50 (Client to SDK worker, idle)", "ms"),
                "p99_ms": ("submit to start p99", "ms"),
            },
        )
    # A latency's ratio to its floor: how many times the bare relay's time it takes.
    for figure, floor in zip(started, relay, strict=True):
        figure.ceiling = floor.median
    figures += started
    with Server() as server:
        figures += measure(
            repeat,
            lambda: run_load("dispatch", server.address, probes),
            {
                "p50_ms": ("dispatch latency p50 (idle worker)", "ms"),
                "p99_ms": ("dispatch latency p99", "ms"),
            },
        )
    figures += measure(
        repeat,
        functools.partial(
            on_fresh_server, (), "fairness", "300" if tiny else "20000", "20" if tiny else "200"
        ),
        {
            "p50_ms": ("small org's dispatch p50, big org 20k queued (fairness)", "ms"),
            "p99_ms": ("small org's dispatch p99, big org 20k queued (fairness)", "ms"),
        },
    )
    figures += measure(
        repeat,
        functools.partial(
            on_fresh_server,
            (),
            "fairness",
            "300" if tiny else "20000",
            "20" if tiny else "200",
            "key",
        ),
        {
            "p50_ms": ("small key's dispatch p50, big key 20k queued (key fairness)", "ms"),
            "p99_ms": ("small key's dispatch p99, big key 20k queued (key fairness)", "ms"),
        },
    )
    figures += measure(
        repeat,
        functools.partial(dispatch_under_submit_load, probes),
        {
            "p50_ms": ("dispatch latency p50, server saturated by Submit @64", "ms"),
            "p99_ms": ("dispatch latency p99, server saturated by Submit @64", "ms"),
        },
    )

    for workers in ("2", "8"):
        figures += measure(
            repeat,
            functools.partial(on_fresh_server, (), "e2e", workers, str(jobs)),
            {"rate": (f"end-to-end no-op, {workers} SDK workers", "jobs/s")},
        )
    spawn_ceiling = measure(
        repeat,
        functools.partial(run_load, "spawn-ceiling", seconds),
        {"rate": ("spawn /bin/true from one Python process (ceiling)", "spawns/s")},
    )
    figures += spawn_ceiling
    # Two slots: `zbrain worker`'s default (one per CPU) on the 2-core machine
    # of docs/performance.md; its figure keeps the name earlier runs gave it.
    # Sixteen: the setting docs/workers.md gives for short commands.
    for slots, label in (("2", ""), ("16", ", 16 slots")):
        process_rate = measure(
            repeat,
            functools.partial(
                on_fresh_server,
                ("--workers", slots),
                "e2e-process",
                str(min(jobs, 100 if tiny else 2000)),
            ),
            {"rate": (f"end-to-end `true`, local process worker{label}", "jobs/s")},
        )
        process_rate[0].ceiling = spawn_ceiling[0].median
        figures += process_rate

    with Server() as server:
        for subscribers in ("1", "10"):
            fan = measure(
                repeat,
                functools.partial(
                    run_load, "events", server.address, subscribers, "2000" if tiny else "20000"
                ),
                {
                    "rate": (f"StreamEvents fan-out x{subscribers}", "events/s"),
                    "p99_ms": (f"StreamEvents x{subscribers} p99 delivery", "ms"),
                },
            )
            if subscribers == "10":
                fan[0].ceiling = ceiling_stream.median
            figures += fan
        figures += measure(
            repeat,
            lambda: run_load("logs", server.address, "5000" if tiny else "200000"),
            {"rate": ("log lines ingested from one worker", "lines/s")},
        )
    for prefill in ("1000", "10000") if tiny else ("10000", "1000000"):
        with Server(env={"ZBRAIN_MAX_PENDING_PER_ORG": "10000000"}) as server:
            result = run_load("growth", server.address, prefill)
            figures += [
                Figure(f"Get p99 with {int(prefill):,} jobs stored", "ms", [result["get_p99_ms"]]),
                Figure(
                    f"List first page p99 with {int(prefill):,} jobs", "ms", [result["list_p99_ms"]]
                ),
                Figure(
                    f"Submit @64 with {int(prefill):,} jobs stored",
                    "jobs/s",
                    [result["submit_rate"]],
                ),
                Figure(f"server RSS with {int(prefill):,} jobs stored", "MB", [server.rss_mb()]),
            ]

    with Server() as server:
        holder = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "workers", server.address, "100", "8"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(6)
        figures.append(Figure("server RSS with 100 connected workers", "MB", [server.rss_mb()]))
        holder.wait(60)
    return figures


def workflows(tiny: bool, repeat: int) -> list[Figure]:
    """Dependencies and delayed jobs (bench/workflows.py), each on a new server."""
    run = functools.partial(run_load, module="bench.workflows")
    figures: list[Figure] = []
    with Server() as server:
        figures += measure(
            repeat,
            lambda: run("release", server.address, "20" if tiny else "300"),
            {
                "p50_ms": ("graph: parent's finish to child's start p50", "ms"),
                "p99_ms": ("graph: parent's finish to child's start p99", "ms"),
            },
        )
    with Server() as server:
        figures += measure(
            repeat,
            lambda: run("delayed", server.address, "20" if tiny else "200"),
            {
                "p50_ms": ("delayed job: start after its time p50", "ms"),
                "p99_ms": ("delayed job: start after its time p99", "ms"),
            },
        )
    with Server() as server:
        figures += measure(
            repeat,
            lambda: run("cancel-chain", server.address, "100" if tiny else "10000"),
            {"cancel_ms": ("graph: cancel the root of a 10,000-deep chain", "ms")},
        )
    if not tiny:
        figures += measure(
            repeat,
            functools.partial(on_fresh_workflow_server, "graphs"),
            {
                "fan_rate": ("graph: 1,000-job fan-out and fan-in", "jobs/s"),
                "chain_rate": ("graph: 1,000-deep chain", "jobs/s"),
            },
        )
    return figures


def command_line(tiny: bool, repeat: int) -> list[Figure]:
    """How long the `zbrain` command takes, start to exit, as a shell runs it:
    the median of several runs of `--help`, `get` and `list`, and one
    `submit --batch` of 200 jobs (issue 17: a shell loop of 200 submits took 70 s)."""
    zbrain = str(Path(sys.executable).parent / "zbrain")
    runs = 3 if tiny else 20
    # pip compiles an installed client's bytecode; a checkout, installed
    # editable, has it written by its first run, unless the environment says
    # PYTHONDONTWRITEBYTECODE: then every start compiled every module again
    # (20 ms of `zbrain get`), which no installed `zbrain` does.
    compileall.compile_dir(ROOT / "clients" / "python" / "zbrain", quiet=1)

    def timed(*args: str, stdin: str | None = None) -> tuple[float, float]:
        """Wall and CPU (user + system) milliseconds of one run: the CPU
        figure moves less when other processes share the machine."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(
            [zbrain, *args], input=stdin, capture_output=True, text=True, check=True, env=env
        )
        wall = (time.perf_counter() - started) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
        return wall, cpu

    figures: list[Figure] = []
    with Server() as server:
        env = {**os.environ, "ZBRAIN_SERVER": server.address}
        job_id = subprocess.run(
            [zbrain, "submit", "--", "true"], capture_output=True, text=True, check=True, env=env
        ).stdout.strip()
        batch = "".join(f'{{"cmd": ["echo", "{n}"]}}\n' for n in range(200))
        for name, args, stdin in (
            ("CLI: zbrain --help, start to exit", ("--help",), None),
            ("CLI: zbrain get ID, start to exit", ("get", job_id), None),
            ("CLI: zbrain list, start to exit", ("list",), None),
            ("CLI: submit --batch of 200 jobs", ("submit", "--batch", "-"), batch),
        ):
            wall, cpu = Figure(name, "ms"), Figure(f"{name} (CPU)", "ms")
            for _ in range(repeat):
                samples = [timed(*args, stdin=stdin) for _ in range(1 if stdin else runs)]
                wall.values.append(statistics.median(w for w, _ in samples))
                cpu.values.append(statistics.median(c for _, c in samples))
            figures += [wall, cpu]
    return figures


def submit_while_watched(server: Server, url: str, watchers: str, seconds: str) -> dict[str, Any]:
    """Submit @64 over gRPC while `watchers` WebSockets (another process) follow
    every event; with what the slowest watcher received and the server's CPU
    seconds during the submits."""
    watching = subprocess.Popen(
        [sys.executable, "-m", "bench.http", "watchers", url, watchers, str(float(seconds) + 1)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stdout is not None
    try:
        if watching.stdout.readline().strip() != "ready":
            problem = watching.communicate()[1][-3000:]
            raise RuntimeError(f"the watchers did not connect:\n{problem}")
        begun = server.cpu_s()
        result = run_load("submit", server.address, "64", seconds)
        result["cpu_s"] = server.cpu_s() - begun
        out, err = watching.communicate(timeout=120)
        if watching.returncode != 0:
            raise RuntimeError(f"the watchers failed:\n{err[-3000:]}")
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait()
    result.update(json.loads(out.strip().splitlines()[-1]))
    return result


def http_edge(tiny: bool, repeat: int, ceiling_unary: Figure) -> list[Figure]:
    """The HTTP/JSON API's Submit rate, and what 100 WebSocket watchers
    following every event cost gRPC Submit (runs alternate, on one server)."""
    seconds = "1" if tiny else "4"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"ZBRAIN_MAX_STREAMS_PER_CLIENT": "1000"}
    figures: list[Figure] = []
    with Server("--http-listen", f"127.0.0.1:{port}", env=env) as server:
        rate, p50, p99 = measure(
            repeat,
            functools.partial(run_load, "submit", url, "64", seconds, module="bench.http"),
            {
                "rate": ("HTTP/JSON Submit @64 in flight", "jobs/s"),
                "p50_ms": ("HTTP/JSON Submit @64 p50", "ms"),
                "p99_ms": ("HTTP/JSON Submit @64 p99", "ms"),
            },
        )
        rate.ceiling = ceiling_unary.median
        figures += [rate, p50, p99]
        alone = Figure("Submit @64, no WebSocket watchers", "jobs/s")
        watched = Figure("Submit @64, 100 WebSocket watchers following events", "jobs/s")
        delivered = Figure("events the slowest of 100 watchers received per job submitted", "x")
        cost_alone, cost_watched = [], []  # server CPU ms per job submitted
        for _ in range(repeat):
            begun = server.cpu_s()
            rate = run_load("submit", server.address, "64", seconds)["rate"]
            alone.values.append(rate)
            cost_alone.append((server.cpu_s() - begun) * 1000 / (rate * float(seconds)))
            result = submit_while_watched(server, url, "100", seconds)
            watched.values.append(result["rate"])
            submitted = result["rate"] * float(seconds)
            cost_watched.append(result["cpu_s"] * 1000 / submitted)
            delivered.values.append(result["events_each_min"] / submitted)
        slowdown = Figure(
            "Submit slowdown from 100 WebSocket watchers",
            "%",
            [100 * (1 - w / a) for a, w in zip(alone.values, watched.values, strict=True)],
        )
        # The rate moves with whatever else the machine runs; the server's own
        # CPU time per job is the steadier measure of what the watchers cost.
        added = Figure(
            "server CPU per Submit added by 100 WebSocket watchers",
            "%",
            [100 * (w / a - 1) for a, w in zip(cost_alone, cost_watched, strict=True)],
        )
        figures += [alone, watched, slowdown, added, delivered]
    return figures


def on_fresh_workflow_server(mode: str, *args: str) -> dict[str, Any]:
    with Server() as server:
        return run_load(mode, server.address, *args, module="bench.workflows")


def e2e_on_fresh_replicas(count: int, jobs: str) -> dict[str, Any]:
    """One end-to-end run with 8 SDK workers over `count` replicas of a new schema."""
    with replicas(count) as addresses:
        return run_load("e2e", addresses, "8", jobs)


def replicated(tiny: bool, repeat: int, ceiling_unary: Figure) -> list[Figure]:
    """Submit and end-to-end throughput with 1 and 2 replicas over one PostgreSQL."""
    seconds = "1" if tiny else "4"
    jobs = 300 if tiny else 20_000
    figures: list[Figure] = []
    problem = postgres_problem()
    if problem is None:
        for count in (1, 2):
            with replicas(count) as addresses:
                rate, p99 = measure(
                    repeat,
                    functools.partial(run_load, "submit", addresses, "64", seconds),
                    {
                        "rate": (f"PostgreSQL x{count} replicas: Submit @64", "jobs/s"),
                        "p99_ms": (f"PostgreSQL x{count} replicas: Submit @64 p99", "ms"),
                    },
                )
                rate.ceiling = ceiling_unary.median
                figures += [rate, p99]
            figures += measure(
                repeat,
                functools.partial(e2e_on_fresh_replicas, count, str(jobs)),
                {
                    "rate": (
                        f"PostgreSQL x{count} replicas: end-to-end, 8 SDK workers",
                        "jobs/s",
                    )
                },
            )
    else:
        print(f"PostgreSQL figures not measured: {problem}", file=sys.stderr)
        if os.environ.get("CI") == "true":  # CI must measure them: report them missing
            figures.append(Figure("PostgreSQL replicas", "-"))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a few hundred jobs: proves every figure is produced"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument(
        "--only",
        choices=("sqlite", "postgresql", "cli"),
        help="only the embedded SQLite figures, the PostgreSQL replica figures, or the "
        "command line's",
    )
    args = parser.parse_args()
    started = time.time()
    sections = {args.only} if args.only else {"sqlite", "postgresql", "cli"}
    figures = suite(args.tiny, 1 if args.tiny else args.repeat, sections)
    headers = ["figure", "median", "unit", "spread (min..max)", "ratio to ceiling/floor"]
    rows = [f.row() for f in figures]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-tiny' if args.tiny else ''}.json"
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "machine": f"{os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().machine}",
                "tiny": args.tiny,
                "seconds": round(time.time() - started, 1),
                "figures": [
                    {
                        "name": f.name,
                        "unit": f.unit,
                        "values": f.values,
                        "median": f.median,
                        "ceiling": f.ceiling,
                    }
                    for f in figures
                ],
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out.relative_to(ROOT)} in {time.time() - started:.0f}s")
    missing = [f.name for f in figures if not f.values]
    if missing:
        print("figures missing: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
