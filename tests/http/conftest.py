"""Fixtures for the HTTP edge: real servers with --http-listen on a free
loopback port, and an aiohttp client session per test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from zbrain.models import Role
from zbrain_server.app import ZBrainServer
from zbrain_server.dispatch.tokens import create_token


class Http:
    """A server with its HTTP port, and a client session to it."""

    def __init__(self, server: ZBrainServer, session: aiohttp.ClientSession) -> None:
        assert server.http is not None
        self.server = server
        self.session = session
        self.base = server.http.url.rstrip("/")
        self.port = server.http.port

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        """Send a request; the status and the JSON answer (None if not JSON)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
        async with self.session.request(method, self.base + path, data=data, headers=sent) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, None

    async def submit(self, cmd: list[str], token: str | None = None, **spec: Any) -> str:
        status, answer = await self.call(
            "POST", "/v1/jobs", {"job": {"cmd": cmd, **spec}}, token=token
        )
        assert status == 200, answer
        job_id: str = answer["job"]["id"]
        return job_id

    async def token(self, org: str, role: Role) -> str:
        _, bearer = await create_token(self.server.store, org, role, f"{org} {role.label}")
        return bearer

    def websocket(self, path: str, **kwargs: Any) -> Any:
        return self.session.ws_connect(self.base + path, **kwargs)


StartHttp = Callable[..., Awaitable[Http]]


@pytest.fixture
async def start_http(
    start_server: Callable[..., Awaitable[ZBrainServer]],
) -> AsyncIterator[StartHttp]:
    """Start a server with its HTTP port (config overrides as for start_server)."""
    sessions: list[aiohttp.ClientSession] = []

    async def start(**overrides: Any) -> Http:
        server = await start_server(http_listen="127.0.0.1:0", **overrides)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Http(server, session)

    yield start
    for session in sessions:
        await session.close()


@pytest.fixture
async def http(start_http: StartHttp) -> Http:
    return await start_http()
