"""Who is calling, and what they may do, on every edge.

One `Authenticator` turns an `authorization: Bearer <token>` value into a
`Caller` and checks the caller's role against the method (`REQUIRED_ROLE`,
the one table of who may call what); the gRPC interceptor here and the HTTP
edge's middleware both use it (an HTTP route knows the RPC it stands for).
Handlers then make the one organisation check each operation needs through
`core.access`. The Authenticator also keeps the registry of long-lived
streams of both edges: bounded per client, and ended when auth turns on or
their token is revoked (`recheck`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from zbrain.errors import (
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    ZBrainError,
)
from zbrain.status import to_status

from ..config import Limits
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
            "Rerun",
        )
    },
    **{
        "/zbrain.v1.TemplateService/" + name: Role.CLIENT
        for name in (
            "CreateTemplate",
            "GetTemplate",
            "ListTemplates",
            "DeleteTemplate",
            "SubmitTemplate",
        )
    },
    **{
        "/zbrain.v1.ScheduleService/" + name: Role.CLIENT
        for name in (
            "CreateSchedule",
            "GetSchedule",
            "ListSchedules",
            "UpdateSchedule",
            "DeleteSchedule",
            "PauseSchedule",
            "ResumeSchedule",
            "TriggerSchedule",
        )
    },
    **{
        _JOBS + name: Role.WORKER
        for name in ("AcquireLease", "RenewLease", "ReportLogs", "CompleteLease", "UploadArtifact")
    },
    "/zbrain.v1.WorkerService/Connect": Role.WORKER,
    _JOBS + "ListWorkers": Role.CLIENT,
    "/zbrain.v1.OrgService/GetOrgSettings": Role.CLIENT,
    "/zbrain.v1.OrgService/UpdateOrgSettings": Role.ADMIN,
    "/zbrain.v1.OrgService/PauseOrg": Role.ADMIN,
    "/zbrain.v1.OrgService/ResumeOrg": Role.ADMIN,
    "/zbrain.v1.TokenService/CreateToken": Role.ADMIN,
    "/zbrain.v1.TokenService/ListTokens": Role.ADMIN,
    "/zbrain.v1.TokenService/RevokeToken": Role.ADMIN,
}
"""The role each method needs (admins may call all); None: open to anyone."""

WORKERS_MAY_READ = frozenset({_JOBS + "Get"})
"""Client methods a worker token may call too: a started job's worker reads
the outputs of the jobs it depended on that its lease left out."""

_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


# -- authentication and the stream registry -------------------------------------------


WORKER_STREAMS = frozenset({"/zbrain.v1.WorkerService/Connect"})
"""Streams that run work, counted apart from the streams that read: readers
can never use up what a worker needs to connect."""


@dataclass(eq=False)
class OpenStream:
    """A long-lived stream being served, and how to end it from outside."""

    caller: Caller
    anonymous: bool  # opened without a valid token, while auth was off
    key: tuple[bool, str]  # (worker stream?, the client: its token id, else its address)
    ended: asyncio.Future[ZBrainError]  # set when it must end, with the status to end it
    session: str = ""  # the HTTP console session it belongs to, if any


class Authenticator:
    """Authenticates calls of every edge, checks roles, and guards long-lived
    streams: a client (its token, else its address) holds a bounded number of
    reader and of worker streams, and a stream that would now be refused (auth
    was turned on, its token was revoked, its console session ended) is ended
    with UNAUTHENTICATED."""

    def __init__(
        self,
        find_token: Callable[[str], Any],
        required: bool,
        limits: Limits,
        extra_tokens: Sequence[Token] = (),
    ) -> None:
        self._find_token = find_token  # async (token id) -> Token | None
        # Tokens that live only in this process (the local worker pool's): they
        # are never stored, so they do not turn auth on by existing.
        self._extra_tokens = {token.id: token for token in extra_tokens}
        self.required = required
        self._limits = limits
        self._counts: collections.Counter[tuple[bool, str]] = collections.Counter()
        self._open: set[OpenStream] = set()

    async def caller(self, authorization: str) -> tuple[Caller, bool]:
        """The caller an `authorization` value stands for, and whether it is
        anonymous (no valid token while auth is off); UnauthenticatedError
        when auth is required and the value is missing or wrong."""
        if self.required:
            return await self.authenticate(authorization), False
        # Auth is off: anyone may call, but a caller that presents a valid
        # token (the local worker pool does) is known by it, so its streams
        # survive auth being turned on.
        try:
            return await self.authenticate(authorization), False
        except ZBrainError:
            return ANONYMOUS_ADMIN, True

    @staticmethod
    def authorize(method: str, who: Caller) -> None:
        """PermissionDeniedError unless the caller's role may call `method`
        (a full method name, "/zbrain.v1.JobService/Submit")."""
        needed = REQUIRED_ROLE.get(method, Role.ADMIN)
        if who.role is Role.WORKER and method in WORKERS_MAY_READ:
            return
        if needed is not None and who.role is not needed and not who.is_admin:
            raise PermissionDeniedError(
                f"a {who.role.label} token cannot call {method.rsplit('/', 1)[-1]}; "
                f"it needs {_needs(needed)}"
            )

    async def authenticate(self, authorization: str) -> Caller:
        """The caller of a valid `Bearer <token>` value; UnauthenticatedError otherwise."""
        scheme, _, bearer = authorization.partition(" ")
        if not authorization:
            raise UnauthenticatedError(
                "this server requires a token: pass --token or set ZBRAIN_TOKEN"
            )
        if scheme.lower() != "bearer" or not bearer:
            raise UnauthenticatedError("the authorization header must be 'Bearer <token>'")
        token_id, secret = parse_bearer(bearer.strip())
        token = await self.token(token_id)
        if token is None or not matches(token, secret):
            raise UnauthenticatedError("unknown token")
        if token.revoke_time_us is not None:
            raise UnauthenticatedError("this token was revoked")
        return caller_of(token)

    async def token(self, token_id: str) -> Token | None:
        """The token with this id (stored or this process's own), revoked or not."""
        token: Token | None = self._extra_tokens.get(token_id) or await self._find_token(token_id)
        return token

    # -- long-lived streams ---------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """How many long-lived streams are being served now."""
        return len(self._open)

    def open_stream(
        self, who: Caller, anonymous: bool, address: str, *, worker: bool, session: str = ""
    ) -> OpenStream:
        """Count a stream in, or ResourceExhaustedError when its client holds
        as many as the limit allows; `close_stream` when it ends."""
        limit = (
            self._limits.max_worker_streams_per_client
            if worker
            else self._limits.max_streams_per_client
        )
        key = (worker, who.token_id or address)
        if self._counts[key] >= limit:
            raise _too_many(worker, self._counts[key], limit)
        stream = OpenStream(
            who, anonymous, key, asyncio.get_running_loop().create_future(), session
        )
        self._counts[key] += 1
        self._open.add(stream)
        return stream

    def close_stream(self, stream: OpenStream) -> None:
        if stream not in self._open:
            return
        self._open.discard(stream)
        self._counts[stream.key] -= 1
        if not self._counts[stream.key]:
            del self._counts[stream.key]

    async def recheck(self) -> None:
        """End every open stream that would be refused now: one opened without a
        token once auth is required, one whose token was revoked or deleted."""
        if self.required:
            self.end(
                lambda stream: stream.anonymous,
                "authentication is required now; reconnect with a token (--token or ZBRAIN_TOKEN)",
            )
        for token_id in {stream.caller.token_id for stream in self._open} - {""}:
            token = await self.token(token_id)
            if token is None or token.revoke_time_us is not None:
                self.end(
                    lambda stream, gone=token_id: stream.caller.token_id == gone,  # type: ignore[misc]
                    "this token was revoked",
                )

    def end(self, which: Callable[[OpenStream], bool], why: str) -> None:
        """End the open streams `which` picks with UNAUTHENTICATED, saying why."""
        for stream in self._open:
            if which(stream) and not stream.ended.done():
                stream.ended.set_result(UnauthenticatedError(why))


def caller_of(token: Token) -> Caller:
    """The caller a valid token stands for."""
    return Caller(None if token.role is Role.ADMIN else token.org_id, token.role, token.id)


# -- the gRPC interceptor ---------------------------------------------------------------


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The Authenticator on the gRPC edge: authenticates every call and checks
    its role, sets `current_caller()` for the handler, and registers the
    long-lived streams."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        method = details.method
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        try:
            who, anonymous = await self._auth.caller(metadata.get("authorization", ""))
            self._auth.authorize(method, who)
        except ZBrainError as error:
            handler = await continuation(details)
            return _rejecting(handler, error) if handler is not None else None
        _caller.set(who)
        return self._guard(await continuation(details), method, who, anonymous)

    def _guard(self, handler: Any, method: str, who: Caller, anonymous: bool) -> Any:
        """The handler of a long-lived stream, bounded per client and endable by
        `recheck`; other handlers as they are."""
        if handler is None or not (handler.unary_stream or handler.stream_stream):
            return handler
        kind = "unary_stream" if handler.unary_stream else "stream_stream"
        inner = getattr(handler, kind)
        worker = method in WORKER_STREAMS
        auth = self._auth

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                stream = auth.open_stream(
                    who, anonymous, context.peer().rpartition(":")[0], worker=worker
                )
            except ZBrainError as error:
                await context.abort_with_status(to_status(error))
            try:
                async with contextlib.aclosing(guard_stream(inner(request, context), stream)) as (
                    messages
                ):
                    async for message in messages:
                        yield message
            except ZBrainError as error:  # the stream was ended from outside
                await context.abort_with_status(to_status(error))
            finally:
                auth.close_stream(stream)

        return handler._replace(**{kind: guarded})


async def guard_stream(
    responses: AsyncIterator[Any], stream: OpenStream
) -> AsyncGenerator[Any, None]:
    """The messages of a long-lived stream until it ends, or until it must end
    (`Authenticator.end`): then the ZBrainError it was ended with is raised.

    Each next message races the stream's end, so that an idle stream (a
    follower waiting for lines) ends as soon as asked; the responses'
    generator is closed whichever way this ends. Both edges serve their
    streams through it."""
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(responses))
            await asyncio.wait((step, stream.ended), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                await stop_step(step)
                raise stream.ended.result()
            try:
                message = step.result()
            except StopAsyncIteration:
                return
            yield message
    finally:
        if step is not None and not step.done():  # the caller went away mid-step
            await stop_step(step)
        close = getattr(responses, "aclose", None)
        if close is not None:
            await close()


async def stop_step(step: asyncio.Future[Any]) -> None:
    """Cancel a step of a stream's generator and wait until it has let go."""
    step.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await step


def _too_many(worker: bool, count: int, limit: int) -> ResourceExhaustedError:
    kind, name = (
        ("worker", "max_worker_streams_per_client")
        if worker
        else ("reader", "max_streams_per_client")
    )
    return ResourceExhaustedError(
        f"this client has {count} {kind} streams open; the limit ({name}) is {limit}: "
        f"raise it with ZBRAIN_{name.upper()}"
    )


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
