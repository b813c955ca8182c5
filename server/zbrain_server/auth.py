"""Who is calling, and what they may do: API tokens, roles and organisation checks.

One interceptor authenticates every call (`authorization: Bearer <token>`)
and checks the caller's role against the method (`REQUIRED_ROLE`, the one
table of who may call what); handlers then make the one organisation check
each RPC needs through `request_org` or `visible`. A job of another
organisation is answered exactly as a job that does not exist, so its
existence does not leak.

Tokens look like `zbt_<id>_<secret>`. Only the SHA-256 of the secret is
stored: the secret is 256 random bits, so a fast hash is as safe as a slow
one, and it keeps authentication cheap on every call.
"""

from __future__ import annotations

import collections
import contextvars
import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from zbrain.errors import (
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    ZBrainError,
    to_status,
)

TOKEN_PREFIX = "zbt"


class Role(enum.IntEnum):
    """What a token may do (zbrain.v1.TokenRole)."""

    CLIENT = 1  # submit, read and cancel its org's jobs
    WORKER = 2  # lease and report on its org's jobs
    ADMIN = 3  # everything, every org, and tokens

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Token:
    """A stored token; `secret_hash` is the SHA-256 of its secret."""

    id: str
    org_id: str
    role: Role
    description: str
    secret_hash: str
    create_time_us: int
    revoke_time_us: int | None = None


@dataclass(frozen=True)
class Caller:
    """The authenticated identity of the current call; org None means any org."""

    org_id: str | None
    role: Role
    token_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


ANONYMOUS_ADMIN = Caller(org_id=None, role=Role.ADMIN)
"""The caller of every RPC when auth is off."""

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "zbrain_caller", default=ANONYMOUS_ADMIN
)

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


def new_token(org_id: str, role: Role, description: str, now_us: int) -> tuple[Token, str]:
    """Make a token; return it and the bearer string, which is never stored."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = Token(token_id, org_id, role, description, _hash(secret), now_us)
    return token, f"{TOKEN_PREFIX}_{token_id}_{secret}"


def parse_bearer(bearer: str) -> tuple[str, str]:
    """Split `zbt_<id>_<secret>`; UnauthenticatedError if it is not one."""
    prefix, _, rest = bearer.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not token_id or not secret:
        raise UnauthenticatedError("malformed token: expected zbt_<id>_<secret>")
    return token_id, secret


def matches(token: Token, secret: str) -> bool:
    return hmac.compare_digest(token.secret_hash, _hash(secret))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- checks the handlers make ---------------------------------------------------------


def caller() -> Caller:
    return _caller.get()


def request_org(requested: str, default_org: str) -> str:
    """The org a request acts on: the one it names, else the caller's, else the default.

    A caller bound to one org may name only that org.
    """
    who = caller()
    if not requested:
        return who.org_id or default_org
    if who.org_id is not None and requested != who.org_id and not who.is_admin:
        raise PermissionDeniedError(
            f"this token belongs to organisation {who.org_id!r} and cannot act on {requested!r}"
        )
    return requested


def request_orgs(requested: list[str], default_org: str) -> list[str]:
    """`request_org` for a worker naming several orgs."""
    if not requested:
        return [request_org("", default_org)]
    return [request_org(org, default_org) for org in requested]


def visible(org_id: str, what: str) -> None:
    """NotFoundError unless the caller may see objects of `org_id` (as if absent)."""
    who = caller()
    if who.org_id is not None and org_id != who.org_id:  # admins have no org bound
        raise NotFoundError(f"{what} not found")


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
                    f"a {who.role} token cannot call {method.rsplit('/', 1)[-1]}; "
                    f"it needs a {needed} or admin token"
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
