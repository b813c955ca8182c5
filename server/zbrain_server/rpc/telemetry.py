"""RPC spans and durations: one span per RPC, joined to the caller's trace
through the `traceparent` metadata, and a duration by method and status.

Without a span exporter (`zbrain serve`'s default) spans are not recorded,
but RPC spans still get the context a recorded one would have: a job keeps
it (`current_trace_context`), logs show its trace id, and workers join its
trace. The job-attempt spans and the server's metrics are the dispatcher's
(`dispatch.metrics`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from ..dispatch.metrics import Telemetry


def current_trace_context() -> dict[str, str]:
    """The W3C trace context of the current span, to store with a job."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class RpcTelemetry:
    """A span and a duration for every RPC (see `_RpcInterceptor`)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer
        self._record_spans = telemetry.record_spans
        self._rpc_duration = telemetry.meter.create_histogram(
            "rpc.server.duration", "ms", "Duration of RPCs handled by the server"
        )
        self._rpc_attributes: dict[tuple[str, str], dict[str, str]] = {}

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

    def __init__(self, telemetry: RpcTelemetry) -> None:
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


def _instrument(telemetry: RpcTelemetry, method: str, handler: Any) -> Any:
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
        # The span is not made the current one: a stream's generator may be
        # closed from another task, where detaching a context attached here
        # fails (and logged a traceback for every canceled stream); nothing a
        # stream does needs its span as a parent.
        current = span(context)
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
            current.end()

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
