"""`zbrain worker`: a worker process that runs jobs' commands (or echoes their input)."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from opentelemetry import trace

from . import telemetry
from .client import Client
from .connection import TlsFiles
from .durations import parse_duration
from .errors import ZBrainError
from .models import RESOURCE_MINIMUMS, Resources
from .sizes import format_size, parse_count, parse_size
from .worker import EchoExecutor, Executor, ProcessExecutor, SandboxExecutor, Worker

# The worker's maxima for a job's resources: flag, variable, parser.
MAXIMA: dict[str, tuple[str, str, Callable[[str], float]]] = {
    "memory_bytes": ("max_memory", "ZWORKER_MAX_MEMORY", parse_size),
    "cpu_seconds": ("max_cpu", "ZWORKER_MAX_CPU", parse_duration),
    "processes": ("max_processes", "ZWORKER_MAX_PROCESSES", parse_count),
    "open_files": ("max_open_files", "ZWORKER_MAX_OPEN_FILES", parse_count),
    "file_size_bytes": ("max_file_size", "ZWORKER_MAX_FILE_SIZE", parse_size),
}


def worker_maxima(args: argparse.Namespace) -> Resources:
    """The bounds on every job's resources from the flags, else the variables."""
    values = {}
    for name, (flag, variable, parse) in MAXIMA.items():
        text = getattr(args, flag, None) or os.environ.get(variable) or ""
        try:
            value = parse(text) if text else 0
        except ValueError as exc:
            raise ZBrainError(f"--{flag.replace('_', '-')} / ${variable}: {exc}") from None
        value = math.ceil(value)  # CPU time is limited in whole seconds
        minimum = RESOURCE_MINIMUMS[name]
        if value < 0 or 0 < value < minimum:
            shown = format_size(minimum) if name.endswith("_bytes") else str(minimum)
            raise ZBrainError(
                f"--{flag.replace('_', '-')} / ${variable} must be 0 (no maximum) or at "
                f"least {shown}, the smallest limit a job may have"
            )
        values[name] = value
    return Resources(**values)


async def run_worker_command(args: argparse.Namespace) -> int:
    """Run a worker until SIGTERM or SIGINT, then drain."""
    mode = (args.mode or os.environ.get("ZWORKER_MODE") or "process").lower()
    concurrency = args.concurrency or _concurrency_from_env()
    temp_dir = args.temp_dir or (
        Path(os.environ["ZWORKER_TEMP_DIR"]) if os.environ.get("ZWORKER_TEMP_DIR") else None
    )
    maxima = worker_maxima(args)
    allow_network = bool(
        getattr(args, "allow_network", False)
        or os.environ.get("ZWORKER_ALLOW_NETWORK", "").lower() in ("1", "true", "yes")
    )
    executors: dict[str, Callable[[], Executor]] = {
        "process": lambda: ProcessExecutor(temp_dir, maxima=maxima),
        "sandbox": lambda: _sandbox(temp_dir, maxima, allow_network),
        "echo": EchoExecutor,
    }
    if mode not in executors:
        raise ZBrainError(f"unknown worker mode {mode!r}; choose from {', '.join(executors)}")
    executor = executors[mode]()  # a sandbox that cannot work refuses here
    _watch_children_with_pidfds()
    exporter = telemetry.exporter_from_env()
    providers = telemetry.configure(
        f"zbrain-worker-{args.worker_id or os.getpid()}", exporter=exporter
    )
    # Without an exporter nobody reads the worker's spans: make none (an SDK
    # span per attempt cost a sixteenth of the worker's CPU for `true`); the
    # attempt still runs in the submitter's trace context.
    spans = None if exporter != "none" else trace.NoOpTracerProvider()
    try:
        async with await Client.connect(
            args.server,
            token=args.token,
            tls=TlsFiles(args.tls_ca, args.tls_cert, args.tls_key),
        ) as client:
            worker = Worker(
                client,
                executor,
                worker_id=args.worker_id,
                orgs=args.org,
                concurrency=concurrency,
                labels=dict(args.label),
                tracer_provider=spans,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(
                    sig, lambda: asyncio.ensure_future(worker.shutdown(args.grace))
                )
            await worker.run()
    finally:
        providers.shutdown()
    return 0


def _concurrency_from_env() -> int:
    """$ZWORKER_CONCURRENCY, else one slot per CPU."""
    text = os.environ.get("ZWORKER_CONCURRENCY", "")
    if not text:
        return os.cpu_count() or 1
    try:
        concurrency = parse_count(text)
    except ValueError as exc:
        raise ZBrainError(f"$ZWORKER_CONCURRENCY: {exc}") from None
    if concurrency < 1:
        raise ZBrainError("$ZWORKER_CONCURRENCY must be 1 or more")
    return concurrency


def _sandbox(temp_dir: Path | None, maxima: Resources, allow_network: bool) -> SandboxExecutor:
    """A sandbox executor proved to work on this machine (else the error says why)."""
    executor = SandboxExecutor(temp_dir, maxima=maxima, allow_network=allow_network)
    executor.probe()
    return executor


def _watch_children_with_pidfds() -> None:
    """On Python 3.11, learn of job processes' exits through pidfds in the
    event loop rather than the default watcher's thread per child (a thread
    started and joined for every command). Python 3.12 does this by itself.
    The worker command owns its loop, so it may choose; SDK users keep theirs."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))  # the kernel may lack pidfds (before 5.3)
    except OSError:
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
