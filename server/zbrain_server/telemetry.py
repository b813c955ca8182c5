"""The server's traces and metrics (OpenTelemetry).

Traces: one span per RPC (from the interceptor, joined to the caller's trace
through the `traceparent` metadata), and one span per job attempt from lease
to finish, whose parent is the Submit call that created the job: the
submitter's trace context is stored with the job and also handed to the
worker with its lease, so the worker's execution span joins the same trace.

Without a span exporter (`zbrain serve`'s default) spans are not recorded,
but RPC spans still get the context a recorded one would have: a job keeps
it, logs show its trace id, and workers join its trace.

Metrics are recorded where the dispatcher applies changes; queue depth is
read from the store by a periodic refresh rather than on every scrape.
"""

from __future__ import annotations

import collections
import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from .model import Job, JobState, Lease, LogLine

ATTEMPT_SPAN = "zbrain.job.attempt"
_TERMINAL_COUNTERS = {
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELED: "canceled",
}


def current_trace_context() -> dict[str, str]:
    """The W3C trace context of the current span, to store with a job."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class Telemetry:
    """Instruments of one server; providers default to the global ones.

    `record_spans=False` says no span is exported anywhere: spans would be
    built only to be dropped, which cost about 14% of the server's CPU per
    Submit, so RPC spans are then only a context (`_context_span`) and
    attempt spans are not made.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        record_spans: bool = True,
    ) -> None:
        self.tracer = trace.get_tracer("zbrain.server", tracer_provider=tracer_provider)
        self._record_spans = record_spans
        meter = metrics.get_meter("zbrain.server", meter_provider=meter_provider)
        self._submitted = meter.create_counter("zbrain.jobs.submitted", "{job}", "Jobs accepted")
        self._finished = {
            state: meter.create_counter(f"zbrain.jobs.{name}", "{job}", f"Jobs that ended {name}")
            for state, name in _TERMINAL_COUNTERS.items()
        }
        self._retried = meter.create_counter(
            "zbrain.jobs.retried", "{job}", "Failed attempts that were scheduled for a retry"
        )
        self._dispatch_latency = meter.create_histogram(
            "zbrain.dispatch.latency", "s", "Time from submission to the first lease"
        )
        self._run_time = meter.create_histogram(
            "zbrain.attempt.duration", "s", "Time from lease to the end of an attempt"
        )
        self._lease_expirations = meter.create_counter(
            "zbrain.leases.expired", "{lease}", "Attempts failed because their lease expired"
        )
        self._log_lines = meter.create_counter("zbrain.logs.lines", "{line}", "Log lines stored")
        self._log_bytes = meter.create_counter("zbrain.logs.bytes", "By", "Log text stored")
        self._rpc_duration = meter.create_histogram(
            "rpc.server.duration", "ms", "Duration of RPCs handled by the server"
        )
        self._rpc_attributes: dict[tuple[str, str], dict[str, str]] = {}
        self._queue: Mapping[tuple[str, JobState], int] = {}
        self._connected_workers: Callable[[], int] = lambda: 0
        meter.create_observable_gauge(
            "zbrain.queue.depth", [self._observe_queue], "{job}", "Unfinished jobs by org and state"
        )
        meter.create_observable_gauge(
            "zbrain.leases.active", [self._observe_leases], "{lease}", "Attempts running now"
        )
        meter.create_observable_gauge(
            "zbrain.workers.connected",
            [lambda _: [Observation(self._connected_workers())]],
            "{worker}",
            "Workers connected over WorkerService.Connect",
        )

    # -- what the dispatcher reports ----------------------------------------------

    def watch_workers(self, count: Callable[[], int]) -> None:
        self._connected_workers = count

    def set_queue_depth(self, depth: Mapping[tuple[str, JobState], int]) -> None:
        self._queue = depth

    def submitted(self, jobs: Iterable[Job]) -> None:
        for org_id, count in collections.Counter(job.org_id for job in jobs).items():
            self._submitted.add(count, {"org": org_id})

    def leased(self, leases: Sequence[Lease]) -> None:
        for lease in leases:
            job = lease.job
            if job.attempt == 1 and job.start_time_us is not None:
                self._dispatch_latency.record(
                    (job.start_time_us - job.create_time_us) / 1e6, {"org": job.org_id}
                )

    def attempt_ended(self, job: Job, *, lease_expired: bool = False) -> None:
        """Count an attempt's end and emit its span, from lease to now."""
        attributes = {"org": job.org_id}
        if job.state is JobState.RETRYING:
            self._retried.add(1, attributes)
        elif job.state in self._finished:
            self._finished[job.state].add(1, attributes)
        if lease_expired:
            self._lease_expirations.add(1, attributes)
        if job.start_time_us is None:
            return  # canceled before it ever ran
        self._run_time.record(
            (job.update_time_us - job.start_time_us) / 1e6, {**attributes, "state": job.state.name}
        )
        if not self._record_spans:
            return  # unrecorded, it would leave nothing behind: no span descends from it
        span = self.tracer.start_span(
            ATTEMPT_SPAN,
            context=propagate.extract(dict(job.trace_context)),
            kind=SpanKind.INTERNAL,
            start_time=job.start_time_us * 1000,
            attributes={
                "zbrain.job_id": job.id,
                "zbrain.org_id": job.org_id,
                "zbrain.attempt": job.attempt,
                "zbrain.worker_id": job.worker_id,
                "zbrain.state": job.state.name,
            },
        )
        if job.state is not JobState.SUCCEEDED and job.last_error:
            span.set_status(Status(StatusCode.ERROR, job.last_error))
        span.end(end_time=job.update_time_us * 1000)

    def canceled_waiting(self, job: Job) -> None:
        self._finished[JobState.CANCELED].add(1, {"org": job.org_id})

    def logged(self, lines: Sequence[LogLine]) -> None:
        self._log_lines.add(len(lines))
        self._log_bytes.add(sum(len(line.text.encode()) for line in lines))

    # -- gauges ---------------------------------------------------------------------

    def _observe_queue(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"org": org, "state": state.name})
            for (org, state), count in self._queue.items()
        ]

    def _observe_leases(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(sum(n for (_, s), n in self._queue.items() if s is JobState.RUNNING))]

    # -- RPCs -------------------------------------------------------------------------

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _RpcInterceptor(self)

    def start_rpc_span(self, name: str, parent: Context, attributes: dict[str, str]) -> trace.Span:
        """The span of one RPC, in the caller's trace (`parent`) when it sent one."""
        if self._record_spans or not isinstance(self.tracer, SdkTracer):
            return self.tracer.start_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes
            )
        return _context_span(self.tracer, name, parent, SpanKind.SERVER, attributes)

    def record_rpc(self, method: str, code: str, started: float) -> None:
        # One attribute set per method and status, made once: the SDK copies it anyway.
        attributes = self._rpc_attributes.get((method, code))
        if attributes is None:
            attributes = {"rpc.method": method, "rpc.grpc.status_code": code}
            self._rpc_attributes[method, code] = attributes
        self._rpc_duration.record((time.perf_counter() - started) * 1000, attributes)


class _RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A span and a duration for every RPC, in the caller's trace when it sent one.

    The instrumented handler of a method is made once and reused for as long
    as the inner handler is the same object (it is for every call an inner
    interceptor does not wrap anew), so a call costs a lookup here rather
    than new closures and attribute sets: this runs on every RPC.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._instrumented: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        known = self._instrumented.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        instrumented = _instrument(self._telemetry, method.lstrip("/"), handler)
        self._instrumented[method] = (handler, instrumented)
        return instrumented


def _instrument(telemetry: Telemetry, method: str, handler: Any) -> Any:
    """`handler` with each call in a server span, its duration recorded by status."""
    service, _, name = method.partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def span(context: Any) -> trace.Span:
        parent = propagate.extract(dict(context.invocation_metadata() or ()))
        return telemetry.start_rpc_span(method, parent, attributes)

    def finish(current: Any, context: Any, started: float, failed: BaseException | None) -> None:
        code = _status_name(context, failed)
        current.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            current.set_status(Status(StatusCode.ERROR, code))
        telemetry.record_rpc(method, code, started)

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: Any) -> Any:
            started, failed = time.perf_counter(), None
            with trace.use_span(span(context), end_on_exit=True) as current:
                try:
                    return await inner(request, context)
                except BaseException as error:
                    failed = error
                    raise
                finally:
                    finish(current, context, started, failed)

        kind = "unary_unary" if handler.unary_unary else "stream_unary"
        return handler._replace(**{kind: unary})

    inner_stream = handler.unary_stream or handler.stream_stream

    async def streaming(request: Any, context: Any) -> Any:
        started, failed = time.perf_counter(), None
        with trace.use_span(span(context), end_on_exit=True) as current:
            try:
                responses = inner_stream(request, context)
                if inspect.isasyncgen(responses):
                    async for message in responses:
                        yield message
                else:  # a handler that writes with context.write() (the health service)
                    await responses
            except BaseException as error:
                failed = error
                raise
            finally:
                finish(current, context, started, failed)

    kind = "unary_stream" if handler.unary_stream else "stream_stream"
    return handler._replace(**{kind: streaming})


def _context_span(
    tracer: SdkTracer, name: str, parent: Context, kind: SpanKind, attributes: dict[str, str]
) -> trace.Span:
    """A span that records nothing, with the context `tracer.start_span` would give it.

    The SDK has no span that is sampled but not recorded, so this is its
    `start_span` without the recording: the same ids, the same sampler
    decision and flags (tests/unit/test_telemetry.py holds the two to the
    same result).
    """
    parent_context = trace.get_current_span(parent).get_span_context()
    ids = tracer.id_generator
    if parent_context.is_valid:
        trace_id = parent_context.trace_id
        random_trace_id = parent_context.trace_flags.random_trace_id
    else:
        trace_id, random_trace_id = ids.generate_trace_id(), ids.is_trace_id_random()
    sampling = tracer.sampler.should_sample(parent, trace_id, name, kind, attributes, ())
    sampled = sampling.decision.is_sampled()  # type: ignore[no-untyped-call]
    flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
    if random_trace_id:
        flags |= TraceFlags.RANDOM_TRACE_ID
    return NonRecordingSpan(
        SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=sampling.trace_state,
        )
    )


_STATUS_NAMES: dict[int, str] = {code.value[0]: code.name for code in grpc.StatusCode}


def _status_name(context: Any, failed: BaseException | None) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        return _STATUS_NAMES.get(code, "UNKNOWN")
    return "OK" if failed is None else "UNKNOWN"
