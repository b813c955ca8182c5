"""Shared fixtures: real servers on free loopback ports, real worker processes.

Fixtures are factories, so a test asks for exactly the server or worker it
needs; everything they start is stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.postgres import drop_schema, new_schema_url, postgres_url
from zbrain import Client
from zbrain_server.app import ZBrainServer
from zbrain_server.config import ServerConfig
from zbrain_server.dispatch.metrics import Telemetry

# Fast background duties and short retries keep the end-to-end tests quick.
TEST_CONFIG = dict(
    listen="127.0.0.1:0",
    lease_ttl_s=3.0,
    poll_interval_s=0.2,
    retry_base_s=0.05,
    retry_cap_s=0.2,
    timeout_grace_s=1.0,
)
# The banner's address, in text or in a JSON line (--log-format json).
LISTENING = re.compile(r"ZBrain listening on ([^\s\"]+)")


@pytest.fixture
async def store_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """The store of the servers a test starts: None is a fresh SQLite file each,
    a URL a fresh PostgreSQL schema for the test. Modules that must pass on
    every backend are marked ON_EVERY_STORE."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    base = await postgres_url()
    url, schema = new_schema_url(base)
    yield url
    await drop_schema(base, schema)


ON_EVERY_STORE = pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
async def start_server(
    store_url: str | None, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[ZBrainServer]]]:
    """Start in-process servers (real grpc.aio, real store) with config overrides."""
    started: list[ZBrainServer] = []

    async def start(*, telemetry: Telemetry | None = None, **overrides: Any) -> ZBrainServer:
        settings = {
            **TEST_CONFIG,
            "data_dir": tmp_path / f"data{len(started)}",
            "store_url": store_url,
            **overrides,
        }
        server = ZBrainServer(ServerConfig(**settings), telemetry)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        if not server.stopped:
            await server.stop(grace_s=0.5)


@pytest.fixture
async def server(start_server: Callable[..., Awaitable[ZBrainServer]]) -> ZBrainServer:
    return await start_server()


@pytest.fixture
async def client(server: ZBrainServer) -> AsyncIterator[Client]:
    async with await Client.connect(server.address, timeout=10) as connected:
        yield connected


class Processes:
    """Child processes of a test, killed (whole process group) at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[subprocess.Popen[str]] = []

    def spawn(
        self, *args: str, env: dict[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[str]:
        """A `zbrain` process; its output to `log` (a file the test reads while
        it runs) or else to a pipe, shown at teardown."""
        output = log.open("w") if log is not None else None
        child = subprocess.Popen(
            [sys.executable, "-m", "zbrain", *args],
            stdout=output or subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        if output is not None:
            output.close()  # the child has its own copy
        self.children.append(child)
        return child

    def worker(
        self,
        address: str,
        *args: str,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        temp_dir: Path | None = None,
    ) -> subprocess.Popen[str]:
        """A `zbrain worker` process with its own temp dir (or `temp_dir`)."""
        temp = temp_dir or self.tmp_path / f"worker{len(self.children)}"
        return self.spawn(
            "worker", "--server", address, "--temp-dir", str(temp), *args, env=env, log=log
        )

    def server(
        self, data_dir: Path, *args: str, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[str], str]:
        """A `zbrain serve` process on a free port; returns it and its address."""
        child = self.spawn(
            "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *args, env=env
        )
        assert child.stdout is not None
        seen = []
        for line in child.stdout:
            seen.append(line)
            match = LISTENING.search(line)
            if match:
                return child, match.group(1)
        raise AssertionError("server did not start:\n" + "".join(seen))

    def kill_all(self) -> None:
        """Kill every child; print what each said (pytest shows it when a test fails)."""
        for child in self.children:
            # The whole group, even when its leader is gone: a server's local
            # worker outlives a server killed alone, and holds the output pipe.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            if child.stdout is not None:
                print(f"--- output of child {child.pid}: {child.args!r} ---")
                print(child.stdout.read())
                child.stdout.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.kill_all()


@pytest.fixture
def server_process(store_url: str | None, processes: Processes, tmp_path: Path) -> str:
    """The address of a `zbrain serve` process (no local workers)."""
    store = ("--store", store_url) if store_url else ()
    _, address = processes.server(tmp_path / "served", *store)
    return address


def free_port() -> int:
    """A loopback port nobody listens on now, for a server that must come back on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, interval: float = 0.05
) -> None:
    """Wait until a condition holds (a check that returns a bool, or one to
    await: a call to the server, say); fail with a timeout otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _holds(check):
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def _holds(check: Callable[[], Awaitable[bool] | bool]) -> bool:
    answer = check()
    return await answer if inspect.isawaitable(answer) else answer


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """`eventually` for a test that is not async: poll a condition until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.05)


def read_until(child: subprocess.Popen[str], text: str) -> None:
    """Read a child's output until a line containing text (its end fails)."""
    assert child.stdout is not None
    for line in child.stdout:
        if text in line:
            return
    raise AssertionError(f"the process ended without printing {text!r}")


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The field violations an INVALID_ARGUMENT error carries, field -> description."""
    status = rpc_status.from_call(error)
    assert status is not None, "INVALID_ARGUMENT must carry google.rpc.BadRequest details"
    found = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        found.update({v.field: v.description for v in bad_request.field_violations})
    return found
