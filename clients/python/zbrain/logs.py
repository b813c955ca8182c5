"""Log output of the `zbrain` commands: plain text by default, JSON lines by option.

Every line about a job carries its job id, org, worker id and trace id, as
`key=value` pairs in text and as fields in JSON, so an operator can follow
one job across the server and its workers, and jump to its trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

JOB_FIELDS = ("job_id", "org_id", "worker_id", "trace_id")
FORMATS = ("text", "json")


def job_fields(
    job_id: str,
    org_id: str = "",
    worker_id: str = "",
    trace_context: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The `extra=` of a log call about a job."""
    fields = {"job_id": job_id, "org_id": org_id, "worker_id": worker_id}
    traceparent = (trace_context or {}).get("traceparent", "")
    parts = traceparent.split("-")
    if len(parts) == 4:
        fields["trace_id"] = parts[1]
    return {key: value for key, value in fields.items() if value}


def _fields(record: logging.LogRecord) -> dict[str, str]:
    found = {key: getattr(record, key) for key in JOB_FIELDS if getattr(record, key, "")}
    if "job_id" in found and "trace_id" not in found:
        from opentelemetry import trace  # here: a command that never logs a job never loads it

        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            found["trace_id"] = format(span.trace_id, "032x")
    return found


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        return text + "".join(f" {key}={value}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the job fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_chosen_format = "text"


def configure(level: str = "INFO", log_format: str = "text") -> None:
    """Send logs to stderr in the chosen format."""
    global _chosen_format
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    _chosen_format = log_format
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def announce(message: str, **fields: Any) -> None:
    """A line for whoever started the process (the server's banner), on stdout:
    the message then its fields as text, or one JSON object with the
    configured `json` format."""
    if _chosen_format == "json":
        entry = {
            "time": datetime.now(UTC).isoformat(),
            "level": "INFO",
            "logger": "zbrain",
            "message": message,
            **fields,
        }
        print(json.dumps(entry, ensure_ascii=False), flush=True)
    else:
        details = "; ".join(f"{key}: {value}" for key, value in fields.items())
        print(f"{message} ({details})" if details else message, flush=True)


def ensure_handler() -> None:
    """Let a worker run by a program that set up no logging still say what
    it does: a text handler for zbrain's own loggers at INFO, on stderr.
    Logging that the program configured is left alone."""
    if logging.getLogger().handlers or logging.getLogger("zbrain").handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(TextFormatter())
    zbrain = logging.getLogger("zbrain")
    zbrain.addHandler(handler)
    if zbrain.level == logging.NOTSET:
        zbrain.setLevel(logging.INFO)
