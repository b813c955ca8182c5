"""OpenTelemetry for `zbrain serve` and `zbrain worker`, and trace propagation
for clients (`trace_metadata`).

The client distribution depends on the OpenTelemetry API only: propagating
the caller's trace context costs nothing more. Recording and exporting spans
and metrics needs the SDK, which the server distribution installs and a
worker gets with `pip install 'zbrain[otel]'`; `configure` imports it only
when asked to.

Exporters are chosen by configuration: none by default; `console` for
debugging; `otlp` when an endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT,
which selects it by default); and a Prometheus scrape endpoint for metrics
(`--metrics-listen HOST:PORT`, the server's).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from .errors import InvalidArgumentError

EXPORTERS = ("none", "console", "otlp")


def exporter_from_env() -> str:
    """ZBRAIN_OTEL_EXPORTER, or otlp when an OTLP endpoint is set, else none."""
    chosen = os.environ.get("ZBRAIN_OTEL_EXPORTER") or (
        "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "none"
    )
    if chosen not in EXPORTERS:
        raise InvalidArgumentError(
            f"ZBRAIN_OTEL_EXPORTER={chosen!r} is not one of {', '.join(EXPORTERS)}"
        )
    return chosen


def sdk_installed() -> bool:
    """Whether the OpenTelemetry SDK can be imported here."""
    return importlib.util.find_spec("opentelemetry.sdk") is not None


class Providers:
    """The tracer and meter providers `configure` installed; `shutdown()` flushes them."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    def shutdown(self) -> None:
        """Flush and stop exporters (spans still buffered are sent)."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def configure(
    service_name: str, *, exporter: str = "none", metrics_listen: str | None = None
) -> Providers:
    """Install global tracer and meter providers with the chosen exporters.

    The tracer provider is installed even without an exporter, when the SDK is
    there: trace ids still tie a job's calls, attempts and log lines together.
    A meter provider is installed only when something reads it; otherwise the
    API's no-op meters stay, and recording a measurement (on every RPC) costs
    next to nothing. Without the SDK, asking for an exporter is an error that
    says what to install; asking for none changes nothing.
    """
    if not sdk_installed():
        if exporter != "none" or metrics_listen:
            raise InvalidArgumentError(
                f"exporting telemetry ({exporter if exporter != 'none' else 'metrics'}) needs "
                "the OpenTelemetry SDK: pip install 'zbrain[otel]'"
            )
        return Providers()
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({SERVICE_NAME: service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    if exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), 60_000))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if metrics_listen:
        readers.append(_prometheus_reader(metrics_listen))
    trace.set_tracer_provider(tracer_provider)
    meter_provider = None
    if readers:
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
    return Providers(tracer_provider, meter_provider)


def _prometheus_reader(listen: str) -> Any:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise InvalidArgumentError(
            f"--metrics-listen {listen!r} must be HOST:PORT with a port from 0 to 65535"
        )
    try:
        start_http_server(int(port), addr=host or "127.0.0.1")
    except OSError as exc:
        raise InvalidArgumentError(f"cannot serve metrics on {listen}: {exc.strerror}") from exc
    return PrometheusMetricReader()


def trace_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (empty outside a span)."""
    if "opentelemetry.context" not in sys.modules:
        # Nothing in this process made a span, so there is no context to send;
        # and a command-line call does not pay for loading OpenTelemetry.
        return []
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())
