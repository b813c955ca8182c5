"""Log formats: job fields on every line about a job, JSON lines by option."""

from __future__ import annotations

import json
import logging

from zbrain.logs import JsonFormatter, TextFormatter, job_fields

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def record(**extra: str) -> logging.LogRecord:
    entry = logging.LogRecord("zbrain.test", logging.INFO, __file__, 1, "job %s", ("failed",), None)
    entry.__dict__.update(extra)
    return entry


def test_job_fields_take_the_trace_id_from_the_trace_context() -> None:
    fields = job_fields("j1", "acme", "w1", {"traceparent": TRACEPARENT})
    assert fields == {
        "job_id": "j1",
        "org_id": "acme",
        "worker_id": "w1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }


def test_json_lines_carry_the_job_fields() -> None:
    line = JsonFormatter().format(
        record(**job_fields("j1", "acme", "w1", {"traceparent": TRACEPARENT}))
    )
    entry = json.loads(line)
    assert entry["message"] == "job failed"
    assert entry["level"] == "INFO"
    assert (entry["job_id"], entry["org_id"], entry["worker_id"]) == ("j1", "acme", "w1")
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_text_lines_end_with_the_job_fields() -> None:
    line = TextFormatter().format(record(**job_fields("j1", "acme")))
    assert line.endswith("zbrain.test: job failed job_id=j1 org_id=acme")


def test_lines_about_no_job_have_no_job_fields() -> None:
    assert "job_id" not in json.loads(JsonFormatter().format(record()))
