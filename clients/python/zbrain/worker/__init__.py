"""The worker SDK: run ZBrain jobs in your own process.

A `Worker` keeps one WorkerService.Connect stream open on a connected
`zbrain.Client`, takes the leases the server pushes while it has free slots,
runs each attempt with its `Executor`, and reports log lines (batched),
heartbeats and the result, all fenced by the lease epoch. It reconnects with
backoff when the server goes away and drains on shutdown: no new jobs,
running ones finish within a grace period, then they are stopped.

    class Hello(Executor):
        id = "hello"
        async def execute(self, job, events, cancel):
            events.log("hi")
            return Outcome.succeeded({"greeting": "hello"})

    async with await Client.connect("127.0.0.1:50051") as client:
        await Worker(client, Hello()).run()

The parts live in private modules: `_worker` (the connection loop and
draining), `_session` (one stream), `_outbox` (what is owed to the server),
`_attempt` (running and reporting one attempt), `_executor` (the executor
contract and the function executor), `_process` (the process executor),
`_limits` (a job's resource limits) and `_sandbox` (the process executor
inside bubblewrap).
"""

from __future__ import annotations

from ..models import AttemptOutcome
from ._executor import (
    AttemptEvents,
    Cancellation,
    EchoExecutor,
    Executor,
    FunctionExecutor,
    Outcome,
    StopReason,
)
from ._process import ProcessExecutor, ProcessLimits
from ._sandbox import SandboxExecutor, SandboxUnavailableError
from ._worker import Worker

__all__ = [
    "AttemptEvents",
    "AttemptOutcome",
    "Cancellation",
    "EchoExecutor",
    "Executor",
    "FunctionExecutor",
    "Outcome",
    "ProcessExecutor",
    "ProcessLimits",
    "SandboxExecutor",
    "SandboxUnavailableError",
    "StopReason",
    "Worker",
]
