"""Wiring: build the store, dispatcher and gRPC server; start them and stop them cleanly."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from zbrain.errors import ZBrainError
from zbrain.logs import announce
from zbrain.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    org_pb2,
    org_pb2_grpc,
    schedule_pb2,
    schedule_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

from .config import ServerConfig
from .core.limits import DAY_US
from .core.model import EventRecord, Role, now_us
from .core.tokens import new_token
from .dispatch.bus import EventBus
from .dispatch.delays import DelayedJobs
from .dispatch.dispatcher import Dispatcher
from .dispatch.jobs import Jobs
from .dispatch.metrics import Telemetry
from .dispatch.scheduler import Scheduler
from .dispatch.signals import JobSignals
from .http.server import HttpServer
from .rpc.api import Api
from .rpc.auth import Authenticator, AuthInterceptor
from .rpc.codec import EVENT_CODEC
from .rpc.job_service import JobServicer
from .rpc.telemetry import RpcTelemetry
from .rpc.unary_services import unary_servicer
from .rpc.worker_service import WorkerServicer
from .store import JobStore, open_store
from .store.blobs import BlobStore
from .store.jobs import PURGE_BATCH
from .store.sqlite.backup import serving

log = logging.getLogger("zbrain.server")

TOKEN_SERVICE = token_service_pb2.DESCRIPTOR.services_by_name["TokenService"]
TEMPLATE_SERVICE = template_pb2.DESCRIPTOR.services_by_name["TemplateService"]
SCHEDULE_SERVICE = schedule_pb2.DESCRIPTOR.services_by_name["ScheduleService"]
ORG_SERVICE = org_pb2.DESCRIPTOR.services_by_name["OrgService"]
SERVICE_NAMES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    TOKEN_SERVICE.full_name,
    TEMPLATE_SERVICE.full_name,
    SCHEDULE_SERVICE.full_name,
    ORG_SERVICE.full_name,
)
HEALTH_CHECK_INTERVAL_S = 5.0
QUEUE_DEPTH_INTERVAL_S = 5.0
TOKEN_CHECK_INTERVAL_S = 1.0
# Beyond its grace, the local worker may take this long to stop what still
# runs (a process executor's SIGTERM, then SIGKILL after 5s) and report it.
LOCAL_WORKER_STOP_MARGIN_S = 15.0
# A local worker that exits on its own is started again after this long,
# doubling up to the maximum while it keeps exiting; one that ran steadily
# for a while before it exited is started again after the first delay.
LOCAL_WORKER_RESTART_FIRST_S = 0.5
LOCAL_WORKER_RESTART_MAX_S = 30.0
LOCAL_WORKER_STEADY_S = 60.0


def _host_and_port(listen: str) -> tuple[str, str]:
    """A listen address's host as written (`[::1]` keeps its brackets) and port."""
    host, _, port = listen.rpartition(":")
    return host, port


def _is_loopback(listen: str) -> bool:
    host = _host_and_port(listen)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# What a failed bind means, in words that say what to do.
_BIND_FAILURES = {
    errno.EADDRINUSE: "the address is in use (another zbrain serve? --listen picks another)",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "a port under 1024 needs root (or CAP_NET_BIND_SERVICE)",
}


def _why_unbindable(listen: str) -> str | None:
    """Why no address `listen` names can be bound (the first failure's words),
    or None when one can, or when it is not a plain HOST:PORT to try.

    Asked before gRPC binds: gRPC would only say "Failed to bind", after a
    line of its own C++ log on stderr. Like gRPC, one bindable address of
    several (localhost's two, say) is enough.
    """
    host, port = _host_and_port(listen)
    if not port.isdigit() or int(port) == 0:
        return None
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot resolve {host!r} ({exc.strerror})"
    failures = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a port held only by closing connections is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                return None
            except OSError as exc:
                failures.append(_BIND_FAILURES.get(exc.errno or 0, str(exc.strerror)))
    return failures[0] if failures else None


def _server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    """TLS for the port; with a client CA, clients must present a certificate it signed."""
    assert config.tls_cert is not None and config.tls_key is not None
    try:
        pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
        client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
    except OSError as exc:
        raise ZBrainError(f"cannot read TLS files: {exc.filename}: {exc.strerror}") from exc
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC settings: message size limit, and keepalives so dead peers are noticed."""
    return [
        # Without this a second server on the same port would silently share it.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", config.limits.max_message_bytes),
        ("grpc.max_send_message_length", config.limits.max_message_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


class ZBrainServer:
    """One running ZBrain server: `await start()`, then `await stop()`."""

    def __init__(self, config: ServerConfig, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry()
        self.port = 0
        self._store: JobStore | None = None
        self._server: grpc.aio.Server | None = None
        self._dispatcher: Dispatcher | None = None
        self._delayed: DelayedJobs | None = None
        self._scheduler: Scheduler | None = None
        self._health = health.aio.HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []
        self._local_workers: asyncio.subprocess.Process | None = None
        self._local_keeper: asyncio.Task[None] | None = None
        # One id for every local worker process of this server run (see
        # _spawn_local_worker); another run's, orphaned by a kill -9 of its
        # server and still dialling this port, must not share it.
        self._local_worker_id = f"{socket.gethostname()}-local-{secrets.token_hex(3)}"
        self.stopped = False
        self.auth_required = False
        self._held = contextlib.ExitStack()  # the data directory, while serving
        self.http: HttpServer | None = None  # the HTTP API and console, with --http-listen

    @property
    def store(self) -> JobStore:
        """The open store (for bootstrap tasks such as creating the first token)."""
        if self._store is None:
            raise ZBrainError("the server is not started")
        return self._store

    @property
    def open_streams(self) -> int:
        """How many long-lived streams (readers and workers) are being served."""
        return self._auth.open_streams

    @property
    def address(self) -> str:
        return f"{_host_and_port(self.config.listen)[0]}:{self.port}"

    async def start(self) -> None:
        """Open the store and start serving; on any failure, release what was started."""
        if self.config.store_url is None:
            # One server per SQLite data directory; `zbrain restore` checks it too.
            self._held.enter_context(serving(self.config.data_dir))
        try:
            self._store = await open_store(self.config.data_dir, self.config.store_url, EVENT_CODEC)
        except BaseException:
            self._held.close()
            raise
        try:
            await self._start(self._store)
        except BaseException:
            await self.stop(grace_s=0)
            raise

    async def _start(self, store: JobStore) -> None:
        config = self.config
        blobs = BlobStore(config.artifact_root)
        blobs.open()
        signals = JobSignals()
        bus = EventBus(config.event_buffer, config.event_buffer_bytes)
        self._dispatcher = dispatcher = Dispatcher(store, config, signals, self.telemetry)
        self._delayed = delayed = DelayedJobs(store, config.poll_interval_s)

        def committed(records: list[EventRecord]) -> None:
            # Called by the store after a commit: it must never fail the writer.
            try:
                bus.publish(records)
                dispatcher.observe(records)
                delayed.observe(records)
            except Exception:
                log.exception("handling committed events failed")

        store.set_event_listener(committed)
        auth_required = await self._auth_required(store)
        local_token, self._local_bearer = new_token(
            config.default_org, Role.WORKER, "local worker pool", now_us()
        )
        self._auth = Authenticator(
            store.find_token,
            required=auth_required,
            limits=config.limits,
            extra_tokens=[local_token],
        )
        rpc_telemetry = RpcTelemetry(self.telemetry)
        server = grpc.aio.server(
            options=server_options(config),
            interceptors=[rpc_telemetry.interceptor(), AuthInterceptor(self._auth)],
        )
        jobs = Jobs(config, store, dispatcher, blobs, signals, bus)
        self._api = api = Api(config, jobs, store)
        self._scheduler = Scheduler(store, config, api.schedules.job_for)
        api.schedules.attach(self._scheduler)
        job_service_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(api), server)
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerServicer(config, dispatcher), server
        )
        token_service_pb2_grpc.add_TokenServiceServicer_to_server(
            unary_servicer(token_service_pb2_grpc.TokenServiceServicer, TOKEN_SERVICE, api), server
        )
        template_pb2_grpc.add_TemplateServiceServicer_to_server(
            unary_servicer(template_pb2_grpc.TemplateServiceServicer, TEMPLATE_SERVICE, api), server
        )
        schedule_pb2_grpc.add_ScheduleServiceServicer_to_server(
            unary_servicer(schedule_pb2_grpc.ScheduleServiceServicer, SCHEDULE_SERVICE, api), server
        )
        org_pb2_grpc.add_OrgServiceServicer_to_server(
            unary_servicer(org_pb2_grpc.OrgServiceServicer, ORG_SERVICE, api), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        unbindable = _why_unbindable(config.listen)
        if unbindable is not None:
            raise ZBrainError(f"cannot listen on {config.listen}: {unbindable}")
        try:
            self.port = (
                server.add_secure_port(config.listen, _server_credentials(config))
                if config.tls_cert
                else server.add_insecure_port(config.listen)
            )
        except RuntimeError as exc:
            raise ZBrainError(f"cannot listen on {config.listen}: {exc}") from exc
        await server.start()
        self._server = server
        if config.http_listen is not None:
            self.http = HttpServer(config, api, self._auth, config.http_listen, rpc_telemetry)
            await self.http.start()
        await dispatcher.start()
        self._delayed.start()
        self._scheduler.start()
        await self._set_serving(True)
        self._tasks = [
            asyncio.create_task(self._watch_health(store), name="zbrain-health"),
            asyncio.create_task(self._retention(store, blobs), name="zbrain-retention"),
            asyncio.create_task(self._measure_queue(), name="zbrain-queue-depth"),
        ]
        self._tasks.append(asyncio.create_task(self._watch_tokens(store), name="zbrain-auth"))
        if config.local_workers:
            await self._start_local_workers()

    async def _auth_required(self, store: JobStore) -> bool:
        """Decide whether calls need a token; refuse to expose an open server.

        The default is `required` as soon as a token exists. Without auth (or
        TLS) a server listens on loopback only, unless the operator insists
        with --insecure.
        """
        config = self.config
        required = config.auth == "required" or (config.auth is None and await store.has_tokens())
        self.auth_required = required
        for listen in (config.listen, config.http_listen):
            if listen is None or _is_loopback(listen) or config.insecure:
                continue
            if not required or config.tls_cert is None:
                missing = "auth" if not required else "TLS"
                raise ZBrainError(
                    f"refusing to listen on {listen} without {missing}: create a token "
                    "(zbrain token create --data-dir DIR --org ORG --role admin), configure TLS "
                    "(--tls-cert/--tls-key), or pass --insecure to accept the risk"
                )
        return required

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking calls, let in-flight ones finish (up to grace_s), close the store."""
        self.stopped = True
        await self._health.enter_graceful_shutdown()
        if self._local_workers is not None:
            await self._stop_local_workers()
        if self.http is not None:
            await self.http.stop()
        if self._server is not None:
            await self._server.stop(grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for timer in (self._scheduler, self._delayed):
            if timer is not None:
                await timer.stop()
        if self._dispatcher is not None:
            await self._dispatcher.stop()
        if self._store is not None:
            await self._store.close()
        self._held.close()

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _watch_health(self, store: JobStore) -> None:
        """Report NOT_SERVING while the store cannot be read and written."""
        healthy = True
        while True:
            await asyncio.sleep(HEALTH_CHECK_INTERVAL_S)
            try:
                await store.check_health()
                ok = True
            except ZBrainError as exc:
                log.error("store health check failed: %s", exc)
                ok = False
            if ok != healthy:
                healthy = ok
                await self._set_serving(ok)

    async def _watch_tokens(self, store: JobStore) -> None:
        """Every second: turn auth on as soon as a token appears (made with
        `zbrain token create --data-dir`, or on another replica) unless --auth
        says otherwise, and end the open streams that would now be refused (opened
        without a token, or with one since revoked). Auth is never turned off again."""
        while True:
            await asyncio.sleep(TOKEN_CHECK_INTERVAL_S)
            try:
                if not self.auth_required and self.config.auth is None and await store.has_tokens():
                    self._auth.required = self.auth_required = True
                    log.warning("a token exists now: every call needs a token from here on")
                await self._auth.recheck()
            except ZBrainError as exc:
                log.warning("could not check tokens: %s", exc)

    async def _measure_queue(self) -> None:
        """Refresh the queue gauges every few seconds; a scrape then never
        waits for the database."""
        while True:
            try:
                await self.measure_queue()
            except ZBrainError as exc:
                log.warning("could not measure the queue: %s", exc)
            await asyncio.sleep(QUEUE_DEPTH_INTERVAL_S)

    async def measure_queue(self) -> None:
        """Set the queue-depth and unmatched-jobs gauges from the store now."""
        assert self._store is not None and self._dispatcher is not None
        depth = await self._store.count_unfinished()
        self.telemetry.set_queue_depth(depth)
        # Runnable jobs by org, less those that require labels (counted on
        # their own line below): what is left requires none.
        free: collections.Counter[str] = collections.Counter()
        for (org_id, state), jobs in depth.items():
            if state.is_runnable:
                free[org_id] += jobs
        unmatched: collections.Counter[str] = collections.Counter()
        for org_id, requires, jobs in await self._store.runnable_requirements():
            free[org_id] -= jobs
            if not self._dispatcher.has_worker_for(org_id, requires):
                unmatched[org_id] += jobs
        for org_id, jobs in free.items():
            if jobs > 0 and not self._dispatcher.has_worker_for(org_id, {}):
                unmatched[org_id] += jobs
        self.telemetry.set_unmatched(unmatched)

    async def _retention(self, store: JobStore, blobs: BlobStore) -> None:
        """Purge finished jobs past the retention age (the server's, or an
        org's own), then blobs nobody refers to."""
        shortest = min(self.config.retention_s, self.config.event_retention_s)
        every = max(self.config.poll_interval_s, min(3600.0, shortest / 10))
        while True:
            try:
                now = now_us()
                before = now - int(self.config.retention_s * 1e6)
                own = {  # orgs with retention days of their own (OrgService)
                    settings.org_id: now - settings.retention_days * DAY_US
                    for settings in await store.orgs.all_set()
                    if settings.retention_days
                }
                purged = batch = await store.purge_finished(before, own)
                while batch == PURGE_BATCH:  # a backlog: the rest, a batch at a time
                    batch = await store.purge_finished(before, own)
                    purged += batch
                await store.purge_events(now - int(self.config.event_retention_s * 1e6))
                deleted = blobs.collect_garbage(await store.referenced_blobs())
                if purged or deleted:
                    log.info("retention: purged %d jobs and %d blobs", purged, deleted)
            except ZBrainError:
                log.exception("retention pass failed; trying again later")
            await asyncio.sleep(every)

    async def _start_local_workers(self) -> None:
        """Run a `zbrain worker` process beside the server (`zbrain serve
        --workers N`), and start it again whenever it exits on its own."""
        self._local_workers = await self._spawn_local_worker()
        log.info("started a local worker process with %d slots", self.config.local_workers)
        self._local_keeper = asyncio.create_task(
            self._keep_local_worker(), name="zbrain-local-worker"
        )

    async def _spawn_local_worker(self) -> asyncio.subprocess.Process:
        # One id for every process this server run starts: a new process's
        # hello then ends the leases of the one before at once
        # (WORKER_RESTARTED), not a lease TTL later.
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zbrain",
            "worker",
            "--server",
            f"127.0.0.1:{self.port}",
            "--id",
            self._local_worker_id,
            "--concurrency",
            str(self.config.local_workers),
            "--org",
            self.config.default_org,
            "--grace",
            f"{self.config.worker_grace_s}s",
            env={**os.environ, "ZBRAIN_TOKEN": self._local_bearer},
        )

    async def _keep_local_worker(self) -> None:
        """Start the local worker again when it fails while the server serves
        (a crash, the kernel's OOM killer, a kill -9): `--workers N` promises
        N slots for as long as the server runs. What the dead process ran is
        retried as any lost worker's jobs are. A worker that exits with status
        0 was told to stop (a signal of its own, or Ctrl-C in the terminal,
        which reaches it as well as the server) and stays stopped; one that
        cannot start is tried again, less and less often, for as long as the
        server runs (each failure is in the log)."""
        delay = LOCAL_WORKER_RESTART_FIRST_S
        while True:
            process = self._local_workers
            assert process is not None
            started = time.monotonic()
            status = await process.wait()
            if status == 0:
                log.info("the local worker process stopped")
                return
            if time.monotonic() - started >= LOCAL_WORKER_STEADY_S:
                delay = LOCAL_WORKER_RESTART_FIRST_S
            log.warning(
                "the local worker process exited (%s); starting another in %.1fs",
                f"killed by signal {-status}" if status < 0 else f"status {status}",
                delay,
            )
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, LOCAL_WORKER_RESTART_MAX_S)
                if self.stopped:
                    return
                try:
                    self._local_workers = await self._spawn_local_worker()
                    break
                except OSError as error:  # no memory or processes left, say
                    log.error(
                        "cannot start the local worker process (%s); trying in %.1fs",
                        error,
                        delay,
                    )
            log.info("started the local worker process again")

    async def _stop_local_workers(self) -> None:
        """Drain the local worker while this server still serves it: running jobs
        get its grace to finish, then it stops them (every process of each job's
        group) and reports them INTERRUPTED, so nothing of theirs outlives the
        server and none waits a lease TTL to be found lost. Only a worker that
        does not exit in time for that is killed."""
        keeper = self._local_keeper
        if keeper is not None:  # a worker stopped now stays stopped
            keeper.cancel()
            try:
                await keeper
            except asyncio.CancelledError:
                pass
            except Exception:  # it must not keep the server from stopping
                log.exception("keeping the local worker running failed")
        process = self._local_workers
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        allowed = self.config.worker_grace_s + LOCAL_WORKER_STOP_MARGIN_S
        try:
            async with asyncio.timeout(allowed):
                await process.wait()
        except TimeoutError:
            log.error("the local worker did not stop within %.0fs; killing it", allowed)
            process.kill()
            await process.wait()


async def serve(
    config: ServerConfig, telemetry: Telemetry | None = None, metrics_url: str | None = None
) -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down gracefully.

    Its banner (text, or JSON with --log-format json) names the address, the
    store, whether TLS is on, and `metrics_url` when metrics are served."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    server = ZBrainServer(config, telemetry)
    await server.start()
    fields = {
        "store": server.store.location,
        "artifacts": str(config.artifact_root),
        "tls": "on" if config.tls_cert is not None else "off",
    }
    if metrics_url:
        fields["metrics"] = metrics_url
    announce(f"ZBrain listening on {server.address}", **fields)
    if server.http is not None:
        announce(f"ZBrain console and HTTP API at {server.http.url}")
    if not server.auth_required:
        announce(
            "auth is off: anyone who can reach this address can run commands; "
            "create a token to turn it on (zbrain token create "
            f"{'--store URL' if config.store_url else '--data-dir DIR'} --org ORG --role admin)"
        )
    await stopping.wait()
    announce("ZBrain shutting down: finishing in-flight calls")
    await server.stop()
    announce("ZBrain stopped")
