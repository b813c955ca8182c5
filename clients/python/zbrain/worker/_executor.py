"""What an executor is given and what it returns: the contract between the
worker and whatever runs a job (a function, a process, your own code)."""

from __future__ import annotations

import abc
import asyncio
import enum
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..models import Artifact, AttemptOutcome, Job, LogStream
from ..v1 import job_pb2, job_service_pb2


class StopReason(enum.Enum):
    """Why an attempt must stop before it finishes by itself."""

    CANCELED = "canceled by user"
    TIMED_OUT = "timed out"
    SHUTDOWN = "worker shutting down"
    LEASE_LOST = "lease lost"


class Cancellation:
    """Tells an executor to stop; the first reason given wins."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None  # made by the first wait(): most never wait
        self._callbacks: list[Callable[[], object]] = []
        self.reason: StopReason | None = None
        self.detail = ""

    def set(self, reason: StopReason, detail: str = "") -> None:
        if self.reason is None:
            self.reason, self.detail = reason, detail
            if self._event is not None:
                self._event.set()
            for callback in self._callbacks:
                callback()

    def on_set(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call `callback` once a reason is set (at once if one is); return a
        function that forgets it. Cheaper than a task waiting on `wait()`."""
        if self.reason is not None:
            callback()
            return lambda: None
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def is_set(self) -> bool:
        return self.reason is not None

    async def wait(self) -> None:
        if self.reason is not None:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    @property
    def reason_text(self) -> str:
        if self.reason is None:
            return ""
        return f"{self.reason.value} ({self.detail})" if self.detail else self.reason.value


@dataclass(frozen=True)
class Outcome:
    """What an executor returns: success with output, or failure with an error."""

    kind: AttemptOutcome
    output: Any = None
    error: str = ""
    exit_code: int | None = None

    @classmethod
    def succeeded(cls, output: Any = None) -> Outcome:
        return cls(AttemptOutcome.SUCCEEDED, output=output, exit_code=0)

    @classmethod
    def failed(cls, error: str, exit_code: int | None = None) -> Outcome:
        return cls(AttemptOutcome.FAILED, error=error, exit_code=exit_code)

    @classmethod
    def limit_exceeded(cls, error: str, exit_code: int | None = None) -> Outcome:
        """Stopped by one of its resource limits, which `error` names."""
        return cls(AttemptOutcome.RESOURCE_LIMIT_EXCEEDED, error=error, exit_code=exit_code)

    def to_proto(self) -> job_service_pb2.AttemptResult:
        result = job_service_pb2.AttemptResult(
            outcome=job_service_pb2.AttemptOutcome.ValueType(self.kind.value),
            output_json=json.dumps(self.output) if self.output is not None else "",
            error=self.error,
        )
        if self.exit_code is not None:
            result.exit_code = self.exit_code
        return result


class Reporter(Protocol):
    """Where an attempt's lines and artifacts go (the worker's stream and uploads)."""

    def log(self, line: job_pb2.LogLine) -> None: ...

    async def upload(self, name: str, path: Path) -> Artifact: ...


class AttemptEvents:
    """What an executor reports while it runs: log lines and artifact files."""

    def __init__(self, job: Job, reporter: Reporter) -> None:
        self._job = job
        self._reporter = reporter

    def log(self, text: str, stream: LogStream = LogStream.STDOUT) -> None:
        """Queue one line; lines are sent in batches as soon as the stream is free."""
        line = job_pb2.LogLine(
            stream=job_pb2.LogStream.ValueType(stream.value), attempt=self._job.attempt, text=text
        )
        line.time.GetCurrentTime()
        self._reporter.log(line)

    async def upload(self, name: str, path: Path) -> Artifact:
        """Upload a file as the artifact `name`, with the checksum the server verifies."""
        return await self._reporter.upload(name, path)


class Executor(abc.ABC):
    """Runs jobs. `ProcessExecutor` is one; `FunctionExecutor` wraps a function.

    `execute` must return promptly once `cancel` is set; the worker then
    reports the attempt as canceled, timed out or interrupted by shutdown,
    whatever the executor returns.
    """

    id: str = "executor"

    @abc.abstractmethod
    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        """Run one attempt of `job`."""

    async def health_check(self) -> None:  # noqa: B027 - healthy unless overridden
        """Raise if this executor cannot take jobs; the worker then reconnects later."""


class FunctionExecutor(Executor):
    """Runs jobs with an async Python function of the job; its return value is the output."""

    def __init__(
        self, handler: Callable[[Job], Awaitable[Any]], executor_id: str = "function"
    ) -> None:
        self.id = executor_id
        self._handler = handler

    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        task = asyncio.ensure_future(self._handler(job))
        forget = cancel.on_set(task.cancel)
        try:
            output = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this attempt itself is being cancelled, not just the handler
            if not cancel.is_set():
                return Outcome.failed("the handler was cancelled")
        except Exception as error:
            if not cancel.is_set():
                return Outcome.failed(f"{type(error).__name__}: {error}")
        finally:
            forget()
        if cancel.is_set():  # however the handler ended once told to stop
            return Outcome.failed(f"stopped: {cancel.reason_text}")
        return Outcome.succeeded(output)


class EchoExecutor(Executor):
    """Returns each job's input as its output and runs nothing (`zbrain worker
    --mode echo`): for testing pipelines and measuring the queue itself."""

    id = "echo"

    async def execute(self, job: Job, events: AttemptEvents, cancel: Cancellation) -> Outcome:
        return Outcome.succeeded(job.input)
