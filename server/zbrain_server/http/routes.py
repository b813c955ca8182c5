"""The HTTP routes of zbrain.v1, read from the protos' `google.api.http` annotations.

The contract stays the single source (AIP-127): every unary and
server-streaming RPC declares its method, path template and body in its
`google.api.http` option, and this module turns each binding (additional
bindings included) into a `Route` at start-up. Nothing here lists a path.

Path templates are matched here rather than by aiohttp's router, because
their grammar is Google's: `{job_id}` is one segment without "/" or ":",
`{name=**}` any rest of the path, `{schedule.id}` a field of a field, and a
final `:verb` is part of the last segment (`/v1/jobs/{job_id}:cancel`).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from zbrain.errors import InvalidArgumentError, NotFoundError

_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)(?:=([^}]*))?\}")


class MethodNotAllowedError(InvalidArgumentError):
    """The path names a route, but not with this HTTP method (answered 405)."""

    def __init__(self, method: str, path: str, allowed: Sequence[str]) -> None:
        super().__init__(f"{method} is not allowed on {path}; use {' or '.join(allowed)}")
        self.allowed = tuple(allowed)


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str  # "GET", "POST", "PATCH", "DELETE", "PUT"
    template: str  # as written in the proto, e.g. "/v1/jobs/{job_id}:cancel"
    pattern: re.Pattern[str]  # matches a raw (still percent-encoded) path
    variables: tuple[tuple[str, str], ...]  # (regex group, request field path)
    body: str  # "" (no body: query parameters), "*" (the whole request) or a field
    method: MethodDescriptor

    @property
    def full_method(self) -> str:
        """The gRPC full method name, "/zbrain.v1.JobService/Submit": what the
        Authenticator's role table and `Api.operation` are keyed by."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    def path_fields(self, match: re.Match[str]) -> dict[str, str]:
        """The request fields the path sets, field path -> decoded value."""
        return {field: urllib.parse.unquote(match.group(group)) for group, field in self.variables}


def routes_of(services: Iterable[ServiceDescriptor]) -> list[Route]:
    """Every binding of every annotated RPC of `services`; client-streaming
    and bidirectional RPCs (UploadArtifact, Connect) have none."""
    routes = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(annotations_pb2.http) or method.client_streaming:
                continue
            rule = options.Extensions[annotations_pb2.http]
            for binding in (rule, *rule.additional_bindings):
                routes.append(_route(method, binding))
    return routes


def _route(method: MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind is None or kind == "custom":
        raise TypeError(f"{method.full_name}: an http rule without a standard method")
    template: str = getattr(rule, kind)
    parts: list[str] = []
    variables: list[tuple[str, str]] = []
    position = 0
    for found in _VARIABLE.finditer(template):
        parts.append(re.escape(template[position : found.start()]))
        group = f"v{len(variables)}"
        field, segments = found.group(1), found.group(2) or "*"
        # "*" is one segment; "**" (only last, in AIP-127) the rest of the path.
        parts.append(f"(?P<{group}>{'.+' if segments == '**' else '[^/:]+'})")
        variables.append((group, field))
        position = found.end()
    parts.append(re.escape(template[position:]))
    return Route(
        http_method=kind.upper(),
        template=template,
        pattern=re.compile("".join(parts) + r"\Z"),
        variables=tuple(variables),
        body=rule.body,
        method=method,
    )


class RouteTable:
    """Finds the route of a request: NotFoundError when no template matches
    its path, MethodNotAllowedError when some match but none with its method."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in self.routes:
            found = route.pattern.match(raw_path)
            if found is None:
                continue
            if route.http_method == http_method or (
                http_method == "HEAD" and route.http_method == "GET"
            ):
                return route, route.path_fields(found)
            allowed.append(route.http_method)
        if allowed:
            raise MethodNotAllowedError(http_method, raw_path, sorted(set(allowed)))
        raise NotFoundError(f"no API route {http_method} {raw_path}; docs/http.md lists them")
