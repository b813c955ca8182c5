"""The asyncio client for zbrain.v1.JobService: `Client`.

It speaks the values of `zbrain.models` and raises `zbrain.errors` classes
mapped from gRPC status codes, keeping the code and field details.
`zbrain.SyncClient` offers the same methods without `await`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.protobuf import duration_pb2

from . import _convert
from .connection import Connection, TlsFiles
from .errors import JobFailedError, ZBrainError
from .models import (
    Artifact,
    CancelOutcome,
    Dependency,
    DependencyCondition,
    Event,
    Job,
    JobState,
    LogLine,
    Resources,
    WorkerInfo,
)
from .v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

if TYPE_CHECKING:
    from ._coalesce import SubmitCoalescer
    from .orgs import Orgs
    from .workflows import Schedules, Templates

T = TypeVar("T")
_KEEP: Any = object()  # rerun's input when none is given


DependencyLike = str | Dependency | job_pb2.Dependency
"""A job to wait for: its id (its success is needed), a `Dependency` (an id
and a condition), or `ref(name)` for another job of the same batch."""


def ref(
    name: str, condition: DependencyCondition = DependencyCondition.SUCCEEDED
) -> job_pb2.Dependency:
    """A dependency on the job of the same `submit_batch` whose `ref` is `name`."""
    return job_pb2.Dependency(
        ref=name, condition=cast(job_pb2.DependencyCondition.ValueType, condition)
    )


def _dependency(item: DependencyLike) -> job_pb2.Dependency:
    if isinstance(item, job_pb2.Dependency):
        return item
    if isinstance(item, str):
        return job_pb2.Dependency(job_id=item)
    return job_pb2.Dependency(
        job_id=item.job_id, condition=cast(job_pb2.DependencyCondition.ValueType, item.condition)
    )


def job_spec(
    cmd: Sequence[str],
    *,
    org: str | None = None,
    input: Any = None,
    env: Mapping[str, str] | None = None,
    timeout: float | timedelta | None = None,
    max_retries: int | None = None,
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
    depends_on: Iterable[DependencyLike] = (),
    ref: str = "",
    run_at: datetime | None = None,
    delay: float | timedelta | None = None,
    concurrency_key: str = "",
    concurrency_limit: int = 0,
    requires: Mapping[str, str] | None = None,
    resources: Resources | None = None,
    network: bool = False,
) -> job_pb2.JobSpec:
    """Build a JobSpec; `input` is any JSON-serialisable value, `timeout` and
    `delay` seconds or a timedelta, `run_at` an aware datetime. `depends_on`
    names the jobs to wait for; `ref` names this one for others of a batch.
    At most `concurrency_limit` (0: one) jobs of the org with the same
    `concurrency_key` run at once, in order; only a worker whose labels hold
    every pair of `requires` (an empty value: the key alone) takes the job
    (docs/limits.md). `resources` bounds what an attempt may use; `network` asks a sandboxed
    worker for the network (docs/sandbox.md)."""
    if isinstance(cmd, str):
        raise TypeError("cmd must be an argv list such as ['echo', 'hi'], not a shell string")
    numbers = {"priority": priority, "concurrency_limit": concurrency_limit}
    if max_retries is not None:
        numbers["max_retries"] = max_retries
    _convert.check_integers(job_pb2.JobSpec, numbers)
    spec = job_pb2.JobSpec(
        org_id=org or "",
        cmd=list(cmd),
        input_json=json.dumps(input) if input is not None else "",
        env=dict(env or {}),
        priority=priority,
        labels=dict(labels or {}),
        depends_on=[_dependency(item) for item in depends_on],
        ref=ref,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        requires=dict(requires or {}),
        network=network,
    )
    if resources:
        spec.resources.CopyFrom(_convert.resources_to_proto(resources))
    if timeout is not None:
        spec.timeout.CopyFrom(_duration(timeout))
    if max_retries is not None:
        spec.max_retries = max_retries
    if run_at is not None:
        if run_at.tzinfo is None:
            raise TypeError("run_at must be an aware datetime (with a time zone)")
        spec.run_at.FromDatetime(run_at)
    if delay is not None:
        spec.delay.CopyFrom(_duration(delay))
    return spec


def _duration(value: float | timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value if isinstance(value, timedelta) else timedelta(seconds=value))
    return d


class Client:
    """An asyncio client. Create it with `await Client.connect(...)`, or
    `Client.from_channel(...)` over a channel of your own; close it when done."""

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float | None = 30.0,
        channel: grpc.aio.Channel | None = None,
        coalesce: bool = True,
    ) -> None:
        self.connection = connection
        self.channel = channel if channel is not None else connection.open_channel()
        self._stub = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.timeout = timeout
        self._coalesce = coalesce

    @functools.cached_property
    def _coalescer(self) -> SubmitCoalescer | None:
        """Made by the first submit: a command that only reads (`zbrain get`)
        does not load it."""
        if not self._coalesce:
            return None
        from ._coalesce import SubmitCoalescer

        return SubmitCoalescer(self._stub, lambda: self.timeout, self.connection.error)

    @functools.cached_property
    def templates(self) -> Templates:
        """Job templates: create, get, list, delete, submit."""
        from .workflows import Templates  # loaded by the first use, not by every client

        return Templates(self)

    @functools.cached_property
    def schedules(self) -> Schedules:
        """Schedules: create, get, list, update, delete, pause, resume, trigger."""
        from .workflows import Schedules

        return Schedules(self)

    @functools.cached_property
    def orgs(self) -> Orgs:
        """Organisation settings: get, update (admins), pause and resume (admins)."""
        from .orgs import Orgs

        return Orgs(self)

    @classmethod
    async def connect(
        cls,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] = (),
        coalesce: bool = True,
    ) -> Client:
        """Open a channel to `target` (default: ZBRAIN_SERVER or 127.0.0.1:50051).

        `token` (default ZBRAIN_TOKEN) is sent as a bearer token; `tls` (default
        the ZBRAIN_TLS_* files) turns on TLS; `options` are extra gRPC channel
        arguments. The channel connects lazily: a server that is down shows up
        as UnavailableError on the first call. `timeout` bounds each unary call.
        A bad address is InvalidArgumentError at once. With `coalesce` (the
        default), submits made concurrently travel to the server together
        (see `submit`).
        """
        connection = Connection(target or "", token, tls, tuple(options))
        connection.address  # noqa: B018 - checks the address now, not on the first call
        return cls(connection, timeout=timeout, coalesce=coalesce)

    @classmethod
    def from_channel(
        cls,
        channel: grpc.aio.Channel,
        *,
        target: str = "",
        timeout: float | None = 30.0,
        coalesce: bool = True,
    ) -> Client:
        """A client over a channel the caller opened.

        `connect` builds its channel from an address, a token and TLS files.
        A channel that needs more (other credentials, interceptors), or a
        test's fake channel, is wrapped here instead: every method, and a
        `Worker` given this client, then calls on it.

        Args:
            channel: The grpc.aio channel to call on. It is used as given: no
                token or trace metadata is added. Closing the client closes it.
            target: The address the channel dials, as `target` reports it and
                error messages name it; default ZBRAIN_SERVER or 127.0.0.1:50051.
            timeout: Bounds each unary call, in seconds; None waits forever.
            coalesce: Send concurrent submits together, as `connect` does.

        Raises:
            InvalidArgumentError: `target` is not a server address.
        """
        connection = Connection(target)
        connection.address  # noqa: B018 - checks the address now, as connect does
        return cls(connection, timeout=timeout, channel=channel, coalesce=coalesce)

    @property
    def target(self) -> str:
        """The server address as dialled."""
        return self.connection.address

    async def _call(self, call: Awaitable[T]) -> T:
        """Await a unary call, turning gRPC errors into ZBrainError."""
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise self.connection.error(error) from None

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(
        self,
        cmd: Sequence[str],
        *,
        org: str | None = None,
        input: Any = None,
        env: Mapping[str, str] | None = None,
        timeout: float | timedelta | None = None,
        max_retries: int | None = None,
        priority: int = 0,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        depends_on: Iterable[DependencyLike] = (),
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        concurrency_key: str = "",
        concurrency_limit: int = 0,
        requires: Mapping[str, str] | None = None,
        resources: Resources | None = None,
        network: bool = False,
    ) -> Job:
        """Submit one job; it is durable when this returns.

        A `request_id` makes the call idempotent: submitting again with the
        same id returns the first job instead of creating another. With
        `depends_on` the job waits BLOCKED for those jobs; with `run_at` or
        `delay` it waits SCHEDULED until then (docs/workflows.md). With
        `concurrency_key` it runs only while fewer than `concurrency_limit`
        (0: one) jobs of its key run; with `requires` only on a worker whose
        labels hold those pairs (docs/limits.md).

        Submits made concurrently (many tasks of one client) are sent
        together as one SubmitBatch, which costs the server far less than a
        call each; every caller still gets its own job or its own error, and
        a lone submit goes out at once, alone. `coalesce=False` on `connect`
        sends one call per submit.
        """
        spec = job_spec(
            cmd,
            org=org,
            input=input,
            env=env,
            timeout=timeout,
            max_retries=max_retries,
            priority=priority,
            labels=labels,
            depends_on=depends_on,
            run_at=run_at,
            delay=delay,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            requires=requires,
            resources=resources,
            network=network,
        )
        request = job_service_pb2.SubmitRequest(job=spec, request_id=request_id or "")
        if self._coalescer is not None:
            response = await self._coalescer.submit(request)
        else:
            response = await self._call(self._stub.Submit(request, timeout=self.timeout))
        return _convert.job(response.job)

    async def submit_batch(self, specs: Iterable[job_pb2.JobSpec]) -> builtins.list[str]:
        """Submit many jobs (built with `job_spec`) atomically; return their ids
        in order. A graph is one batch: jobs name each other with `ref`."""
        request = job_service_pb2.SubmitBatchRequest(jobs=list(specs))
        response = await self._call(self._stub.SubmitBatch(request, timeout=self.timeout))
        return list(response.job_ids)

    async def rerun(self, job_id: str, *, input: Any = _KEEP) -> Job:
        """Submit a finished job again as a new job (its input replaced if
        given), linked to it by `rerun_of`."""
        request = job_service_pb2.RerunRequest(job_id=job_id)
        if input is not _KEEP:
            request.input_json = json.dumps(input)
        response = await self._call(self._stub.Rerun(request, timeout=self.timeout))
        return _convert.job(response.job)

    async def get(self, job_id: str) -> Job:
        response = await self._call(
            self._stub.Get(job_service_pb2.GetRequest(job_id=job_id), timeout=self.timeout),
        )
        return _convert.job(response.job)

    async def list(
        self,
        *,
        org: str | None = None,
        states: Iterable[JobState] = (),
        oldest_first: bool = False,
        limit: int | None = None,
        page_size: int = 100,
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        all_orgs: bool = False,
        unmatched: bool = False,
    ) -> AsyncIterator[Job]:
        """Iterate over jobs, newest first unless `oldest_first`, fetching pages
        as needed; with `labels`, only jobs carrying every one of them; with
        `created_after` or `created_before` (aware datetimes), only jobs
        submitted at or after, or before, that time. `all_orgs` lists every
        organisation's jobs (an admin token's right; not with `org`). With
        `unmatched`, only runnable jobs no worker connected to the server can
        take (none serves their org or offers the labels they require)."""
        request = job_service_pb2.ListRequest(
            org_id=org or "",
            labels=dict(labels or {}),
            unmatched=unmatched,
            states=[job_pb2.JobState.ValueType(s.value) for s in states],
            order=job_service_pb2.LIST_ORDER_OLDEST_FIRST
            if oldest_first
            else job_service_pb2.LIST_ORDER_NEWEST_FIRST,
            page_size=min(page_size, limit) if limit else page_size,
            all_orgs=all_orgs,
        )
        if created_after is not None:
            request.create_time_after.FromDatetime(created_after)
        if created_before is not None:
            request.create_time_before.FromDatetime(created_before)
        seen = 0
        while True:
            response = await self._call(self._stub.List(request, timeout=self.timeout))
            for message in response.jobs:
                yield _convert.job(message)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def workers(self, *, org: str | None = None) -> builtins.list[WorkerInfo]:
        """The workers connected to the server (this replica), by id: all of
        them for an admin (or those serving `org`), else those of the token's
        organisation."""
        request = job_service_pb2.ListWorkersRequest(org_id=org or "")
        found: builtins.list[WorkerInfo] = []
        while True:
            response = await self._call(self._stub.ListWorkers(request, timeout=self.timeout))
            found += [_convert.worker(message) for message in response.workers]
            if not response.next_page_token:
                return found
            request.page_token = response.next_page_token

    async def cancel(self, job_id: str) -> tuple[Job, CancelOutcome]:
        """Cancel a job; the outcome says whether it stopped, will stop, or had finished."""
        response = await self._call(
            self._stub.Cancel(job_service_pb2.CancelRequest(job_id=job_id), timeout=self.timeout),
        )
        return _convert.job(response.job), CancelOutcome(response.outcome)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Wait until the job is terminal and return it; TimeoutError after `timeout` seconds.

        Follows the job's log stream, which the server ends when the job
        finishes, so waiting costs no polling.
        """

        async def follow() -> Job:
            while True:
                async for _ in self.logs(job_id, follow=True, after=_LAST_SEEN_SENTINEL):
                    pass
                job = await self.get(job_id)
                if job.state.is_terminal:
                    return job

        async with asyncio.timeout(timeout):
            return await follow()

    async def result(self, job_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the job and return its output; JobFailedError unless it succeeded."""
        job = await self.wait(job_id, timeout=timeout)
        if job.state is not JobState.SUCCEEDED:
            raise JobFailedError(
                f"job {job.id} {job.state.name.lower()}: {job.last_error or 'no error recorded'}"
            )
        return job.output

    async def logs(
        self, job_id: str, *, follow: bool = False, after: int = 0
    ) -> AsyncIterator[LogLine]:
        """Iterate over a job's log lines after sequence `after`; with `follow`, until it ends."""
        request = job_service_pb2.StreamLogsRequest(
            job_id=job_id, after_sequence=after, follow=follow
        )
        async with self._responses(self._stub.StreamLogs(request)) as responses:
            async for response in responses:
                for line in response.lines:
                    yield _convert.log_line(line)

    async def events(
        self,
        *,
        org: str | None = None,
        topic_prefix: str = "",
        after: int = 0,
        follow: bool = False,
        from_end: bool = False,
    ) -> AsyncIterator[Event]:
        """Iterate over recorded events after sequence `after`; with `follow`, forever.

        To resume after a disconnect, pass the last `Event.sequence` seen as
        `after`: nothing is missed and nothing repeats. With `from_end` (and
        `follow`), start after the last event stored when the stream opens:
        only what happens from then on, none of the retained history.
        """
        request = job_service_pb2.StreamEventsRequest(
            org_id=org or "",
            topic_prefix=topic_prefix,
            after_sequence=after,
            follow=follow,
            from_end=from_end,
        )
        async with self._responses(self._stub.StreamEvents(request)) as responses:
            async for response in responses:
                for event in response.events:
                    yield _convert.event(event)

    def _responses(self, call: Any) -> contextlib.aclosing[AsyncGenerator[Any, None]]:
        """A server stream's messages, errors mapped, closed on leaving the block:
        a caller that stops reading early ends the call at once, not when the
        garbage collector gets to it."""

        async def messages() -> AsyncGenerator[Any, None]:
            try:
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as error:
                raise self.connection.error(error) from None
            finally:
                call.cancel()

        return contextlib.aclosing(messages())

    async def artifacts(self, job_id: str) -> builtins.list[Artifact]:
        response = await self._call(
            self._stub.ListArtifacts(
                job_service_pb2.ListArtifactsRequest(job_id=job_id), timeout=self.timeout
            ),
        )
        return [_convert.artifact(a) for a in response.artifacts]

    async def download(self, job_id: str, name: str, destination: Path) -> Artifact:
        """Download an artifact to `destination`, verifying its checksum."""
        call = self._stub.DownloadArtifact(
            job_service_pb2.DownloadArtifactRequest(job_id=job_id, name=name)
        )
        import hashlib  # OpenSSL's digests load in ms: only a download needs one

        digest = hashlib.sha256()
        artifact: Artifact | None = None
        partial = destination.with_name(destination.name + ".partial")
        try:
            with partial.open("wb") as out:
                async for response in call:
                    if response.HasField("artifact"):
                        artifact = _convert.artifact(response.artifact)
                    digest.update(response.chunk)
                    out.write(response.chunk)
        except grpc.aio.AioRpcError as error:
            partial.unlink(missing_ok=True)
            raise self.connection.error(error) from None
        if artifact is None or digest.hexdigest() != artifact.sha256:
            partial.unlink(missing_ok=True)
            raise ZBrainError(f"download of {name!r} was incomplete or corrupt; try again")
        partial.replace(destination)
        return artifact


# wait() follows the log stream only for its end (the server closes it when the
# job finishes, re-checking at least every second): starting after this
# sequence skips the lines themselves.
_LAST_SEEN_SENTINEL = 1 << 62
