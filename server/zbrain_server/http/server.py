"""The HTTP edge: zbrain.v1 as JSON over HTTP, its streams over WebSocket,
browser sessions, and the console's files, served by aiohttp in the event
loop of grpc.aio.

Every API request is answered the way a gRPC call is: the route
(`routes`, from the protos' annotations) names the RPC, the same
`Authenticator` finds the caller and checks its role, and the RPC's
operation in `rpc.api` does the rest; this module only translates. Nothing
loops back through gRPC.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from zbrain.errors import (
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    ZBrainError,
)
from zbrain.v1 import (
    job_service_pb2,
    org_pb2,
    schedule_pb2,
    template_pb2,
    token_service_pb2,
    worker_service_pb2,
)

from ..config import ServerConfig
from ..core.access import Caller
from ..rpc.api import Api
from ..rpc.auth import Authenticator
from ..rpc.telemetry import RpcTelemetry
from . import codec, streams
from .feeds import Feeds
from .routes import MethodNotAllowedError, RouteTable, routes_of
from .sessions import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, Session, Sessions, csrf_matches

log = logging.getLogger("zbrain.http")


class _ClientMistakes(logging.Filter):
    """aiohttp logs a request it cannot parse (a URL or header over 8 KiB,
    bytes that are not HTTP) at ERROR with a traceback; it is the client's
    mistake, already answered 400, so one INFO line says what it was and a
    client cannot fill the server's log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and 400 <= error.code < 500:
            record.msg = f"{record.msg}: {error.code} {error.message.splitlines()[0]}"
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


protocol_log = logging.getLogger("zbrain.http.protocol")
"""aiohttp's connection-level log (what `web.AppRunner` would send to `aiohttp.server`)."""
protocol_log.addFilter(_ClientMistakes())

SERVICES = tuple(
    service
    for module in (
        job_service_pb2,
        token_service_pb2,
        template_pb2,
        schedule_pb2,
        org_pb2,
        worker_service_pb2,
    )
    for service in module.DESCRIPTOR.services_by_name.values()
)
"""Every zbrain.v1 service: `routes_of` keeps the RPCs their protos annotate
(a test checks that no annotated service is left out)."""
DOWNLOAD = "/zbrain.v1.JobService/DownloadArtifact"
STREAM_EVENTS = "/zbrain.v1.JobService/StreamEvents"
STREAM_ALIASES = {"from": "after_sequence", "topic": "topic_prefix"}
"""Short query names the stream routes take (`/v1/events:stream?from=41&topic=job.`)."""
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STATIC_ROOT = Path(__file__).parent / "static"
SHUTDOWN_TIMEOUT_S = 2.0  # then requests still running (a follower) are cancelled

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class RequestTooLargeError(ResourceExhaustedError):
    """A request body past ZBRAIN_MAX_MESSAGE_BYTES (answered 413)."""


class HttpServer:
    """The HTTP/JSON API and the console of one ZBrain server: `await
    start()`, then `await stop()`."""

    def __init__(
        self,
        config: ServerConfig,
        api: Api,
        auth: Authenticator,
        listen: str,
        telemetry: RpcTelemetry,
    ) -> None:
        self._config = config
        self._telemetry = telemetry
        self._api = api
        self._auth = auth
        self._listen = listen
        self._routes = RouteTable(routes_of(SERVICES))
        self.sessions = Sessions()
        self._event_json = streams.EventJson()
        self._feeds = Feeds(
            api, self._event_json.frame, config.event_buffer_bytes, streams.FRAME_INTERVAL_S
        )
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Where the console is, e.g. http://127.0.0.1:8080/."""
        host = self._listen.rpartition(":")[0] or "0.0.0.0"
        scheme = "https" if self._config.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}/"

    async def start(self) -> None:
        app = web.Application(client_max_size=self._config.limits.max_message_bytes)
        app.on_response_prepare.append(_security_headers)
        app.router.add_route("*", "/v1/session", self._session)
        app.router.add_route("*", "/v1/{rest:.*}", self._call)
        app.router.add_route("GET", "/{path:.*}", _static)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            logger=protocol_log,
        )
        await self._runner.setup()
        host, _, port = self._listen.rpartition(":")
        site = web.TCPSite(
            self._runner,
            host.strip("[]") or None,
            int(port),
            ssl_context=self._ssl_context(),
            reuse_port=False,
        )
        try:
            await site.start()
        except (OSError, ValueError) as exc:
            await self._runner.cleanup()
            raise ZBrainError(f"cannot listen for HTTP on {self._listen}: {exc}") from exc
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close the sockets (1001, going away) and stop taking requests."""
        for socket in list(self._sockets):
            await socket.close(code=1001, message=b"server shutting down")
        await self._feeds.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The gRPC port's TLS settings, client certificates included."""
        config = self._config
        if config.tls_cert is None or config.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(config.tls_cert, config.tls_key)
            if config.tls_client_ca is not None:
                context.load_verify_locations(config.tls_client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ZBrainError(f"cannot use the TLS files for HTTP: {exc}") from exc
        return context

    # -- the API ---------------------------------------------------------------------

    async def _call(self, request: web.Request) -> web.StreamResponse:
        """One API request: route, caller, request message, operation, answer."""
        websocket = _is_websocket(request)
        try:
            route, path_fields = self._routes.match(request.method, request.rel_url.raw_path)
            who, anonymous, session = await self._caller(
                request, route.full_method, checks_origin=websocket or request.method in MUTATING
            )
            body = await _body(request) if request.method in MUTATING else b""
            aliases = STREAM_ALIASES if route.streaming else None
            query = request.query.items()
            message: Any = codec.request_message(route, path_fields, query, body, aliases)
            operation = self._api.operation(route.full_method)
            if operation is None:  # an annotated RPC without an operation: a bug
                raise ZBrainError(f"{route.full_method} has no operation")
            if not route.streaming:
                answer = await self._unary(route.full_method, request, operation, who, message)
                return web.Response(text=codec.to_json(answer), content_type="application/json")
            context = streams.StreamContext(
                self._auth,
                who,
                anonymous,
                request.remote or "",
                session.id if session else "",
                self._config.limits.stream_send_timeout_s,
                self._event_json,
            )
            if route.full_method == DOWNLOAD:
                return await streams.download(request, operation(who, message), context)
            if not websocket:
                return await streams.ndjson(request, operation(who, message), context)
            if "follow" in message.DESCRIPTOR.fields_by_name and "follow" not in request.query:
                message.follow = True  # a socket follows unless told not to
            if route.full_method == STREAM_EVENTS:
                # `from_end` as the sequence it starts after: a socket shares a
                # feed and names where to resume by sequence.
                message = await self._api.events_resolved(who, message)
            source = (
                self._feeds.follow(who, message)
                if route.full_method == STREAM_EVENTS and message.follow
                else streams.unshared(operation(who, message))
            )
            return await streams.websocket(
                request, source, context, message.after_sequence, self._sockets
            )
        except ZBrainError as error:
            if websocket:
                return await streams.refuse_websocket(request, error)
            return error_response(error)
        except Exception:  # a bug: logged here, answered as a status, never a traceback
            if websocket:
                raise  # the socket may be open already: aiohttp logs it and drops it
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error_response(ZBrainError("internal error: the server's log has the details"))

    async def _unary(
        self, method: str, request: web.Request, operation: Any, who: Caller, message: Any
    ) -> Any:
        """A unary operation in a server span (in the caller's trace when its
        `traceparent` header names one), its duration recorded by status, as
        the gRPC edge records its calls."""
        started, code = time.perf_counter(), "OK"
        parent = propagate.extract(dict(request.headers))
        attributes = {"rpc.system": "http", "rpc.method": method.lstrip("/")}
        span = self._telemetry.start_rpc_span(method.lstrip("/"), parent, attributes)
        with trace.use_span(span, end_on_exit=True):
            try:
                return await operation(who, message)
            except ZBrainError as error:
                code = error.code.name
                span.set_status(Status(StatusCode.ERROR, code))
                raise
            finally:
                span.set_attribute("rpc.grpc.status_code", code)
                self._telemetry.record_rpc(method.lstrip("/"), code, started)

    async def _caller(
        self, request: web.Request, method: str, *, checks_origin: bool
    ) -> tuple[Caller, bool, Session | None]:
        """Who calls: the bearer token of the Authorization header, else the
        browser session of the cookie (a mutating request then needs the CSRF
        header), else nobody (anonymous while auth is off). The role is
        checked for the RPC `method` as on gRPC."""
        if not self._auth.required:
            _check_host(request)
        authorization = request.headers.get(hdrs.AUTHORIZATION, "")
        session = None
        if not authorization:
            if checks_origin:
                _check_origin(request)
            session = self._session_of(request)
            if session is not None:
                if request.method in MUTATING and not csrf_matches(
                    session, request.headers.get(CSRF_HEADER, "")
                ):
                    raise PermissionDeniedError(
                        f"a signed-in browser's {request.method} must carry the {CSRF_HEADER} "
                        f"header with the value of the {CSRF_COOKIE} cookie"
                    )
                authorization = session.authorization
        try:
            who, anonymous = await self._auth.caller(authorization)
        except UnauthenticatedError:
            if session is not None:
                self._end_session(session.id, "this token was revoked")
            raise
        self._auth.authorize(method, who)
        return who, anonymous, session

    def _session_of(self, request: web.Request) -> Session | None:
        """The live session of the request's cookie; UnauthenticatedError for
        a cookie whose session ended, when a token is needed."""
        cookie = request.cookies.get(SESSION_COOKIE, "")
        session = self.sessions.find(cookie) if cookie else None
        if cookie and session is None and self._auth.required:
            raise UnauthenticatedError(
                "this browser's session has ended (signed out, expired, or the server "
                "restarted): sign in again"
            )
        return session

    # -- sessions ----------------------------------------------------------------------

    async def _session(self, request: web.Request) -> web.StreamResponse:
        """GET: who this browser is; POST {"token"}: sign in; DELETE: sign out."""
        try:
            if request.method == "GET":
                return await self._whoami(request)
            if request.method not in ("POST", "DELETE"):
                allowed = ["DELETE", "GET", "POST"]
                raise MethodNotAllowedError(request.method, "/v1/session", allowed)
            _check_origin(request)
            if request.method == "POST":
                return await self._sign_in(request)
            return self._sign_out(request)
        except ZBrainError as error:
            return error_response(error)

    async def _whoami(self, request: web.Request) -> web.Response:
        """Whether auth is on, and who this browser is signed in as (its
        session's token authenticated again: a revoked one is signed out)."""
        answer: dict[str, Any] = {"authRequired": self._auth.required, "signedIn": False}
        session = self.sessions.find(request.cookies.get(SESSION_COOKIE, ""))
        if session is not None:
            try:
                who = await self._auth.authenticate(session.authorization)
            except UnauthenticatedError:
                self._end_session(session.id, "this token was revoked")
            else:
                answer.update(_signed_in(who, session))
        return web.json_response(answer)

    async def _sign_in(self, request: web.Request) -> web.Response:
        try:
            document = json.loads(await _body(request) or b"{}")
        except ValueError as exc:
            raise InvalidArgumentError('the body is not JSON: send {"token": "..."}') from exc
        token = document.get("token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise InvalidArgumentError(
                "sign in with a token",
                violations=[FieldViolation("token", "must be the token's secret")],
            )
        authorization = f"Bearer {token.strip()}"
        who = await self._auth.authenticate(authorization)
        session = self.sessions.create(authorization, who.token_id)
        answer = {"authRequired": self._auth.required, **_signed_in(who, session)}
        response = web.json_response(answer)
        secure = self._config.tls_cert is not None
        response.set_cookie(
            SESSION_COOKIE, session.id, path="/", httponly=True, samesite="Strict", secure=secure
        )
        response.set_cookie(CSRF_COOKIE, session.csrf, path="/", samesite="Strict", secure=secure)
        return response

    def _sign_out(self, request: web.Request) -> web.Response:
        session = self.sessions.find(request.cookies.get(SESSION_COOKIE, ""))
        if session is not None:
            if not csrf_matches(session, request.headers.get(CSRF_HEADER, "")):
                raise PermissionDeniedError(
                    f"signing out needs the {CSRF_HEADER} header with the value of the "
                    f"{CSRF_COOKIE} cookie"
                )
            self._end_session(session.id, "signed out")
        response = web.json_response({"authRequired": self._auth.required, "signedIn": False})
        response.del_cookie(SESSION_COOKIE, path="/")
        response.del_cookie(CSRF_COOKIE, path="/")
        return response

    def _end_session(self, session_id: str, why: str) -> None:
        """Forget a session and end its streams at once."""
        self.sessions.end(session_id)
        self._auth.end(lambda stream: stream.session == session_id, why)


def _signed_in(who: Caller, session: Session) -> dict[str, Any]:
    """What /v1/session says of a signed-in browser ("orgId" is empty for an admin)."""
    return {
        "signedIn": True,
        "tokenId": who.token_id,
        "role": who.role.label,
        "orgId": who.org_id or "",
        "csrfToken": session.csrf,
    }


def error_response(error: ZBrainError) -> web.Response:
    """An error as its HTTP status with the google.rpc.Status as JSON body."""
    status = codec.HTTP_STATUS.get(error.code, 500)
    headers = {}
    if isinstance(error, MethodNotAllowedError):
        status = 405
        headers[hdrs.ALLOW] = ", ".join(error.allowed)
    elif isinstance(error, RequestTooLargeError):
        status = 413
    elif isinstance(error, UnauthenticatedError):
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="zbrain"'
    return web.Response(
        status=status,
        text=codec.error_json(error),
        content_type="application/json",
        headers=headers,
    )


async def _body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestTooLargeError(
            f"the request body is larger than {request.client_max_size} bytes "
            "(ZBRAIN_MAX_MESSAGE_BYTES)"
        ) from exc


def _is_websocket(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in request.headers.get(hdrs.CONNECTION, "").lower()
    )


def _check_origin(request: web.Request) -> None:
    """Refuse a browser's cross-site request: one whose Origin is not this
    server (what a page elsewhere sends when it posts here or opens a socket
    here with the cookies of a signed-in user)."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return  # not a browser, or a same-origin GET
    if urllib.parse.urlsplit(origin).netloc != request.host:
        raise PermissionDeniedError(
            f"cross-origin request refused: Origin {origin} is not this server ({request.host})"
        )


def _check_host(request: web.Request) -> None:
    """With auth off, answer only requests addressed to an IP address or
    localhost: a page whose own domain was made to resolve to this machine
    (DNS rebinding) is then same-origin with nothing here it can call."""
    host = request.url.host or ""
    if host == "localhost" or host.endswith(".localhost"):
        return
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise PermissionDeniedError(
            f"this server has auth off, so it answers only requests to an IP address or "
            f"localhost, not to {host!r}: use http://127.0.0.1:PORT, or turn auth on"
        ) from None


async def _static(request: web.Request) -> web.StreamResponse:
    """The console's files; a path without a file extension that names no
    file is the console's own (a deep link, /jobs/ID) and gets index.html."""
    relative = request.match_info["path"]
    root = STATIC_ROOT.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        return error_response(NotFoundError(f"no file {request.path}"))
    if candidate.is_dir():
        candidate = candidate / "index.html"
    if not candidate.is_file():
        if "." in relative.rsplit("/", 1)[-1]:
            return error_response(NotFoundError(f"no file {request.path}"))
        candidate = root / "index.html"
    return web.FileResponse(candidate, headers={hdrs.CACHE_CONTROL: "no-cache"})


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: a strict CSP (no inline script), no framing, no sniffing;
    API answers are never cached."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/v1/"):
        response.headers.setdefault(hdrs.CACHE_CONTROL, "no-store")
