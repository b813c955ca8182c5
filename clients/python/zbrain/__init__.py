"""ZBrain's Python client: submit, inspect and cancel jobs, and run workers.

from zbrain import Client

async with await Client.connect("127.0.0.1:50051") as client:
    job = await client.submit(["echo", "hello"])
    done = await client.wait(job.id)
"""

from __future__ import annotations

from .client import Client, SyncClient
from .errors import ZBrainError
from .models import Artifact, CancelOutcome, Event, Job, JobState, LogLine, LogStream

__all__ = [
    "Artifact",
    "CancelOutcome",
    "Client",
    "Event",
    "Job",
    "JobState",
    "LogLine",
    "LogStream",
    "SyncClient",
    "ZBrainError",
]
