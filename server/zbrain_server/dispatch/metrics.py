"""The server's metrics and job-attempt spans (OpenTelemetry API).

One span per job attempt, from lease to finish, whose parent is the Submit
call that created the job: the submitter's trace context is stored with the
job and also handed to the worker with its lease, so the worker's execution
span joins the same trace. Metrics are recorded where the dispatcher applies
changes; queue depth is read from the store by a periodic refresh rather
than on every scrape. The RPC spans and durations are the edge's
(`rpc.telemetry`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..core.model import Job, JobState, Lease, LogLine

ATTEMPT_SPAN = "zbrain.job.attempt"
_TERMINAL_COUNTERS = {
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELED: "canceled",
}


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
        self.record_spans = record_spans
        self.meter = meter = metrics.get_meter("zbrain.server", meter_provider=meter_provider)
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
        self._queue: Mapping[tuple[str, JobState], int] = {}
        self._unmatched: Mapping[str, int] = {}
        meter.create_observable_gauge(
            "zbrain.jobs.unmatched",
            [lambda _: [Observation(n, {"org": org}) for org, n in self._unmatched.items()]],
            "{job}",
            "Runnable jobs no connected worker can take (its org, or the labels they require)",
        )
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

    def set_unmatched(self, unmatched: Mapping[str, int]) -> None:
        """Runnable jobs by org that no connected worker can take."""
        self._unmatched = unmatched

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
        if not self.record_spans:
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
