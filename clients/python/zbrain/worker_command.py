"""`zbrain worker`: a worker process that runs jobs' commands (or echoes their input)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

from . import telemetry
from .client import Client
from .connection import TlsFiles
from .errors import ZBrainError
from .worker import EchoExecutor, Executor, ProcessExecutor, Worker


async def run_worker_command(args: argparse.Namespace) -> int:
    """Run a worker until SIGTERM or SIGINT, then drain."""
    mode = (args.mode or os.environ.get("ZWORKER_MODE") or "process").lower()
    concurrency = args.concurrency or int(
        os.environ.get("ZWORKER_CONCURRENCY") or os.cpu_count() or 1
    )
    temp_dir = args.temp_dir or (
        Path(os.environ["ZWORKER_TEMP_DIR"]) if os.environ.get("ZWORKER_TEMP_DIR") else None
    )
    executors: dict[str, Callable[[], Executor]] = {
        "process": lambda: ProcessExecutor(temp_dir),
        "echo": EchoExecutor,
    }
    if mode not in executors:
        raise ZBrainError(f"unknown worker mode {mode!r}; choose from {', '.join(executors)}")
    providers = telemetry.configure(
        f"zbrain-worker-{args.worker_id or os.getpid()}", exporter=telemetry.exporter_from_env()
    )
    try:
        async with await Client.connect(
            args.server,
            token=args.token,
            tls=TlsFiles(args.tls_ca, args.tls_cert, args.tls_key),
        ) as client:
            worker = Worker(
                client,
                executors[mode](),
                worker_id=args.worker_id,
                orgs=args.org,
                concurrency=concurrency,
                labels=dict(args.label),
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
