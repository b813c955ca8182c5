"""How the client, the worker SDK and the command line reach a server: the
address, the token, TLS, and the gRPC channel made from them.

`Connection` is the one value that says all of it; `Client.connect` takes
its fields, and a `Worker` reuses its client's channel, so connection
options are never repeated.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from .errors import InvalidArgumentError, UnavailableError, ZBrainError
from .telemetry import trace_metadata

DEFAULT_PORT = 50051
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
# How soon a lost server is dialled again, growing to at most how long: for a
# channel (`channel_options`) and for a worker's stream (`Worker`) alike.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 10.0

# host:port, [v6]:port, or a gRPC target with a scheme (dns:///, ipv4:, ipv6:, unix:).
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d*))?$")


def default_server() -> str:
    """The server address from ZBRAIN_SERVER, or the local default."""
    return os.environ.get("ZBRAIN_SERVER") or DEFAULT_SERVER


def parse_target(text: str) -> str:
    """A server address as gRPC takes it; InvalidArgumentError when it is not one.

    `host` alone means port 50051 (gRPC itself would dial 443); an
    `http://` or `grpc://` prefix is dropped; a port must be 1 to 65535.
    Targets with a gRPC scheme (`dns:///name:port`, `ipv4:a:1,b:2`) pass
    through unchanged.
    """
    target = text.strip()
    if not target:
        raise InvalidArgumentError("the server address is empty; give HOST:PORT")
    if target.startswith(_SCHEMES):
        return target
    for prefix in ("http://", "https://", "grpc://", "grpcs://"):
        if target.startswith(prefix):
            target = target[len(prefix) :].rstrip("/")
            break
    match = _HOST.match(target)
    if match is None:
        raise InvalidArgumentError(
            f"{text!r} is not a server address; give HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}"
        )
    host, port = match.group(1), match.group(2)
    if port is None or port == "":
        return f"{host}:{DEFAULT_PORT}"
    if not 0 < int(port) < 65536:
        raise InvalidArgumentError(f"{text!r}: the port must be between 1 and 65535")
    return f"{host}:{int(port)}"


def channel_options() -> list[tuple[str, Any]]:
    """gRPC channel settings; keepalive pings notice a dead server on an idle stream.

    ZBRAIN_CLIENT_KEEPALIVE and ZBRAIN_CLIENT_KEEPALIVE_TIMEOUT (seconds, default
    20 and 10) tune how fast; the server must allow pings that often (it allows
    one every 5 seconds).

    A channel that lost its server redials it with a backoff of its own, and
    fails calls at once in between. gRPC's default (1 s growing to 120 s) kept
    workers away from a restarted server for many seconds; this one follows
    the worker's reconnect backoff (0.1 s growing to 10 s, `Worker`).
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
        ("grpc.initial_reconnect_backoff_ms", int(RECONNECT_FIRST_S * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MAX_S * 1000)),
        # Not grpc.min_reconnect_backoff_ms: gRPC takes it as the time one
        # connection attempt may last (grpc/grpc#12830), and at 100 ms a busy
        # machine failed handshakes ("tcp handshaker shutdown").
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


@dataclass(frozen=True)
class Connection:
    """Everything needed to reach a server.

    `target` defaults to ZBRAIN_SERVER or 127.0.0.1:50051, `token` to
    ZBRAIN_TOKEN, and `tls` to the ZBRAIN_TLS_* files; `options` are extra
    gRPC channel arguments.
    """

    target: str = ""
    token: str | None = None
    tls: TlsFiles | None = None
    options: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def address(self) -> str:
        """The target as dialled (checked and completed by `parse_target`)."""
        return parse_target(self.target or default_server())

    def open_channel(self) -> grpc.aio.Channel:
        """A channel that sends the token and the caller's trace context with every
        call, over TLS when TLS files are given or configured."""
        token = self.token or os.environ.get("ZBRAIN_TOKEN") or None
        static = [("authorization", f"Bearer {token}")] if token else []
        interceptors = [kind(static) for kind in _METADATA_INTERCEPTORS]
        files = (self.tls or TlsFiles()).resolved()
        all_options = [*channel_options(), *self.options]
        if files is None:
            return grpc.aio.insecure_channel(
                self.address, options=all_options, interceptors=interceptors
            )
        return grpc.aio.secure_channel(
            self.address, files.credentials(), options=all_options, interceptors=interceptors
        )

    def error(self, error: grpc.aio.AioRpcError) -> ZBrainError:
        """The ZBrainError for a failed call; an unreachable server is explained."""
        from .status import from_rpc_error  # the rich-status decoding: on errors only

        if error.code() is not grpc.StatusCode.UNAVAILABLE:
            return from_rpc_error(error)
        details = error.details() or ""
        target = self.target or default_server()
        # gRPC reports every way of failing to connect as UNAVAILABLE; its words
        # are all there is to tell a TLS mismatch from a server that is down,
        # and they only choose the advice given here.
        lowered = details.lower()
        # Only over TLS: a plaintext connection attempt that timed out says
        # "tcp handshaker shutdown", which is no TLS problem.
        over_tls = (self.tls or TlsFiles()).resolved() is not None
        signs = ("ssl", "handshake", "certificate", "tls")
        if over_tls and any(sign in lowered for sign in signs):
            return UnavailableError(
                f"TLS with the ZBrain server at {target} failed ({details}); check --tls-ca "
                "(the CA that signed the server's certificate) and, for mutual TLS, "
                "--tls-cert/--tls-key"
            )
        # A call under way when the server went (it stopped or restarted, the
        # network broke): the connection worked, so no TLS advice fits.
        if "stream removed" in lowered:
            return UnavailableError(
                f"lost the ZBrain server at {target} during the call ({details}); it "
                "stopped or the connection broke: run the command again once it is back"
            )
        if "socket closed" in lowered:
            return UnavailableError(
                f"the ZBrain server at {target} closed the connection ({details}); if it "
                "serves TLS, pass --tls-ca, and for mutual TLS a client certificate "
                "(--tls-cert/--tls-key) signed by the CA it trusts"
            )
        return UnavailableError(
            f"cannot reach the ZBrain server at {target} ({details}); "
            "is `zbrain serve` running there?"
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
