"""RPC spans that are not recorded keep the context the SDK would give them."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    ParentBased,
    Sampler,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from zbrain import telemetry
from zbrain.errors import InvalidArgumentError
from zbrain_server.dispatch.metrics import Telemetry
from zbrain_server.rpc.telemetry import RpcTelemetry

ATTRIBUTES = {"rpc.system": "grpc", "rpc.service": "zbrain.v1.JobService", "rpc.method": "Get"}


def caller(flags: int, state: TraceState | None = None) -> Context:
    """The context extracted from a caller's traceparent."""
    remote = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(flags),
        trace_state=state,
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def started(sampler: Sampler, parent: Context, *, record_spans: bool) -> SpanContext:
    telemetry = RpcTelemetry(Telemetry(TracerProvider(sampler=sampler), record_spans=record_spans))
    span = telemetry.start_rpc_span("zbrain.v1.JobService/Get", parent, ATTRIBUTES)
    if not record_spans:
        assert not span.is_recording()
    return span.get_span_context()


@pytest.mark.parametrize(
    "sampler",
    [DEFAULT_ON, ALWAYS_ON, ALWAYS_OFF, ParentBased(ALWAYS_OFF)],
    ids=["default", "always-on", "always-off", "parent-or-off"],
)
@pytest.mark.parametrize(
    "parent",
    [
        Context(),
        caller(TraceFlags.SAMPLED),
        caller(TraceFlags.DEFAULT),
        caller(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID, TraceState([("vendor", "x")])),
    ],
    ids=["root", "sampled-caller", "unsampled-caller", "random-id-caller-with-state"],
)
def test_an_unrecorded_rpc_span_has_the_context_of_a_recorded_one(
    sampler: Sampler, parent: Context
) -> None:
    recorded = started(sampler, parent, record_spans=True)
    unrecorded = started(sampler, parent, record_spans=False)

    assert unrecorded.is_valid and not unrecorded.is_remote
    assert unrecorded.span_id != recorded.span_id
    assert unrecorded.trace_flags == recorded.trace_flags
    assert unrecorded.trace_state == recorded.trace_state
    inherited = trace.get_current_span(parent).get_span_context()
    if inherited.is_valid:
        assert unrecorded.trace_id == recorded.trace_id == inherited.trace_id
    else:
        assert unrecorded.trace_id != recorded.trace_id  # a new trace each


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1:abc", "nonsense"])
def test_a_metrics_address_that_is_not_host_port_is_refused(listen: str) -> None:
    with pytest.raises(InvalidArgumentError, match="from 0 to 65535"):
        telemetry.configure("test", metrics_listen=listen)
