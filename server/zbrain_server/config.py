"""Server configuration: flags over environment variables over defaults.

The environment variables keep the meaning they had in the original design
(ZDB_DATA, ZBRAIN_ARTIFACTS, ZBRAIN_LEASE_TTL, ...); docs/configuration.md
lists every one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from zbrain.durations import parse_duration
from zbrain.errors import InvalidArgumentError
from zbrain.sizes import parse_count, parse_size

from .core.model import ORG_ID_RULE, is_org_id

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATA_DIR = Path("zbrain-data")


@dataclass(frozen=True)
class Limits:
    """Bounds on what a request may carry and a server holds; a request past
    one is refused with a message naming it.

    Each is set by the variable ZBRAIN_<NAME>, e.g. ZBRAIN_MAX_PENDING_PER_ORG
    (seconds fields take durations); docs/configuration.md lists them all.
    """

    max_input_bytes: int = 1 << 20
    max_cmd_args: int = 1024
    max_cmd_bytes: int = 128 << 10
    max_env_entries: int = 256
    max_env_bytes: int = 128 << 10
    max_labels: int = 64
    max_label_bytes: int = 256
    max_timeout_s: float = 7 * 86400.0
    max_retry_budget: int = 100  # the largest max_retries a job may ask for
    max_page_size: int = 1000
    max_batch_jobs: int = 10_000  # also the largest graph one SubmitBatch may hold
    max_dependencies_per_job: int = 1000
    # All the dependencies of one SubmitBatch: a graph's edges are written in
    # one transaction, which a graph of millions would hold for a minute.
    max_batch_dependencies: int = 100_000
    max_graph_depth: int = 10_000  # jobs from a graph's roots to its deepest job
    max_delay_s: float = 366 * 86400.0  # how far ahead a delayed job may be set
    max_parent_outputs_bytes: int = 4 << 20  # parents' outputs one lease carries
    max_template_parameters: int = 100
    max_schedules_per_org: int = 10_000
    max_request_id_bytes: int = 128
    max_message_bytes: int = 16 << 20
    max_log_line_bytes: int = 16 << 10
    max_log_lines_per_report: int = 10_000
    max_artifact_bytes: int = 1 << 30
    max_artifacts_bytes_per_job: int = 4 << 30
    max_artifacts_per_job: int = 1000
    max_log_bytes_per_job: int = 64 << 20
    max_pending_per_org: int = 1_000_000
    max_streams_per_client: int = 100  # reader streams: StreamEvents, StreamLogs, downloads
    max_worker_streams_per_client: int = 1000  # worker streams (WorkerService.Connect)
    max_worker_concurrency: int = 10_000  # slots one worker may offer
    max_worker_orgs: int = 100  # organisations one worker may serve
    max_acquire_jobs: int = 1000  # leases one AcquireLease may ask for
    max_wait_timeout_s: float = 60.0  # the longest AcquireLease wait
    max_token_description_bytes: int = 256
    max_artifact_name_bytes: int = 255
    log_page_lines: int = 1000  # log lines read per StreamLogs page
    event_page_events: int = 1000  # events read per StreamEvents page
    # One streamed response (StreamEvents, StreamLogs) holds at most this many
    # bytes of events or lines (and at most half of max_message_bytes): a
    # replay of huge log output then never needs a message larger than a peer
    # accepts.
    max_stream_message_bytes: int = 4 << 20
    # How long one WebSocket frame may wait for its reader (a stalled browser
    # tab, a peer that stopped reading) before the reader is cut off, told
    # where to resume: the server never buffers for it without bound.
    stream_send_timeout_s: float = 10.0

    @property
    def stream_message_bytes(self) -> int:
        """The bytes of events or lines one streamed response may carry."""
        return min(self.max_stream_message_bytes, self.max_message_bytes // 2)


@dataclass(frozen=True)
class ServerConfig:
    """Everything `zbrain serve` can be told."""

    listen: str = DEFAULT_LISTEN
    # The HTTP/JSON API, its WebSockets and the console (docs/http.md); None: off.
    http_listen: str | None = None
    auth: str | None = None  # "required" or "off"; None: required once a token exists
    insecure: bool = False  # allow a non-loopback address without auth or TLS
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # require client certificates signed by this CA
    data_dir: Path = DEFAULT_DATA_DIR
    # A postgresql:// URL selects the PostgreSQL store (several replicas may
    # share it); None keeps the embedded SQLite file in data_dir.
    store_url: str | None = None
    artifacts_dir: Path | None = None  # default: <data_dir>/artifacts
    default_org: str = "default"
    lease_ttl_s: float = 30.0
    # The server fails an attempt as timed out this long after its timeout,
    # giving the worker the first chance to stop it and report.
    timeout_grace_s: float = 5.0
    poll_interval_s: float = 1.0
    default_max_retries: int = 3
    default_timeout_s: float = 3600.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    retention_s: float = 7 * 86400.0
    event_retention_s: float = 86400.0
    event_buffer: int = 10_000  # live events buffered per StreamEvents subscriber
    event_buffer_bytes: int = 8 << 20  # and bytes: past either, the subscriber is cut off
    # A schedule's tick reached later than this (no server ran) is missed and
    # follows the schedule's catch-up policy instead of firing.
    schedule_grace_s: float = 15.0
    local_workers: int = 0
    worker_grace_s: float = 30.0  # how long the local workers' running jobs may finish on stop
    # gRPC keepalive: ping an idle connection this often, drop it when a ping
    # goes unanswered this long, so a dead worker is noticed in bounded time.
    keepalive_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    limits: Limits = field(default_factory=Limits)

    @property
    def artifact_root(self) -> Path:
        return self.artifacts_dir or self.data_dir / "artifacts"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServerConfig:
        """Read the ZBRAIN_* and Z* variables, then apply non-None overrides (flags)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for var, key, convert in _ENVIRONMENT:
            raw = env.get(var, "")
            if raw:
                try:
                    values[key] = convert(raw, var)
                except ValueError as exc:
                    raise InvalidArgumentError(f"{var}={raw!r}: {exc}") from exc
        limits = {}
        for spec in dataclasses.fields(Limits):
            var = f"ZBRAIN_{spec.name.upper()}"
            raw = env.get(var, "")
            if raw:
                try:
                    limits[spec.name] = (
                        parse_duration(raw)
                        if spec.type == "float"
                        else _positive(parse_size(raw) if spec.name.endswith("_bytes") else raw)
                    )
                except ValueError as exc:
                    raise InvalidArgumentError(f"{var}={raw!r}: {exc}") from exc
        if limits:
            values["limits"] = Limits(**limits)  # type: ignore[arg-type]
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self) -> None:
        """Reject settings the server cannot run with, naming the setting."""
        problems = []
        if self.lease_ttl_s <= 0:
            problems.append("the lease TTL (ZBRAIN_LEASE_TTL) must be positive")
        if self.poll_interval_s <= 0:
            problems.append("the poll interval (ZBRAIN_POLL_INTERVAL) must be positive")
        if not 0 < self.default_timeout_s <= self.limits.max_timeout_s:
            problems.append(
                "the default timeout (ZBRAIN_DEFAULT_TIMEOUT) must be positive and at most "
                f"ZBRAIN_MAX_TIMEOUT_S ({self.limits.max_timeout_s:g}s)"
            )
        if self.default_max_retries > self.limits.max_retry_budget:
            problems.append(f"ZBRAIN_MAX_RETRIES must be at most {self.limits.max_retry_budget}")
        if self.retry_base_s <= 0 or self.retry_cap_s < self.retry_base_s:
            problems.append("the retry backoff needs 0 < ZBRAIN_RETRY_BASE <= ZBRAIN_RETRY_CAP")
        if not is_org_id(self.default_org):
            problems.append(
                f"the default organisation (ZDEFAULT_ORG_ID={self.default_org!r}) {ORG_ID_RULE}"
            )
        if self.keepalive_s <= 0 or self.keepalive_timeout_s <= 0:
            problems.append("ZBRAIN_KEEPALIVE and ZBRAIN_KEEPALIVE_TIMEOUT must be positive")
        if self.auth not in (None, "required", "off"):
            problems.append("--auth must be 'required' or 'off'")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("TLS needs both --tls-cert and --tls-key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.local_workers and self.tls_cert is not None:
            problems.append(
                "--workers connects its worker over plaintext loopback; with TLS, run "
                "`zbrain worker --tls-ca ...` instead"
            )
        if self.event_buffer < 1 or self.event_buffer_bytes < 1:
            problems.append("ZBRAIN_EVENT_BUFFER and ZBRAIN_EVENT_BUFFER_BYTES must be at least 1")

        if self.store_url is not None and not _is_postgres_url(self.store_url):
            problems.append(
                "--store (ZBRAIN_STORE) must be a postgresql://user@host:port/database URL; "
                "leave it unset for the embedded SQLite store"
            )
        if self.local_workers < 0:
            problems.append("--workers must not be negative")
        for flag, variable, address in (
            ("--listen", "ZBRAIN_LISTEN", self.listen),
            ("--http-listen", "ZBRAIN_HTTP_LISTEN", self.http_listen),
        ):
            if address is not None and not _is_host_port(address):
                problems.append(
                    f"{flag} ({variable}) must be HOST:PORT with a port from 0 to 65535, "
                    f"e.g. 127.0.0.1:8080 or [::1]:8080; got {address!r}"
                )
        if problems:
            raise InvalidArgumentError("invalid configuration: " + "; ".join(problems))


def _is_host_port(address: str) -> bool:
    """Whether `address` is HOST:PORT (an IPv6 host in brackets): gRPC would
    take port 99999 as 34463 (modulo 65536) and aiohttp fail with a traceback."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        return False
    return host == "" or not (":" in host and not (host[0] == "[" and host[-1] == "]"))


def _is_postgres_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("postgresql", "postgres") and bool(parts.path.strip("/"))


def _non_negative_int(raw: str, var: str) -> int:
    value = parse_count(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _bytes(raw: str, var: str) -> int:
    return parse_size(raw)


def _positive(raw: str | int) -> int:
    value = raw if isinstance(raw, int) else parse_count(raw)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _text(raw: str, var: str) -> str:
    return raw


def _path(raw: str, var: str) -> Path:
    return Path(raw)


def _seconds(raw: str, var: str) -> float:
    return parse_duration(raw)


# (variable, ServerConfig field, converter)
_ENVIRONMENT: tuple[tuple[str, str, Callable[[str, str], object]], ...] = (
    ("ZBRAIN_LISTEN", "listen", _text),
    ("ZBRAIN_HTTP_LISTEN", "http_listen", _text),
    ("ZDB_DATA", "data_dir", _path),
    ("ZBRAIN_STORE", "store_url", _text),
    ("ZBRAIN_ARTIFACTS", "artifacts_dir", _path),
    ("ZDEFAULT_ORG_ID", "default_org", _text),
    ("ZBRAIN_LEASE_TTL", "lease_ttl_s", _seconds),
    ("ZBRAIN_POLL_INTERVAL", "poll_interval_s", _seconds),
    ("ZBRAIN_MAX_RETRIES", "default_max_retries", _non_negative_int),
    ("ZBRAIN_DEFAULT_TIMEOUT", "default_timeout_s", _seconds),
    ("ZBRAIN_RETRY_BASE", "retry_base_s", _seconds),
    ("ZBRAIN_RETRY_CAP", "retry_cap_s", _seconds),
    ("ZBRAIN_RETENTION", "retention_s", _seconds),
    ("ZBRAIN_TIMEOUT_GRACE", "timeout_grace_s", _seconds),
    ("ZBRAIN_EVENT_RETENTION", "event_retention_s", _seconds),
    ("ZBRAIN_EVENT_BUFFER", "event_buffer", _non_negative_int),
    ("ZBRAIN_EVENT_BUFFER_BYTES", "event_buffer_bytes", _bytes),
    ("ZBRAIN_WORKER_GRACE", "worker_grace_s", _seconds),
    ("ZBRAIN_SCHEDULE_GRACE", "schedule_grace_s", _seconds),
    ("ZBRAIN_KEEPALIVE", "keepalive_s", _seconds),
    ("ZBRAIN_KEEPALIVE_TIMEOUT", "keepalive_timeout_s", _seconds),
)
