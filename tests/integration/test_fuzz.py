"""Random and malformed requests to every RPC of a live server.

Each test sends hypothesis-generated requests to one group of RPCs of a real
server (real grpc.aio, real SQLite file) and holds it to three promises:

- every answer is a response or a deliberate gRPC status (`PROPER_CODES`),
  never UNKNOWN or INTERNAL, and no request makes the server log an error;
- the server keeps serving: its health check still says SERVING afterwards;
- what valid requests stored before the fuzzing (`Stored`: finished, canceled
  and pending jobs, their logs, artifact and events) reads back unchanged.

Hypothesis draws examples in a worker thread and runs each one on the test's
event loop, so every example meets the real server while hypothesis can still
shrink a failure to a minimal request. Runs are derandomized: reproducible.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import json
import logging
import operator
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from zbrain.v1 import (
    event_pb2,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    org_pb2,
    schedule_pb2,
    template_pb2,
    token_service_pb2,
    worker_service_pb2,
)
from zbrain_server.app import ZBrainServer

pb = job_service_pb2
wpb = worker_service_pb2
tpb = token_service_pb2
opb = org_pb2

PROPER_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
"""The error statuses a request may get; anything else (UNKNOWN, INTERNAL, ...) is a bug."""

SNAPSHOT_ORG = "fuzz-snapshot"  # holds the jobs stored before the fuzzing
LEASE_ORG = "fuzz-leases"  # holds the job leased for each example that needs a live lease
RESERVED_ORGS = frozenset({SNAPSHOT_ORG, LEASE_ORG})
ARTIFACT_NAME = "out/result.txt"
ARTIFACT_CONTENT = b"forty-two\n"
CALL_TIMEOUT_S = 5.0
# A short deadline bounds AcquireLease's long poll: the server waits at most
# the deadline minus 0.5 s.
ACQUIRE_TIMEOUT_S = 0.6
# Streams that follow (or may follow, for raw bodies) are read this long, then
# the test hangs up: a stream still open then is a proper answer.
FOLLOW_FOR_S = 0.05
RAW_FOLLOW_FOR_S = 0.3

SERVICES = tuple(
    service
    for module in (
        job_service_pb2,
        worker_service_pb2,
        token_service_pb2,
        template_pb2,
        schedule_pb2,
        org_pb2,
    )
    for service in module.DESCRIPTOR.services_by_name.values()
)
METHODS: tuple[MethodDescriptor, ...] = tuple(
    method for service in SERVICES for method in service.methods
)
METHOD_NAMED = {method.full_name: method for method in METHODS}
METHOD_TAKING = {method.input_type.full_name: method for method in METHODS}
"""Each request type is the input of exactly one RPC."""


# -- calling the server ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How a call ended: its status, or None when the test hung up on an open stream."""

    code: grpc.StatusCode | None
    details: str
    responses: list[Any]

    def assert_proper(self) -> None:
        assert self.code is None or self.code is grpc.StatusCode.OK or self.code in PROPER_CODES, (
            f"improper status {self.code.name}: {self.details}"
        )


def message_class(descriptor: Any) -> type[Message]:
    message: type[Message] = message_factory.GetMessageClass(descriptor)
    return message


def multicallable(channel: Any, method: MethodDescriptor, *, raw: bool) -> Any:
    """The callable for `method` on a blocking or an asyncio channel; raw sends bytes."""
    shape = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    return shape(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=None if raw else message_class(method.input_type).SerializeToString,
        response_deserializer=None if raw else message_class(method.output_type).FromString,
    )


@dataclass(frozen=True)
class Channels:
    """One asyncio and one blocking channel to the server under test."""

    aio: grpc.aio.Channel
    blocking: grpc.Channel


async def invoke(
    channels: Channels,
    method: MethodDescriptor,
    requests: Sequence[Message | bytes],
    *,
    raw: bool = False,
    timeout: float = CALL_TIMEOUT_S,
    hang_up_after: float | None = None,
) -> Answer:
    """Call `method` with `requests` (serialized bodies when raw) and say how it ended."""
    if method.client_streaming:
        # When the server ends a call while the client is still writing (an
        # abort after the first message), grpc.aio sometimes reports its own
        # failed write as INTERNAL "Internal error from Core" instead of the
        # server's status (grpc/grpc#36066); the blocking client reports the
        # server's status.
        return await asyncio.to_thread(
            invoke_blocking, channels.blocking, method, requests, raw=raw, timeout=timeout
        )
    call = multicallable(channels.aio, method, raw=raw)(requests[0], timeout=timeout)
    responses: list[Any] = []

    async def receive() -> None:
        if method.server_streaming:
            async for response in call:
                responses.append(response)
        else:
            responses.append(await call)

    try:
        await asyncio.wait_for(receive(), hang_up_after)
    except TimeoutError:
        call.cancel()
        return Answer(None, "still streaming when the test hung up", responses)
    except grpc.aio.AioRpcError as error:
        return Answer(error.code(), error.details() or "", responses)
    return Answer(grpc.StatusCode.OK, "", responses)


def invoke_blocking(
    channel: grpc.Channel,
    method: MethodDescriptor,
    requests: Sequence[Message | bytes],
    *,
    raw: bool,
    timeout: float,
) -> Answer:
    """`invoke` for a client-streaming method, through the blocking client."""
    call = multicallable(channel, method, raw=raw)
    try:
        if method.server_streaming:
            responses = list(call(iter(requests), timeout=timeout))
        else:
            responses = [call(iter(requests), timeout=timeout)]
    except grpc.RpcError as error:
        return Answer(error.code(), error.details() or "", [])
    return Answer(grpc.StatusCode.OK, "", responses)


# -- what valid requests stored before the fuzzing ----------------------------------------


@dataclass(frozen=True)
class Stored:
    """The state valid requests left behind, as the server reads it back."""

    jobs: dict[str, job_pb2.Job]
    logs: list[job_pb2.LogLine]
    artifact: list[pb.DownloadArtifactResponse]
    events: list[event_pb2.Event]


async def store_valid_jobs(jobs: job_service_pb2_grpc.JobServiceStub) -> dict[str, str]:
    """Make one job of each kind through valid requests; return their ids by kind."""

    async def submit(**spec: Any) -> str:
        job = job_pb2.JobSpec(org_id=SNAPSHOT_ORG, cmd=["echo", "hi"], max_retries=0, **spec)
        response: pb.SubmitResponse = await jobs.Submit(pb.SubmitRequest(job=job))
        return response.job.id

    async def lease() -> pb.Lease:
        answer = await jobs.AcquireLease(
            pb.AcquireLeaseRequest(worker_id="snapshot-worker", org_ids=[SNAPSHOT_ORG])
        )
        leased: pb.Lease
        [leased] = answer.leases
        return leased

    succeeded = await submit(input_json='{"n": 1}', env={"A": "b"}, labels={"team": "x"})
    leased = await lease()
    epoch = leased.lease_epoch
    await jobs.ReportLogs(
        pb.ReportLogsRequest(
            job_id=succeeded,
            lease_epoch=epoch,
            lines=[job_pb2.LogLine(stream=job_pb2.LOG_STREAM_STDOUT, text=t) for t in "ab"],
        )
    )
    header = pb.ArtifactHeader(
        job_id=succeeded,
        lease_epoch=epoch,
        artifact=job_pb2.Artifact(
            name=ARTIFACT_NAME,
            sha256=hashlib.sha256(ARTIFACT_CONTENT).hexdigest(),
            size_bytes=len(ARTIFACT_CONTENT),
        ),
    )
    await jobs.UploadArtifact(
        iter(
            [
                pb.UploadArtifactRequest(header=header),
                pb.UploadArtifactRequest(chunk=ARTIFACT_CONTENT),
            ]
        )
    )
    await jobs.CompleteLease(
        pb.CompleteLeaseRequest(
            job_id=succeeded,
            lease_epoch=epoch,
            result=pb.AttemptResult(outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED, output_json="[42]"),
        )
    )

    failed = await submit(priority=7)
    leased = await lease()
    await jobs.CompleteLease(
        pb.CompleteLeaseRequest(
            job_id=failed,
            lease_epoch=leased.lease_epoch,
            result=pb.AttemptResult(outcome=pb.ATTEMPT_OUTCOME_FAILED, error="boom", exit_code=3),
        )
    )

    canceled = await submit()
    await jobs.Cancel(pb.CancelRequest(job_id=canceled))
    pending = await jobs.Submit(
        pb.SubmitRequest(
            job=job_pb2.JobSpec(
                org_id=SNAPSHOT_ORG, cmd=["sleep", "1"], timeout=duration_pb2.Duration(seconds=9)
            ),
            request_id="snapshot-request",
        )
    )
    return {
        "succeeded": succeeded,
        "failed": failed,
        "canceled": canceled,
        "pending": pending.job.id,
    }


@dataclass
class Target:
    """A live server with jobs stored by valid requests, and the means to fuzz it."""

    server: ZBrainServer
    channels: Channels
    jobs: job_service_pb2_grpc.JobServiceStub
    job_ids: dict[str, str]
    stored: Stored
    caplog: pytest.LogCaptureFixture
    # Set when the test is over, however it ended: hypothesis, in its own
    # thread, must then stop running examples against a server that is gone.
    over: threading.Event = field(default_factory=threading.Event)

    @property
    def finished_job_ids(self) -> list[str]:
        return [self.job_ids[kind] for kind in ("succeeded", "failed", "canceled")]

    async def send(self, *requests: Message, timeout: float = CALL_TIMEOUT_S) -> Answer:
        """Call the RPC that takes these requests; a following stream is read briefly."""
        method = METHOD_TAKING[requests[0].DESCRIPTOR.full_name]
        follows = any(getattr(request, "follow", False) for request in requests)
        return await invoke(
            self.channels,
            method,
            requests,
            timeout=timeout,
            hang_up_after=FOLLOW_FOR_S if follows else None,
        )

    async def read_stored(self) -> Stored:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await self._read_stored()

    async def _read_stored(self) -> Stored:
        jobs = {}
        for job_id in self.job_ids.values():
            jobs[job_id] = (await self.jobs.Get(pb.GetRequest(job_id=job_id))).job
        succeeded = self.job_ids["succeeded"]
        logs = [
            line
            async for page in self.jobs.StreamLogs(pb.StreamLogsRequest(job_id=succeeded))
            for line in page.lines
        ]
        artifact = [
            chunk
            async for chunk in self.jobs.DownloadArtifact(
                pb.DownloadArtifactRequest(job_id=succeeded, name=ARTIFACT_NAME)
            )
        ]
        events = [
            event
            async for page in self.jobs.StreamEvents(pb.StreamEventsRequest(org_id=SNAPSHOT_ORG))
            for event in page.events
        ]
        return Stored(jobs, logs, artifact, events)

    async def fresh_lease(self) -> pb.Lease:
        """Submit a job nobody else serves and lease it: a live lease for one example."""
        spec = job_pb2.JobSpec(org_id=LEASE_ORG, cmd=["true"], max_retries=0)
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await self.jobs.Submit(pb.SubmitRequest(job=spec))
            answer = await self.jobs.AcquireLease(
                pb.AcquireLeaseRequest(worker_id="fuzz-worker", org_ids=[LEASE_ORG])
            )
        leased: pb.Lease = answer.leases[0]
        return leased

    async def fuzz_fields(
        self,
        fields: Fields,
        attempt: Callable[[Any], Awaitable[None]],
        *,
        examples_per_field: int,
    ) -> None:
        """`fuzz` with valid requests, then requests valid but for one field, each in turn."""
        for name in (None, *fields.valid):
            await self.fuzz(fields.valid_but(name), attempt, max_examples=examples_per_field)

    async def fuzz(
        self,
        strategy: SearchStrategy[Any],
        attempt: Callable[[Any], Awaitable[None]],
        *,
        max_examples: int,
        tolerated: Callable[[logging.LogRecord], bool] = lambda record: False,
    ) -> None:
        """Run `attempt` on every example, then check that the server is unharmed."""

        async def example(drawn: Any) -> None:
            seen = len(self.caplog.records)
            await attempt(drawn)
            errors = [
                record
                for record in self.caplog.records[seen:]
                if record.levelno >= logging.ERROR and not tolerated(record)
            ]
            assert not errors, "the server logged errors:\n" + "\n".join(
                f"{r.name}: {r.getMessage()}\n{r.exc_text or ''}" for r in errors
            )

        await for_every_example(strategy, example, max_examples=max_examples, over=self.over)

        health = await health_pb2_grpc.HealthStub(self.channels.aio).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert await self.read_stored() == self.stored


async def for_every_example(
    strategy: SearchStrategy[Any],
    attempt: Callable[[Any], Awaitable[None]],
    *,
    max_examples: int,
    over: threading.Event,
) -> None:
    """Run `attempt` on the event loop for each example hypothesis draws from `strategy`.

    Hypothesis runs in a worker thread (its @given functions are synchronous)
    and hands each example to the loop that serves the server under test.
    Once `over` is set, every example fails at once, so that hypothesis
    finishes quickly instead of shrinking against a stopped server.
    """
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        # The first bug found is reported, shrunk; hunting for more would
        # multiply the run time of a failing test.
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(strategy)
    def holds(drawn: Any) -> None:
        if over.is_set():
            raise RuntimeError("the test is over")
        asyncio.run_coroutine_threadsafe(_coroutine(attempt(drawn)), loop).result(timeout=60)

    await asyncio.to_thread(holds)


@pytest.fixture
async def server(start_server: Callable[..., Awaitable[ZBrainServer]]) -> ZBrainServer:
    """A server with auth explicitly off: a fuzzed CreateToken stores a token,
    which would otherwise turn auth on (within a second, so at a moment that
    depends on the machine's load) for the calls that follow."""
    return await start_server(auth="off")


@pytest.fixture
async def target(server: ZBrainServer, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Target]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        with grpc.insecure_channel(server.address) as blocking:
            jobs = job_service_pb2_grpc.JobServiceStub(channel)
            async with asyncio.timeout(30):
                job_ids = await store_valid_jobs(jobs)
            channels = Channels(channel, blocking)
            target = Target(server, channels, jobs, job_ids, Stored({}, [], [], []), caplog)
            target.stored = await target.read_stored()
            try:
                yield target
            finally:
                target.over.set()


# -- strategies ----------------------------------------------------------------------------
#
# Every field has a valid strategy and a wild one. A request wrong everywhere
# stops at the first check; a request valid but for one field gets past every
# other check to the code behind it, which is where bugs hide. So each RPC is
# fuzzed field by field (`Target.fuzz_fields`), which also gives every field
# its share of examples: hypothesis favours the first of several choices, so
# drawing which field to spoil would starve the last ones.


@dataclass(frozen=True)
class Fields:
    """How to build a request: a valid and a wild strategy for each field."""

    build: Callable[..., Any]
    valid: dict[str, SearchStrategy[Any]]
    wild: dict[str, SearchStrategy[Any]]

    @classmethod
    def of(
        cls, build: Callable[..., Any], **fields: tuple[SearchStrategy[Any], SearchStrategy[Any]]
    ) -> Fields:
        return cls(
            build,
            {name: valid for name, (valid, _) in fields.items()},
            {name: wild for name, (_, wild) in fields.items()},
        )

    def valid_but(self, name: str | None) -> SearchStrategy[Any]:
        """Requests whose fields are all valid but `name` (if any), which is drawn wild."""
        return st.builds(
            self.build,
            **{each: (self.wild if each == name else self.valid)[each] for each in self.valid},
        )

    def any(self) -> SearchStrategy[Any]:
        """For a nested message: entirely valid, or entirely wild."""
        return st.one_of(st.builds(self.build, **self.valid), st.builds(self.build, **self.wild))


def boundary_ints(bits: int) -> SearchStrategy[int]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return st.one_of(st.integers(low, high), st.sampled_from([0, 1, -1, low, high]))


def optional(strategy: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """`strategy`, or None (an unset message field); hypothesis favours the first."""
    return st.one_of(strategy, st.none())


INT32 = boundary_ints(32)
INT64 = boundary_ints(64)


def enum_numbers(enum_type: Any) -> SearchStrategy[int]:
    """A known value of a protobuf enum, or any other int32 (proto3 enums are open)."""
    return st.one_of(st.sampled_from(list(enum_type.values())), INT32)


def known_values(enum_type: Any) -> SearchStrategy[int]:
    """A known value of a protobuf enum other than its UNSPECIFIED zero."""
    return st.sampled_from([number for number in enum_type.values() if number != 0])


SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
STRANGE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\n",
        "..",
        "../../etc/passwd",
        "/abs/path",
        "a//b",
        "a/./b",
        "back\\slash",
        "é",
        "\u202e",
        "\ufeff",
        "💥",
        "%s%n",
        "'; DROP TABLE jobs; --",
        "default",
        "null",
    ]
)
# Long enough to cross the per-field limits (128-byte request ids, 256-byte
# labels and descriptions, 16 KiB log lines, 128 KiB of cmd or env), short
# enough to send by the dozen.
LONG_TEXT = st.builds(
    operator.mul, st.sampled_from(["x", "é", "\x00", "💥"]), st.integers(100, 40_000)
)
# Around the 1 MiB input limit, and past the 16 MiB message limit.
HUGE_TEXT = st.builds(
    operator.mul, st.sampled_from(["x", "é"]), st.sampled_from([1 << 20, (1 << 20) + 1, 9 << 20])
)
TEXT = st.one_of(st.text(max_size=30), STRANGE_TEXT, LONG_TEXT)

VALID_DURATIONS = st.builds(duration_pb2.Duration, seconds=st.integers(1, 3600))
DURATIONS = st.one_of(
    st.builds(duration_pb2.Duration, seconds=INT64, nanos=INT32),
    st.builds(duration_pb2.Duration, seconds=st.integers(0, 120), nanos=st.integers(0, 10**9 - 1)),
)
VALID_TIMESTAMPS = st.builds(
    timestamp_pb2.Timestamp, seconds=st.integers(0, 2**32), nanos=st.integers(0, 10**9 - 1)
)
TIMESTAMPS = st.one_of(
    st.builds(timestamp_pb2.Timestamp, seconds=INT64, nanos=INT32), VALID_TIMESTAMPS
)

VALID_ORG_IDS = st.sampled_from(["", "default", "acme", "org-1.test"])
ORG_IDS = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True),
    st.sampled_from(["Default", "a" * 64, "a" * 65, "-a", "."]),
    TEXT,
).filter(lambda org_id: org_id not in RESERVED_ORGS)
"""Organisations a request may write to: never those holding the test's own jobs."""
READ_ORG_IDS = st.one_of(ORG_IDS, st.sampled_from(sorted(RESERVED_ORGS)))
"""Organisations a read-only request may name."""


def job_ids(*known: str) -> SearchStrategy[str]:
    """Unknown well-formed ids, near-misses of the canonical form, junk, and `known` ids."""
    return st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: u.urn),
        st.uuids().map(lambda u: f"{{{u}}}"),
        TEXT,
        *([st.sampled_from(known)] if known else []),
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
VALID_JSON_TEXTS = st.one_of(st.just(""), JSON_VALUES.map(json.dumps))
NESTING = st.sampled_from([2, 100, 5_000, 100_000])
JSON_TEXTS = st.one_of(
    NESTING.map(lambda depth: "[" * depth + "]" * depth),
    NESTING.map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.sampled_from(["NaN", "-Infinity", "1e999", "9" * 5000, "[", '{"a":', '"\\ud800"', "{} {}"]),
    TEXT,
    HUGE_TEXT,
)
"""Deeply nested JSON, almost-JSON, text and huge text."""

VALID_ENV = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
        lambda name: not name.startswith(("LD_", "DYLD_", "ZBRAIN_"))
    ),
    SAFE_TEXT,
    max_size=3,
)
ENV = st.one_of(
    st.dictionaries(
        st.one_of(
            st.sampled_from(["LD_PRELOAD", "DYLD_INSERT_LIBRARIES", "ZBRAIN_INPUT", "1X", ""]),
            TEXT,
        ),
        TEXT,
        min_size=1,
        max_size=4,
    ),
    st.integers(250, 260).map(lambda n: {f"V{i}": "x" for i in range(n)}),
)

Pairs = dict[str, tuple[SearchStrategy[Any], SearchStrategy[Any]]]

JOB_SPEC_FIELDS: Pairs = dict(
    org_id=(VALID_ORG_IDS, ORG_IDS),
    cmd=(
        st.lists(SAFE_TEXT, max_size=3).map(lambda args: ["prog", *args]),
        st.one_of(st.lists(TEXT, max_size=4), st.integers(1020, 1030).map(lambda n: ["x"] * n)),
    ),
    input_json=(VALID_JSON_TEXTS, JSON_TEXTS),
    env=(VALID_ENV, ENV),
    timeout=(optional(VALID_DURATIONS), DURATIONS),
    max_retries=(optional(st.integers(0, 100)), INT32),
    priority=(INT32, INT32),
    labels=(
        st.dictionaries(SAFE_TEXT.filter(bool), SAFE_TEXT, max_size=3),
        st.dictionaries(TEXT, TEXT, min_size=1, max_size=4),
    ),
    concurrency_key=(SAFE_TEXT, TEXT),
    concurrency_limit=(st.integers(0, 5), INT32),
    requires=(
        st.dictionaries(SAFE_TEXT.filter(bool), SAFE_TEXT, max_size=2),
        st.dictionaries(TEXT, TEXT, min_size=1, max_size=4),
    ),
)

LOG_LINES = Fields.of(
    job_pb2.LogLine,
    sequence=(INT64, INT64),  # ignored by the server
    stream=(known_values(job_pb2.LogStream), enum_numbers(job_pb2.LogStream)),
    attempt=(INT32, INT32),  # ignored by the server
    time=(optional(VALID_TIMESTAMPS), TIMESTAMPS),
    text=(st.text(max_size=40), TEXT),
)
LOG_REPORTS = (
    st.lists(st.builds(LOG_LINES.build, **LOG_LINES.valid), max_size=5),
    st.one_of(
        st.lists(LOG_LINES.any(), min_size=1, max_size=5),
        st.just([job_pb2.LogLine(stream=job_pb2.LOG_STREAM_STDOUT, text="x")] * 10_001),
    ),
)
"""Lines of one report: valid ones, or some of them wild, or too many."""

ATTEMPT_RESULT_FIELDS: Pairs = dict(
    outcome=(known_values(pb.AttemptOutcome), enum_numbers(pb.AttemptOutcome)),
    output_json=(VALID_JSON_TEXTS, JSON_TEXTS),
    error=(SAFE_TEXT, TEXT),
    exit_code=(optional(st.integers(-255, 255)), INT32),
)
ATTEMPT_RESULTS = Fields.of(pb.AttemptResult, **ATTEMPT_RESULT_FIELDS).any()


class Live(enum.Enum):
    """Stands for a value of the lease made for each example, filled in when sent."""

    JOB_ID = "the leased job's id"
    LEASE_EPOCH = "the lease's epoch"


@dataclass(frozen=True)
class Draft:
    """A request whose fields may name the example's live lease (`Live`)."""

    message: type[Message]
    fields: dict[str, Any]

    def build(self, lease: pb.Lease) -> Message:
        def fill(value: Any) -> Any:
            if value is Live.JOB_ID:
                return lease.job.id
            if value is Live.LEASE_EPOCH:
                return lease.lease_epoch
            if isinstance(value, Draft):
                return value.build(lease)
            return value

        return self.message(**{name: fill(value) for name, value in self.fields.items()})


def drafts_of(message: type[Message]) -> Callable[..., Draft]:
    def draft(**fields: Any) -> Draft:
        return Draft(message, fields)

    draft.__name__ = draft.__qualname__ = f"Draft[{message.__name__}]"
    return draft


def lease_fields(target: Target) -> Pairs:
    """job_id and lease_epoch: the live lease's, or others (the test's own jobs among them)."""
    return {
        "job_id": (st.just(Live.JOB_ID), job_ids(*target.job_ids.values())),
        "lease_epoch": (st.just(Live.LEASE_EPOCH), INT64),
    }


# -- JobService: clients -------------------------------------------------------------------


def submit_request(request_id: str, **spec: Any) -> pb.SubmitRequest:
    return pb.SubmitRequest(job=job_pb2.JobSpec(**spec), request_id=request_id)


async def test_submit_answers_random_job_specs_properly(target: Target) -> None:
    # The job's fields count as the request's: each of them gets its turn.
    requests = Fields.of(
        submit_request,
        **JOB_SPEC_FIELDS,
        request_id=(st.sampled_from(["", "retried-request"]), TEXT),
    )

    async def attempt(request: pb.SubmitRequest) -> None:
        (await target.send(request)).assert_proper()

    await target.fuzz_fields(requests, attempt, examples_per_field=25)


async def test_submit_batch_answers_random_batches_properly(target: Target) -> None:
    batches = st.builds(
        pb.SubmitBatchRequest,
        jobs=st.one_of(
            st.lists(Fields.of(job_pb2.JobSpec, **JOB_SPEC_FIELDS).any(), min_size=1, max_size=4),
            st.sampled_from([[], [job_pb2.JobSpec(cmd=["true"])] * 10_001]),
        ),
    )

    async def attempt(request: pb.SubmitBatchRequest) -> None:
        (await target.send(request)).assert_proper()

    await target.fuzz(batches, attempt, max_examples=80)


async def test_job_reads_and_cancel_answer_random_ids_properly(target: Target) -> None:
    job_id = (st.sampled_from(tuple(target.job_ids.values())), job_ids())
    for fields in (
        Fields.of(pb.GetRequest, job_id=job_id),
        Fields.of(pb.ListArtifactsRequest, job_id=job_id),
        Fields.of(
            pb.DownloadArtifactRequest,
            job_id=job_id,
            name=(st.sampled_from([ARTIFACT_NAME, "out/other.txt"]), TEXT),
        ),
        Fields.of(
            pb.StreamLogsRequest,
            job_id=job_id,
            after_sequence=(st.integers(0, 3), INT64),
            follow=(st.booleans(), st.booleans()),
        ),
        # Canceling a finished job changes nothing, so those may be named too.
        Fields.of(pb.CancelRequest, job_id=(st.sampled_from(target.finished_job_ids), job_ids())),
    ):

        async def attempt(request: Message) -> None:
            (await target.send(request)).assert_proper()

        await target.fuzz_fields(fields, attempt, examples_per_field=20)


async def test_list_answers_random_filters_and_page_tokens_properly(target: Target) -> None:
    def token_of(body: str) -> str:
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    page_tokens = st.one_of(
        JSON_TEXTS.map(token_of),
        st.builds(
            lambda after, filter_key: json.dumps({"after": after, "filter": filter_key}),
            job_ids(),
            st.one_of(TEXT, st.integers(), st.lists(st.integers())),
        ).map(token_of),
        TEXT,
    )
    requests = Fields.of(
        pb.ListRequest,
        org_id=(st.sampled_from(["", "default", SNAPSHOT_ORG]), READ_ORG_IDS),
        states=(
            st.lists(known_values(job_pb2.JobState), max_size=3),
            st.lists(enum_numbers(job_pb2.JobState), min_size=1, max_size=4),
        ),
        order=(st.sampled_from(list(pb.ListOrder.values())), INT32),
        page_size=(st.integers(0, 2000), INT32),
        page_token=(st.just(""), page_tokens),
    )

    async def attempt(request: pb.ListRequest) -> None:
        (await target.send(request)).assert_proper()

    await target.fuzz_fields(requests, attempt, examples_per_field=30)


async def test_stream_events_answers_random_requests_properly(target: Target) -> None:
    requests = Fields.of(
        pb.StreamEventsRequest,
        org_id=(st.sampled_from(["", "default", SNAPSHOT_ORG]), READ_ORG_IDS),
        topic_prefix=(
            st.sampled_from(["", "jobs/", "workers/"]),
            st.one_of(TEXT, st.sampled_from(["%", "_", "jobs/%"])),
        ),
        after_sequence=(st.integers(0, 20), INT64),
        follow=(st.booleans(), st.booleans()),
    )

    async def attempt(request: pb.StreamEventsRequest) -> None:
        (await target.send(request)).assert_proper()

    await target.fuzz_fields(requests, attempt, examples_per_field=15)


# -- JobService: unary workers -------------------------------------------------------------


async def test_acquire_lease_answers_random_workers_properly(target: Target) -> None:
    requests = Fields.of(
        pb.AcquireLeaseRequest,
        worker_id=(st.from_regex(r"[A-Za-z0-9_.:@-]{1,128}", fullmatch=True), TEXT),
        org_ids=(
            st.lists(st.sampled_from(["default", "acme"]), max_size=2),
            st.one_of(
                st.lists(ORG_IDS, min_size=1, max_size=3),
                st.integers(99, 102).map(lambda n: [f"org{i}" for i in range(n)]),
            ),
        ),
        max_jobs=(st.integers(0, 5), INT32),
        wait_timeout=(
            optional(st.builds(duration_pb2.Duration, nanos=st.integers(0, 10**8))),
            DURATIONS,
        ),
    )

    async def attempt(request: pb.AcquireLeaseRequest) -> None:
        (await target.send(request, timeout=ACQUIRE_TIMEOUT_S)).assert_proper()

    await target.fuzz_fields(requests, attempt, examples_per_field=15)


async def send_with_fresh_lease(target: Target, draft: Draft) -> None:
    lease = await target.fresh_lease()
    (await target.send(draft.build(lease))).assert_proper()


async def test_renew_lease_answers_random_renewals_properly(target: Target) -> None:
    renewals = Fields.of(drafts_of(pb.RenewLeaseRequest), **lease_fields(target))

    async def attempt(renewal: Draft) -> None:
        await send_with_fresh_lease(target, renewal)

    await target.fuzz_fields(renewals, attempt, examples_per_field=20)


async def test_report_logs_answers_random_log_reports_properly(target: Target) -> None:
    reports = Fields.of(drafts_of(pb.ReportLogsRequest), **lease_fields(target), lines=LOG_REPORTS)

    async def attempt(report: Draft) -> None:
        await send_with_fresh_lease(target, report)

    await target.fuzz_fields(reports, attempt, examples_per_field=25)


def complete_lease(job_id: Any, lease_epoch: Any, **result: Any) -> Draft:
    return Draft(
        pb.CompleteLeaseRequest,
        {"job_id": job_id, "lease_epoch": lease_epoch, "result": pb.AttemptResult(**result)},
    )


async def test_complete_lease_answers_random_results_properly(target: Target) -> None:
    # The result's fields count as the request's: each of them gets its turn.
    completions = Fields.of(complete_lease, **lease_fields(target), **ATTEMPT_RESULT_FIELDS)

    async def attempt(completion: Draft) -> None:
        await send_with_fresh_lease(target, completion)

    await target.fuzz_fields(completions, attempt, examples_per_field=20)


@st.composite
def uploads(draw: st.DrawFn, target: Target) -> list[Draft]:
    """An upload stream: a header (true to its content, or not), then chunks, maybe reordered."""
    chunks = draw(st.lists(st.binary(max_size=3000), max_size=4))
    content = b"".join(chunks)
    artifact = Fields.of(
        job_pb2.Artifact,
        name=(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}", fullmatch=True), TEXT),
        sha256=(
            st.just(hashlib.sha256(content).hexdigest()),
            st.one_of(TEXT, st.binary(min_size=32, max_size=32).map(bytes.hex)),
        ),
        size_bytes=(st.just(len(content)), INT64),
    )
    headers = Fields.of(
        drafts_of(pb.ArtifactHeader),
        **lease_fields(target),
        artifact=(st.builds(artifact.build, **artifact.valid), optional(artifact.any())),
    )
    spoiled = draw(st.sampled_from([None, *headers.valid]))
    header = draw(
        headers.valid_but(spoiled) if spoiled else st.builds(headers.build, **headers.valid)
    )
    parts = [
        Draft(pb.UploadArtifactRequest, {"header": header}),
        *(Draft(pb.UploadArtifactRequest, {"chunk": chunk}) for chunk in chunks),
    ]
    strays = st.sampled_from([Draft(pb.UploadArtifactRequest, {}), parts[0]])
    parts += draw(st.lists(strays, max_size=1))
    if draw(st.booleans()):
        parts = draw(st.permutations(parts))
    return parts


async def test_upload_artifact_answers_random_uploads_properly(target: Target) -> None:
    async def attempt(parts: list[Draft]) -> None:
        lease = await target.fresh_lease()
        (await target.send(*(part.build(lease) for part in parts))).assert_proper()

    await target.fuzz(uploads(target), attempt, max_examples=80)


# -- WorkerService ---------------------------------------------------------------------------


async def test_connect_answers_random_worker_streams_properly(target: Target) -> None:
    lease_refs = Fields.of(
        wpb.LeaseRef,
        job_id=(
            st.one_of(st.uuids().map(str), st.sampled_from(tuple(target.job_ids.values()))),
            TEXT,
        ),
        lease_epoch=(st.integers(0, 3), INT64),
    ).any()
    hellos = Fields.of(
        wpb.WorkerHello,
        worker_id=(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True), TEXT),
        org_ids=(st.lists(st.sampled_from(["default", "acme"]), max_size=2), st.lists(ORG_IDS)),
        concurrency=(st.integers(1, 4), INT32),
        labels=(st.dictionaries(SAFE_TEXT, SAFE_TEXT, max_size=2), st.dictionaries(TEXT, TEXT)),
    )
    reports_by_kind = [
        st.builds(
            wpb.ConnectRequest,
            logs=st.builds(
                wpb.WorkerLogs, lease=optional(lease_refs), lines=st.one_of(*LOG_REPORTS)
            ),
        ),
        st.builds(
            wpb.ConnectRequest,
            result=st.builds(
                wpb.WorkerResult, lease=optional(lease_refs), result=optional(ATTEMPT_RESULTS)
            ),
        ),
        st.builds(
            wpb.ConnectRequest,
            heartbeat=st.builds(wpb.WorkerHeartbeat, leases=st.lists(lease_refs, max_size=3)),
        ),
        st.builds(wpb.ConnectRequest, drain=st.builds(wpb.WorkerDrain, reason=TEXT)),
    ]
    # After the hello, anything but a report ends the session.
    strays = st.one_of(
        st.builds(wpb.ConnectRequest, hello=hellos.any()), st.just(wpb.ConnectRequest())
    )

    async def attempt(stream: list[wpb.ConnectRequest]) -> None:
        (await target.send(*stream)).assert_proper()

    # Sessions that start well, one kind of report at a time (each gets its share).
    for reports in reports_by_kind:
        sessions = st.builds(
            lambda hello, rest, stray: [wpb.ConnectRequest(hello=hello), *rest, *stray],
            st.builds(hellos.build, **hellos.valid),
            st.lists(reports, min_size=1, max_size=3),
            st.lists(strays, max_size=1),
        )
        await target.fuzz(sessions, attempt, max_examples=30)
    # Sessions that start badly.
    openings = st.builds(
        lambda first, rest: [first, *rest],
        st.one_of(strays, *reports_by_kind),
        st.lists(st.one_of(*reports_by_kind), max_size=2),
    )
    await target.fuzz(openings, attempt, max_examples=30)


# -- TokenService ----------------------------------------------------------------------------


async def test_token_service_answers_random_requests_properly(target: Target) -> None:
    for fields in (
        Fields.of(
            tpb.CreateTokenRequest,
            org_id=(VALID_ORG_IDS.filter(bool), ORG_IDS),
            role=(known_values(tpb.TokenRole), enum_numbers(tpb.TokenRole)),
            description=(SAFE_TEXT, TEXT),
        ),
        Fields.of(tpb.ListTokensRequest, org_id=(VALID_ORG_IDS, TEXT)),
        Fields.of(
            tpb.RevokeTokenRequest,
            token_id=(st.binary(min_size=6, max_size=6).map(bytes.hex), TEXT),
        ),
    ):

        async def attempt(request: Message) -> None:
            (await target.send(request)).assert_proper()

        await target.fuzz_fields(fields, attempt, examples_per_field=15)


# -- Rerun, TemplateService, ScheduleService ------------------------------------------------
#
# Everything these store goes to organisations other than the snapshot's (a
# rerun of a snapshot job would list itself on it), so the stored state
# checked after every run stays as it was.

FUZZ_ORG = "acme"


async def finished_job_of_fuzz_org(target: Target) -> str:
    """A job of FUZZ_ORG that succeeded, through valid requests: one to rerun."""
    spec = job_pb2.JobSpec(org_id=FUZZ_ORG, cmd=["true"], max_retries=0, priority=2**31 - 1)
    job: job_pb2.Job = (await target.jobs.Submit(pb.SubmitRequest(job=spec))).job
    answer = await target.jobs.AcquireLease(
        pb.AcquireLeaseRequest(worker_id="fuzz-rerun", org_ids=[FUZZ_ORG], max_jobs=1)
    )
    [lease] = answer.leases
    assert lease.job.id == job.id
    succeeded = pb.AttemptResult(outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED, output_json="1")
    await target.jobs.CompleteLease(
        pb.CompleteLeaseRequest(job_id=job.id, lease_epoch=lease.lease_epoch, result=succeeded)
    )
    return job.id


async def test_rerun_answers_random_requests_properly(target: Target) -> None:
    finished = await finished_job_of_fuzz_org(target)

    def rerun(job_id: str, input_json: str | None) -> pb.RerunRequest:
        request = pb.RerunRequest(job_id=job_id)
        if input_json is not None:
            request.input_json = input_json
        return request

    requests = Fields.of(
        rerun,
        # The snapshot's pending job may be named: it cannot be rerun, so nothing changes.
        job_id=(st.just(finished), job_ids(target.job_ids["pending"])),
        input_json=(optional(VALID_JSON_TEXTS.filter(bool)), JSON_TEXTS),
    )

    async def attempt(request: pb.RerunRequest) -> None:
        (await target.send(request)).assert_proper()

    await target.fuzz_fields(requests, attempt, examples_per_field=20)


KNOWN_TEMPLATE = "known"
TEMPLATE_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
TEMPLATE_JOB = job_pb2.JobSpec(
    cmd=["echo", "{{ p }}"], input_json='{"p": "{{ p }}", "cfg": "{{ cfg }}", "n": 1}'
)
PARAMETERS = Fields.of(
    template_pb2.Parameter,
    name=(st.just("p"), st.one_of(st.sampled_from(["1p", "p p", "{{ p }}", "q"]), TEXT)),
    type=(known_values(template_pb2.ParameterType), enum_numbers(template_pb2.ParameterType)),
    required=(st.booleans(), st.booleans()),
    default_json=(st.just(""), JSON_TEXTS),
    description=(SAFE_TEXT, TEXT),
)
PARAMETER_VALUES = st.one_of(
    st.dictionaries(
        st.sampled_from(["p", "cfg", "q", ""]), st.one_of(JSON_TEXTS, TEXT), max_size=3
    ),
    st.just({f"p{i}": "1" for i in range(5000)}),
)


async def store_known_template(target: Target) -> None:
    parameters = [
        template_pb2.Parameter(name="p", required=True),
        template_pb2.Parameter(name="cfg", type=template_pb2.PARAMETER_TYPE_JSON),
    ]
    request = create_template(FUZZ_ORG, KNOWN_TEMPLATE, TEMPLATE_JOB, parameters, "")
    assert (await target.send(request)).code is grpc.StatusCode.OK


def create_template(
    org_id: str,
    name: str,
    job: job_pb2.JobSpec | None,
    parameters: list[template_pb2.Parameter],
    description: str,
) -> template_pb2.CreateTemplateRequest:
    template = template_pb2.Template(
        org_id=org_id, name=name, job=job, parameters=parameters, description=description
    )
    return template_pb2.CreateTemplateRequest(template=template)


async def test_template_service_answers_random_requests_properly(target: Target) -> None:
    await store_known_template(target)
    org_id = (st.just(FUZZ_ORG), ORG_IDS)
    for fields in (
        Fields.of(
            create_template,
            org_id=org_id,
            name=(st.one_of(st.just(KNOWN_TEMPLATE), TEMPLATE_NAMES), TEXT),
            job=(
                st.just(TEMPLATE_JOB),
                optional(
                    st.one_of(
                        Fields.of(job_pb2.JobSpec, **JOB_SPEC_FIELDS).any(),
                        st.builds(
                            lambda cmd: job_pb2.JobSpec(cmd=["echo", *cmd]),
                            st.lists(
                                st.sampled_from(["{{ p }}", "{{ q }}", "{{", "{{ p }}" * 5000]),
                                max_size=3,
                            ),
                        ),
                    )
                ),
            ),
            parameters=(
                st.just([template_pb2.Parameter(name="p", required=True)]),
                st.one_of(
                    st.lists(PARAMETERS.any(), max_size=3),
                    st.lists(  # defaults of every type, for one parameter the job uses
                        st.builds(
                            template_pb2.Parameter,
                            name=st.just("p"),
                            type=known_values(template_pb2.ParameterType),
                            default_json=JSON_TEXTS,
                        ),
                        min_size=1,
                        max_size=1,
                    ),
                    st.just([template_pb2.Parameter(name=f"p{i}") for i in range(101)]),
                ),
            ),
            description=(SAFE_TEXT, TEXT),
        ),
        Fields.of(
            template_pb2.SubmitTemplateRequest,
            org_id=org_id,
            name=(st.just(KNOWN_TEMPLATE), TEXT),
            version=(st.integers(0, 3), INT32),
            parameters=(st.just({"p": "x"}), PARAMETER_VALUES),
            request_id=(st.sampled_from(["", "again"]), TEXT),
        ),
        Fields.of(
            template_pb2.GetTemplateRequest,
            org_id=org_id,
            name=(st.just(KNOWN_TEMPLATE), TEXT),
            version=(st.integers(0, 3), INT32),
        ),
        Fields.of(
            template_pb2.ListTemplatesRequest,
            org_id=org_id,
            page_size=(st.integers(0, 5), INT32),
            page_token=(st.just(""), st.one_of(TEXT, TEXT.map(lambda t: t.encode().hex()))),
        ),
        # Not the known template: the other requests keep finding it.
        Fields.of(
            template_pb2.DeleteTemplateRequest,
            org_id=org_id,
            name=(TEMPLATE_NAMES.filter(lambda name: name != KNOWN_TEMPLATE), TEXT),
        ),
    ):

        async def attempt(request: Message) -> None:
            (await target.send(request)).assert_proper()

        await target.fuzz_fields(fields, attempt, examples_per_field=12)


KNOWN_SCHEDULE = "known"
SCHEDULE_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
CRONS = st.one_of(
    st.sampled_from(
        ["61 * * * *", "* * * *", "* * * * * *", "0 0 30 2 *", "*/0 * * * *", "L L L L L", "@daily"]
    ),
    st.lists(
        st.sampled_from(["*", "1", "1-5", "*/7", "L", "1#5", "MON", "x", "-1", "99"]),
        min_size=5,
        max_size=5,
    ).map(" ".join),
    TEXT,
)
ZONES = st.one_of(
    st.sampled_from(
        ["America/", "America", "../etc", "/etc/localtime", "zone.tab", "UTC", "Mars/Base"]
    ),
    TEXT,
)
HOURS = st.integers(1, 48).map(lambda hours: duration_pb2.Duration(seconds=3600 * hours))
# Ticks far away: a schedule the fuzzing stores never fires while it runs.
NEXT_YEAR_CRON = "0 0 1 1 *"


ScheduleRequestClass = (
    type[schedule_pb2.CreateScheduleRequest] | type[schedule_pb2.UpdateScheduleRequest]
)


def schedule_request(
    kind: ScheduleRequestClass, *, job: Any = None, template: Any = None, **fields: Any
) -> Message:
    message = schedule_pb2.Schedule(job=job, template=template, **fields)
    return kind(schedule=message)


def schedule_fields(kind: ScheduleRequestClass, *, cron: bool, on_template: bool) -> Fields:
    """The fields of a Create- or UpdateScheduleRequest: on a cron expression
    or an interval, submitting a job or the known template."""
    timing: Pairs = (
        dict(
            cron=(st.just(NEXT_YEAR_CRON), CRONS),
            time_zone=(st.sampled_from(["", "UTC", "Europe/Paris"]), ZONES),
        )
        if cron
        else dict(interval=(HOURS, optional(DURATIONS)), time_zone=(st.just(""), ZONES))
    )
    template_refs = Fields.of(
        schedule_pb2.TemplateRef,
        name=(st.just(KNOWN_TEMPLATE), TEXT),
        version=(st.just(0), INT32),
        parameters=(st.just({"p": "x"}), PARAMETER_VALUES),
    )
    jobs = (
        st.just(job_pb2.JobSpec(cmd=["true"])),
        optional(Fields.of(job_pb2.JobSpec, **JOB_SPEC_FIELDS).any()),
    )
    refs = (st.builds(template_refs.build, **template_refs.valid), optional(template_refs.any()))
    nothing = (st.none(), st.none())
    return Fields.of(
        lambda **drawn: schedule_request(kind, **drawn),
        id=(st.one_of(st.just(KNOWN_SCHEDULE), SCHEDULE_IDS), TEXT),
        org_id=(st.just(FUZZ_ORG), ORG_IDS),
        **timing,
        job=nothing if on_template else jobs,
        template=refs if on_template else (st.none(), optional(template_refs.any())),
        overlap=(
            known_values(schedule_pb2.OverlapPolicy),
            enum_numbers(schedule_pb2.OverlapPolicy),
        ),
        catch_up=(
            known_values(schedule_pb2.CatchUpPolicy),
            enum_numbers(schedule_pb2.CatchUpPolicy),
        ),
        paused=(st.booleans(), st.booleans()),
    )


async def test_schedule_service_answers_random_requests_properly(target: Target) -> None:
    await store_known_template(target)
    known = schedule_pb2.Schedule(
        id=KNOWN_SCHEDULE, org_id=FUZZ_ORG, cron=NEXT_YEAR_CRON, job=job_pb2.JobSpec(cmd=["true"])
    )
    (await target.send(schedule_pb2.CreateScheduleRequest(schedule=known))).assert_proper()

    async def attempt(request: Message) -> None:
        (await target.send(request)).assert_proper()

    for kind in (schedule_pb2.CreateScheduleRequest, schedule_pb2.UpdateScheduleRequest):
        for cron, on_template in ((True, False), (False, True)):
            fields = schedule_fields(kind, cron=cron, on_template=on_template)
            await target.fuzz_fields(fields, attempt, examples_per_field=6)

    schedule_id = (st.just(KNOWN_SCHEDULE), st.one_of(SCHEDULE_IDS, TEXT))
    org_id = (st.just(FUZZ_ORG), ORG_IDS)
    for by_id in (
        schedule_pb2.GetScheduleRequest,
        schedule_pb2.PauseScheduleRequest,
        schedule_pb2.ResumeScheduleRequest,
        schedule_pb2.TriggerScheduleRequest,
    ):
        fields = Fields.of(by_id, org_id=org_id, schedule_id=schedule_id)
        await target.fuzz_fields(fields, attempt, examples_per_field=8)
    await target.fuzz_fields(
        Fields.of(
            schedule_pb2.ListSchedulesRequest,
            org_id=org_id,
            page_size=(st.integers(0, 5), INT32),
            page_token=(st.just(""), TEXT),
        ),
        attempt,
        examples_per_field=8,
    )
    await target.fuzz_fields(
        Fields.of(
            schedule_pb2.DeleteScheduleRequest,
            org_id=org_id,
            schedule_id=(SCHEDULE_IDS.filter(lambda i: i != KNOWN_SCHEDULE), TEXT),
        ),
        attempt,
        examples_per_field=8,
    )


# -- OrgService ------------------------------------------------------------------------------


def label_selectors(text: SearchStrategy[str]) -> SearchStrategy[Any]:
    return optional(st.builds(opb.LabelSelector, labels=st.dictionaries(text, text, max_size=3)))


async def test_org_service_answers_random_requests_properly(target: Target) -> None:
    valid_org = VALID_ORG_IDS.filter(bool)
    for fields in (
        Fields.of(opb.GetOrgSettingsRequest, org_id=(VALID_ORG_IDS, ORG_IDS)),
        Fields.of(
            opb.UpdateOrgSettingsRequest,
            org_id=(valid_org, ORG_IDS),
            max_running_jobs=(optional(st.integers(0, 100)), optional(INT32)),
            max_starts_per_second=(optional(st.floats(0, 1000)), optional(st.floats())),
            max_waiting_jobs=(optional(st.integers(0, 10**6)), optional(INT32)),
            max_log_bytes=(optional(st.integers(0, 10**9)), optional(INT64)),
            retention_days=(optional(st.integers(0, 3650)), optional(INT32)),
        ),
        Fields.of(
            opb.PauseOrgRequest,
            org_id=(valid_org, ORG_IDS),
            selector=(label_selectors(SAFE_TEXT.filter(bool)), label_selectors(TEXT)),
        ),
        Fields.of(
            opb.ResumeOrgRequest,
            org_id=(valid_org, ORG_IDS),
            selector=(label_selectors(SAFE_TEXT.filter(bool)), label_selectors(TEXT)),
        ),
    ):

        async def attempt(request: Message) -> None:
            (await target.send(request)).assert_proper()

        await target.fuzz_fields(fields, attempt, examples_per_field=15)


# -- raw bodies to every method --------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def wire_field(number: int, wire_type: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire_type) + payload


FIELD_NUMBERS = st.integers(1, 12)
WIRE_MESSAGES = st.recursive(
    st.just(b""),
    lambda inner: st.lists(
        st.one_of(
            st.builds(
                lambda n, v: wire_field(n, 0, varint(v)), FIELD_NUMBERS, st.integers(0, 2**64 - 1)
            ),
            st.builds(
                lambda n, body: wire_field(n, 2, varint(len(body)) + body),
                FIELD_NUMBERS,
                st.one_of(st.binary(max_size=40), inner),
            ),
            st.builds(
                lambda n, v: wire_field(n, 1, v), FIELD_NUMBERS, st.binary(min_size=8, max_size=8)
            ),
            st.builds(
                lambda n, v: wire_field(n, 5, v), FIELD_NUMBERS, st.binary(min_size=4, max_size=4)
            ),
        ),
        max_size=5,
    ).map(b"".join),
    max_leaves=10,
)
"""Well-framed protobuf wire data with random field numbers, types and nesting."""
BODIES = st.one_of(st.binary(max_size=200), WIRE_MESSAGES)


def parses(method: MethodDescriptor, body: bytes) -> bool:
    try:
        message_class(method.input_type).FromString(body)
    except DecodeError:
        return False
    return True


def is_undecodable_body_report(record: logging.LogRecord) -> bool:
    """grpc's own log line for a request body its deserializer could not parse."""
    return record.exc_info is not None and isinstance(record.exc_info[1], DecodeError)


async def test_every_method_answers_raw_bodies_properly(target: Target) -> None:
    async def attempt(call: tuple[str, list[bytes]]) -> None:
        name, bodies = call
        method = METHOD_NAMED[name]
        answer = await invoke(
            target.channels,
            method,
            bodies,
            raw=True,
            hang_up_after=RAW_FOLLOW_FOR_S if method.server_streaming else None,
        )
        # grpc.aio itself answers a body that the generated deserializer cannot
        # parse with UNKNOWN ("Unexpected <class 'DecodeError'>") before any
        # ZBrain code runs. Only bodies that really do not parse get that leeway;
        # every body that parses must be answered like a typed request.
        if (
            answer.code is grpc.StatusCode.UNKNOWN
            and "DecodeError" in answer.details
            and not all(parses(method, body) for body in bodies)
        ):
            return
        answer.assert_proper()

    for name, method in METHOD_NAMED.items():  # each method gets its share
        calls = st.tuples(
            st.just(name),
            st.lists(BODIES, min_size=1, max_size=3 if method.client_streaming else 1),
        )
        await target.fuzz(calls, attempt, max_examples=12, tolerated=is_undecodable_body_report)


async def _coroutine(awaitable: Any) -> None:
    """A coroutine for run_coroutine_threadsafe, whatever awaitable `attempt` returned."""
    await awaitable
