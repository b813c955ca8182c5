"""Who is calling, and what they may do, on the gRPC edge.

One interceptor authenticates every call (`authorization: Bearer <token>`)
and checks the caller's role against the method (`REQUIRED_ROLE`, the one
table of who may call what); handlers then make the one organisation check
each operation needs through `core.access`, with `current_caller()`.
"""

from __future__ import annotations

import collections
import contextvars
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from zbrain.errors import (
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    ZBrainError,
)
from zbrain.status import to_status

from ..core.access import ANONYMOUS_ADMIN, Caller
from ..core.model import Role
from ..core.tokens import Token, matches, parse_bearer

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "zbrain_caller", default=ANONYMOUS_ADMIN
)


def current_caller() -> Caller:
    """The caller of the RPC being handled (set by the interceptor)."""
    return _caller.get()


_JOBS = "/zbrain.v1.JobService/"
REQUIRED_ROLE: dict[str, Role | None] = {
    **{
        _JOBS + name: Role.CLIENT
        for name in (
            "Submit",
            "SubmitBatch",
            "Get",
            "List",
            "Cancel",
            "StreamLogs",
            "StreamEvents",
            "ListArtifacts",
            "DownloadArtifact",
        )
    },
    **{
        _JOBS + name: Role.WORKER
        for name in ("AcquireLease", "RenewLease", "ReportLogs", "CompleteLease", "UploadArtifact")
    },
    "/zbrain.v1.WorkerService/Connect": Role.WORKER,
    "/zbrain.v1.TokenService/CreateToken": Role.ADMIN,
    "/zbrain.v1.TokenService/ListTokens": Role.ADMIN,
    "/zbrain.v1.TokenService/RevokeToken": Role.ADMIN,
}
"""The role each method needs (admins may call all); None: open to anyone."""

_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


# -- the interceptor --------------------------------------------------------------------


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call and checks its role; sets `caller()` for the handler."""

    def __init__(
        self,
        find_token: Callable[[str], Any],
        required: bool,
        max_streams_per_client: int,
        extra_tokens: Sequence[Token] = (),
    ) -> None:
        self._find_token = find_token  # async (token id) -> Token | None
        # Tokens that live only in this process (the local worker pool's): they
        # are never stored, so they do not turn auth on by existing.
        self._extra_tokens = {token.id: token for token in extra_tokens}
        self.required = required
        self._max_streams = max_streams_per_client
        self._streams: collections.Counter[str] = collections.Counter()

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        method = details.method
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(details)
        if not self.required:
            _caller.set(ANONYMOUS_ADMIN)
            return self._limit_streams(await continuation(details), ANONYMOUS_ADMIN)
        try:
            who = await self._authenticate(dict(details.invocation_metadata or ()))
            needed = REQUIRED_ROLE.get(method, Role.ADMIN)
            if needed is not None and who.role is not needed and not who.is_admin:
                raise PermissionDeniedError(
                    f"a {who.role.label} token cannot call {method.rsplit('/', 1)[-1]}; "
                    f"it needs {_needs(needed)}"
                )
        except ZBrainError as error:
            handler = await continuation(details)
            return _rejecting(handler, error) if handler is not None else None
        _caller.set(who)
        return self._limit_streams(await continuation(details), who)

    def _limit_streams(self, handler: Any, who: Caller) -> Any:
        """Bound the long-lived streams one client (token, else address) holds open."""
        if handler is None:
            return None
        kind = "unary_stream" if handler.unary_stream else "stream_stream"
        inner = getattr(handler, kind)
        if inner is None:
            return handler
        streams, limit = self._streams, self._max_streams

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            key = who.token_id or context.peer().rpartition(":")[0]
            if streams[key] >= limit:
                error = ResourceExhaustedError(
                    f"this client has {streams[key]} streams open; the limit "
                    f"(max_streams_per_client) is {limit}"
                )
                await context.abort_with_status(to_status(error))
            streams[key] += 1
            try:
                async for message in inner(request, context):
                    yield message
            finally:
                streams[key] -= 1
                if not streams[key]:
                    del streams[key]

        return handler._replace(**{kind: limited})

    async def _authenticate(self, metadata: dict[str, str]) -> Caller:
        header = metadata.get("authorization", "")
        scheme, _, bearer = header.partition(" ")
        if not header:
            raise UnauthenticatedError(
                "this server requires a token: pass --token or set ZBRAIN_TOKEN"
            )
        if scheme.lower() != "bearer" or not bearer:
            raise UnauthenticatedError("the authorization header must be 'Bearer <token>'")
        token_id, secret = parse_bearer(bearer.strip())
        token: Token | None = self._extra_tokens.get(token_id) or await self._find_token(token_id)
        if token is None or not matches(token, secret):
            raise UnauthenticatedError("unknown token")
        if token.revoke_time_us is not None:
            raise UnauthenticatedError("this token was revoked")
        return Caller(None if token.role is Role.ADMIN else token.org_id, token.role, token.id)


def _rejecting(handler: Any, error: ZBrainError) -> Any:
    """A handler of the same shape that ends the call with `error`'s status."""
    status = to_status(error)

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort_with_status(status)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort_with_status(status)
        yield  # pragma: no cover - makes this an async generator

    for kind, behavior in (
        ("unary_unary", unary),
        ("stream_unary", unary),
        ("unary_stream", streaming),
        ("stream_stream", streaming),
    ):
        if getattr(handler, kind):
            return handler._replace(**{kind: behavior})
    return handler


def _needs(role: Role) -> str:
    """The tokens that may call a method needing `role`, in words."""
    return "an admin token" if role is Role.ADMIN else f"a {role.label} or admin token"
