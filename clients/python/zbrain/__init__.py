"""ZBrain's Python client: submit, inspect and cancel jobs, and run workers.

    from zbrain import Client

    async with await Client.connect("127.0.0.1:50051") as client:
        job = await client.submit(["echo", "hello"])
        done = await client.wait(job.id)

The names below are imported when first used, so that `import zbrain.errors`
(which the server's core does) or the command line's help never pay for
loading gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client
    from .errors import ZBrainError
    from .models import (
        Artifact,
        AttemptOutcome,
        CancelOutcome,
        Cause,
        Event,
        Job,
        JobState,
        LogLine,
        LogStream,
        Resources,
        Transition,
        WaitingCause,
    )
    from .sync import SyncClient

_EXPORTS = {
    "Artifact": "models",
    "AttemptOutcome": "models",
    "CancelOutcome": "models",
    "Cause": "models",
    "Client": "client",
    "Event": "models",
    "Job": "models",
    "JobState": "models",
    "LogLine": "models",
    "LogStream": "models",
    "Resources": "models",
    "SyncClient": "sync",
    "Transition": "models",
    "WaitingCause": "models",
    "ZBrainError": "errors",
}

__all__ = [
    "Artifact",
    "AttemptOutcome",
    "CancelOutcome",
    "Cause",
    "Client",
    "Event",
    "Job",
    "JobState",
    "LogLine",
    "LogStream",
    "Resources",
    "SyncClient",
    "Transition",
    "WaitingCause",
    "ZBrainError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zbrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
