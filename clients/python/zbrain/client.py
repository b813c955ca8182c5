"""Friendly Python clients for zbrain.v1.JobService: `Client` (asyncio) and `SyncClient`.

Both speak domain types (`zbrain.models`) and raise `zbrain.errors` classes
mapped from gRPC status codes, keeping the code and field details.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import os
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2

from .errors import (
    InvalidArgumentError,
    JobFailedError,
    UnavailableError,
    ZBrainError,
    from_rpc_error,
)
from .models import Artifact, CancelOutcome, Event, Job, JobState, LogLine
from .telemetry import trace_metadata
from .v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

T = TypeVar("T")

DEFAULT_SERVER = "127.0.0.1:50051"


def channel_options() -> list[tuple[str, Any]]:
    """gRPC channel settings; keepalive pings notice a dead server on an idle stream.

    ZBRAIN_CLIENT_KEEPALIVE and ZBRAIN_CLIENT_KEEPALIVE_TIMEOUT (seconds, default
    20 and 10) tune how fast; the server must allow pings that often (it allows
    one every 5 seconds).
    """
    keepalive_s = float(os.environ.get("ZBRAIN_CLIENT_KEEPALIVE") or 20)
    timeout_s = float(os.environ.get("ZBRAIN_CLIENT_KEEPALIVE_TIMEOUT") or 10)
    return [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.keepalive_time_ms", int(max(5.0, keepalive_s) * 1000)),
        ("grpc.keepalive_timeout_ms", int(timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS connection: the CA to trust, and for mutual TLS a
    client certificate and key. Unset fields fall back to ZBRAIN_TLS_CA,
    ZBRAIN_TLS_CERT and ZBRAIN_TLS_KEY; with none of them the channel is plaintext."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def resolved(self) -> TlsFiles | None:
        env = os.environ
        files = TlsFiles(
            self.ca or _env_path(env.get("ZBRAIN_TLS_CA")),
            self.cert or _env_path(env.get("ZBRAIN_TLS_CERT")),
            self.key or _env_path(env.get("ZBRAIN_TLS_KEY")),
        )
        return files if (files.ca or files.cert or files.key) else None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise InvalidArgumentError("a client certificate needs both --tls-cert and --tls-key")
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca.read_bytes() if self.ca else None,
                private_key=self.key.read_bytes() if self.key else None,
                certificate_chain=self.cert.read_bytes() if self.cert else None,
            )
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def _env_path(value: str | None) -> Path | None:
    return Path(value) if value else None


def open_channel(
    target: str,
    *,
    token: str | None = None,
    tls: TlsFiles | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel that sends the token (default ZBRAIN_TOKEN) and the caller's trace
    context with every call, over TLS when TLS files are given or configured."""
    token = token or os.environ.get("ZBRAIN_TOKEN") or None
    static = [("authorization", f"Bearer {token}")] if token else []
    interceptors = [kind(static) for kind in _METADATA_INTERCEPTORS]
    files = (tls or TlsFiles()).resolved()
    all_options = [*channel_options(), *options]
    if files is None:
        return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, files.credentials(), options=all_options, interceptors=interceptors
    )


class _AddMetadata:
    def __init__(self, static: list[tuple[str, str]]) -> None:
        self._static = static

    def _details(self, details: Any) -> Any:
        extra = self._static + trace_metadata()
        if not extra:
            return details
        return details._replace(metadata=[*(details.metadata or ()), *extra])


class _UnaryUnary(_AddMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_AddMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_AddMetadata, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_AddMetadata, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


_METADATA_INTERCEPTORS = (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)


def default_server() -> str:
    """The server address from ZBRAIN_SERVER, or the local default."""
    return os.environ.get("ZBRAIN_SERVER") or DEFAULT_SERVER


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
) -> job_pb2.JobSpec:
    """Build a JobSpec; `input` is any JSON-serialisable value, `timeout` seconds or a timedelta."""
    if isinstance(cmd, str):
        raise TypeError("cmd must be an argv list such as ['echo', 'hi'], not a shell string")
    spec = job_pb2.JobSpec(
        org_id=org or "",
        cmd=list(cmd),
        input_json=json.dumps(input) if input is not None else "",
        env=dict(env or {}),
        priority=priority,
        labels=dict(labels or {}),
    )
    if timeout is not None:
        spec.timeout.CopyFrom(_duration(timeout))
    if max_retries is not None:
        spec.max_retries = max_retries
    return spec


def _duration(value: float | timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value if isinstance(value, timedelta) else timedelta(seconds=value))
    return d


async def _call(target: str, call: Awaitable[T]) -> T:
    """Await a unary call, turning gRPC errors into ZBrainError."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise _error(target, error) from None


def _error(target: str, error: grpc.aio.AioRpcError) -> ZBrainError:
    if error.code() is not grpc.StatusCode.UNAVAILABLE:
        return from_rpc_error(error)
    details = error.details() or ""
    if any(sign in details.lower() for sign in ("ssl", "handshake", "certificate", "tls")):
        return UnavailableError(
            f"TLS with the ZBrain server at {target} failed ({details}); check --tls-ca "
            "(the CA that signed the server's certificate) and, for mutual TLS, "
            "--tls-cert/--tls-key"
        )
    if "socket closed" in details.lower():
        return UnavailableError(
            f"the ZBrain server at {target} closed the connection ({details}); if it "
            "serves TLS, pass --tls-ca, and for mutual TLS a client certificate "
            "(--tls-cert/--tls-key) signed by the CA it trusts"
        )
    return UnavailableError(
        f"cannot reach the ZBrain server at {target} ({details}); is `zbrain serve` running there?"
    )


class Client:
    """An asyncio client. Create it with `await Client.connect(...)`; close it when done."""

    def __init__(
        self, channel: grpc.aio.Channel, *, target: str, timeout: float | None = 30.0
    ) -> None:
        self._channel = channel
        self._stub = job_service_pb2_grpc.JobServiceStub(channel)
        self.target = target
        self.timeout = timeout

    @classmethod
    async def connect(
        cls,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        timeout: float | None = 30.0,
    ) -> Client:
        """Open a channel to `target` (default: ZBRAIN_SERVER or 127.0.0.1:50051).

        `token` (default ZBRAIN_TOKEN) is sent as a bearer token; `tls` (default
        the ZBRAIN_TLS_* files) turns on TLS. The channel connects lazily; a
        server that is down shows up as UnavailableError on the first call.
        `timeout` bounds each unary call.
        """
        target = target or default_server()
        return cls(open_channel(target, token=token, tls=tls), target=target, timeout=timeout)

    async def close(self) -> None:
        await self._channel.close()

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
    ) -> Job:
        """Submit one job; it is durable when this returns.

        A `request_id` makes the call idempotent: submitting again with the
        same id returns the first job instead of creating another.
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
        )
        request = job_service_pb2.SubmitRequest(job=spec, request_id=request_id or "")
        response = await _call(self.target, self._stub.Submit(request, timeout=self.timeout))
        return Job.from_proto(response.job)

    async def submit_batch(self, specs: Iterable[job_pb2.JobSpec]) -> builtins.list[str]:
        """Submit many jobs (built with `job_spec`) atomically; return their ids in order."""
        request = job_service_pb2.SubmitBatchRequest(jobs=list(specs))
        response = await _call(self.target, self._stub.SubmitBatch(request, timeout=self.timeout))
        return list(response.job_ids)

    async def get(self, job_id: str) -> Job:
        response = await _call(
            self.target,
            self._stub.Get(job_service_pb2.GetRequest(job_id=job_id), timeout=self.timeout),
        )
        return Job.from_proto(response.job)

    async def list(
        self,
        *,
        org: str | None = None,
        states: Iterable[JobState] = (),
        oldest_first: bool = False,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Job]:
        """Iterate over jobs, newest first unless `oldest_first`, fetching pages as needed."""
        request = job_service_pb2.ListRequest(
            org_id=org or "",
            states=[job_pb2.JobState.ValueType(s.value) for s in states],
            order=job_service_pb2.LIST_ORDER_OLDEST_FIRST
            if oldest_first
            else job_service_pb2.LIST_ORDER_NEWEST_FIRST,
            page_size=min(page_size, limit) if limit else page_size,
        )
        seen = 0
        while True:
            response = await _call(self.target, self._stub.List(request, timeout=self.timeout))
            for message in response.jobs:
                yield Job.from_proto(message)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def cancel(self, job_id: str) -> tuple[Job, CancelOutcome]:
        """Cancel a job; the outcome says whether it stopped, will stop, or had finished."""
        response = await _call(
            self.target,
            self._stub.Cancel(job_service_pb2.CancelRequest(job_id=job_id), timeout=self.timeout),
        )
        return Job.from_proto(response.job), CancelOutcome(response.outcome)

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

        return await asyncio.wait_for(follow(), timeout)

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
        async for response in self._responses(self._stub.StreamLogs(request)):
            for line in response.lines:
                yield LogLine.from_proto(line)

    async def events(
        self,
        *,
        org: str | None = None,
        topic_prefix: str = "",
        after: int = 0,
        follow: bool = False,
    ) -> AsyncIterator[Event]:
        """Iterate over recorded events after sequence `after`; with `follow`, forever.

        To resume after a disconnect, pass the last `Event.sequence` seen as
        `after`: nothing is missed and nothing repeats.
        """
        request = job_service_pb2.StreamEventsRequest(
            org_id=org or "", topic_prefix=topic_prefix, after_sequence=after, follow=follow
        )
        async for response in self._responses(self._stub.StreamEvents(request)):
            for event in response.events:
                yield Event.from_proto(event)

    async def _responses(self, call: Any) -> AsyncIterator[Any]:
        """A server stream's messages, errors mapped; the call ends with the iteration."""
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise _error(self.target, error) from None
        finally:
            call.cancel()

    async def artifacts(self, job_id: str) -> builtins.list[Artifact]:
        response = await _call(
            self.target,
            self._stub.ListArtifacts(
                job_service_pb2.ListArtifactsRequest(job_id=job_id), timeout=self.timeout
            ),
        )
        return [Artifact.from_proto(a) for a in response.artifacts]

    async def download(self, job_id: str, name: str, destination: Path) -> Artifact:
        """Download an artifact to `destination`, verifying its checksum."""
        call = self._stub.DownloadArtifact(
            job_service_pb2.DownloadArtifactRequest(job_id=job_id, name=name)
        )
        digest = hashlib.sha256()
        artifact: Artifact | None = None
        partial = destination.with_name(destination.name + ".partial")
        try:
            with partial.open("wb") as out:
                async for response in call:
                    if response.HasField("artifact"):
                        artifact = Artifact.from_proto(response.artifact)
                    digest.update(response.chunk)
                    out.write(response.chunk)
        except grpc.aio.AioRpcError as error:
            partial.unlink(missing_ok=True)
            raise _error(self.target, error) from None
        if artifact is None or digest.hexdigest() != artifact.sha256:
            partial.unlink(missing_ok=True)
            raise ZBrainError(f"download of {name!r} was incomplete or corrupt; try again")
        partial.replace(destination)
        return artifact


# wait() follows the log stream only for its end (the server closes it when the
# job finishes, re-checking at least every second): starting after this
# sequence skips the lines themselves.
_LAST_SEEN_SENTINEL = 1 << 62


class SyncClient:
    """A blocking client with the same methods as `Client`, for scripts and REPLs.

    It runs a `Client` on a private event loop in a background thread, so the
    two never disagree about behaviour.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="zbrain-client", daemon=True
        )
        self._thread.start()
        self._client: Client = self._run(
            Client.connect(target, token=token, tls=tls, timeout=timeout)
        )

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self._run(anext(iterator))  # type: ignore[arg-type]
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, cmd: Sequence[str], **options: Any) -> Job:
        return self._run(self._client.submit(cmd, **options))

    def submit_batch(self, specs: Iterable[job_pb2.JobSpec]) -> builtins.list[str]:
        return self._run(self._client.submit_batch(specs))

    def get(self, job_id: str) -> Job:
        return self._run(self._client.get(job_id))

    def list(self, **options: Any) -> Iterator[Job]:
        return self._iterate(self._client.list(**options))

    def cancel(self, job_id: str) -> tuple[Job, CancelOutcome]:
        return self._run(self._client.cancel(job_id))

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        return self._run(self._client.wait(job_id, timeout=timeout))

    def result(self, job_id: str, *, timeout: float | None = None) -> Any:
        return self._run(self._client.result(job_id, timeout=timeout))

    def logs(self, job_id: str, *, follow: bool = False, after: int = 0) -> Iterator[LogLine]:
        return self._iterate(self._client.logs(job_id, follow=follow, after=after))

    def events(self, **options: Any) -> Iterator[Event]:
        return self._iterate(self._client.events(**options))

    def artifacts(self, job_id: str) -> builtins.list[Artifact]:
        return self._run(self._client.artifacts(job_id))

    def download(self, job_id: str, name: str, destination: Path) -> Artifact:
        return self._run(self._client.download(job_id, name, destination))
