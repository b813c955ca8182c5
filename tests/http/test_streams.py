"""Streams on the HTTP edge: WebSockets that resume without gaps or
duplicates, log sockets that follow a job, and a slow reader cut off, told
where to resume, while the server's memory stays flat."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import aiohttp

from tests.conftest import eventually
from zbrain.models import Role
from zbrain_server.config import Limits

from .conftest import Http, StartHttp
from .test_api import lease

BIG_ARGUMENT = "x" * (100 << 10)  # JobSubmitted events carry the argv


async def recorded_sequences(http: Http, topic: str = "jobs/") -> list[int]:
    """Every recorded event's sequence under `topic`, read as NDJSON."""
    async with http.session.get(f"{http.base}/v1/events?topic={topic}") as response:
        lines = (await response.text()).splitlines()
    return [int(e["sequence"]) for line in lines for e in json.loads(line)["events"]]


def sequences(frame: dict[str, Any], key: str = "events") -> list[int]:
    return [int(item["sequence"]) for item in frame[key]]


async def submit_batch(http: Http, count: int, *cmd: str) -> None:
    body = {"jobs": [{"cmd": ["true", *cmd]} for _ in range(count)]}
    status, answer = await http.call("POST", "/v1/jobs:batchSubmit", body)
    assert status == 200, answer


async def test_an_event_socket_resumes_from_its_last_sequence_without_gaps_or_duplicates(
    http: Http,
) -> None:
    await submit_batch(http, 30)
    seen: list[int] = []
    async with http.websocket("/v1/events:stream?from=0&topic=jobs/") as ws:
        frame = await ws.receive_json(timeout=10)
        seen += sequences(frame)
    await submit_batch(http, 30)  # while it is away
    async with http.websocket(f"/v1/events:stream?from={seen[-1]}&topic=jobs/") as ws:
        while len(seen) < 60:
            seen += sequences(await ws.receive_json(timeout=10))
        await submit_batch(http, 5)  # and live, on the same socket
        while len(seen) < 65:
            seen += sequences(await ws.receive_json(timeout=10))
    assert seen == await recorded_sequences(http)
    assert len(set(seen)) == 65


async def test_sockets_joining_a_shared_feed_at_different_places_each_get_everything_once(
    http: Http,
) -> None:
    """Sockets following the same events share one feed; one joining late,
    from far back or from now, still gets every event after its `from` once."""
    await submit_batch(http, 10)
    got: dict[str, list[int]] = {"first": [], "back": [], "now": []}
    async with http.websocket("/v1/events:stream?from=0&topic=jobs/") as first:
        while len(got["first"]) < 10:
            got["first"] += sequences(await first.receive_json(timeout=10))
        await submit_batch(http, 10)
        now = (await recorded_sequences(http))[-1]
        async with (
            http.websocket("/v1/events:stream?from=3&topic=jobs/") as back,
            http.websocket(f"/v1/events:stream?from={now}&topic=jobs/") as late,
        ):
            await submit_batch(http, 10)
            recorded = await recorded_sequences(http)
            for name, ws, start in (("first", first, 0), ("back", back, 3), ("now", late, now)):
                expected = [s for s in recorded if s > start]
                while len(got[name]) < len(expected):
                    got[name] += sequences(await ws.receive_json(timeout=10))
                assert got[name] == expected, name


async def test_an_event_socket_from_the_end_gets_only_what_follows_its_opening(
    http: Http,
) -> None:
    """`from_end=true` starts where the store ended when the socket opened: none
    of the history, then every event after it, the first included; asking for
    a sequence as well is refused before the socket opens."""
    await submit_batch(http, 10)
    history = await recorded_sequences(http)
    got: list[int] = []
    async with http.websocket("/v1/events:stream?from_end=true&topic=jobs/") as ws:
        await submit_batch(http, 5)
        while len(got) < 5:
            got += sequences(await ws.receive_json(timeout=10))
    assert got == [s for s in await recorded_sequences(http) if s > history[-1]]
    status, answer = await http.call("GET", "/v1/events?from_end=true&from=3")
    assert status == 400
    assert answer["details"][0]["fieldViolations"][0]["field"] == "from_end"


async def test_a_socket_from_far_back_takes_the_backlog_at_its_own_pace(
    start_http: StartHttp,
) -> None:
    """Megabytes of stored events reach a socket whose buffer holds far less:
    the backlog is read as the socket takes it, never pushed at it."""
    http = await start_http(event_buffer_bytes=256 << 10)
    for _ in range(2):
        await submit_batch(http, 10, BIG_ARGUMENT)
    recorded = await recorded_sequences(http)
    got: list[int] = []
    async with http.websocket("/v1/events:stream?from=0&topic=jobs/", max_msg_size=0) as ws:
        while len(got) < len(recorded):
            frame = await ws.receive_json(timeout=10)
            assert "error" not in frame, frame
            got += sequences(frame)
    assert got == recorded


async def test_a_log_socket_follows_a_running_job_resumes_and_ends_with_it(http: Http) -> None:
    job_id = await http.submit(["true"])
    _, epoch = await lease(http)

    async def report(*texts: str) -> None:
        lines = [{"stream": "LOG_STREAM_STDERR", "text": text} for text in texts]
        status, answer = await http.call(
            "POST", f"/v1/jobs/{job_id}/logs:report", {"leaseEpoch": epoch, "lines": lines}
        )
        assert status == 200, answer

    await report("one", "two")
    async with http.websocket(f"/v1/jobs/{job_id}/logs:stream?from=0") as ws:
        frame = await ws.receive_json(timeout=10)
        assert [line["text"] for line in frame["lines"]] == ["one", "two"]
        assert frame["lines"][0]["stream"] == "LOG_STREAM_STDERR"
        await report("three")
        frame = await ws.receive_json(timeout=10)
        assert [line["text"] for line in frame["lines"]] == ["three"]
    async with http.websocket(f"/v1/jobs/{job_id}/logs:stream?from=2") as ws:
        frame = await ws.receive_json(timeout=10)
        assert sequences(frame, "lines") == [3]
        status, _ = await http.call(
            "POST",
            f"/v1/jobs/{job_id}/lease:complete",
            {"leaseEpoch": epoch, "result": {"outcome": "ATTEMPT_OUTCOME_SUCCEEDED"}},
        )
        assert status == 200
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000


async def test_a_socket_for_a_missing_job_closes_with_its_status(http: Http) -> None:
    async with http.websocket("/v1/jobs/01a2357e-1753-713e-9c23-cc11aed3891d/logs:stream") as ws:
        frame = await ws.receive_json(timeout=10)
        assert frame["error"]["code"] == 5
        await ws.receive(timeout=10)
        assert ws.close_code == 4005


class StalledReader:
    """A WebSocket client that reads nothing until told to: a raw socket with
    a small receive buffer, so the server meets a full connection soon."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, path: str) -> StalledReader:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=raw, limit=16 << 10)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked): its opcode and payload."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    def close(self) -> None:
        self.writer.close()


def resident_bytes() -> int:
    """This process's resident memory (the server runs in it)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_slow_reader_is_cut_off_naming_where_to_resume_while_memory_stays_flat(
    start_http: StartHttp,
) -> None:
    http = await start_http(event_buffer_bytes=2 << 20, limits=Limits(stream_send_timeout_s=0.5))
    # 24 MiB of events, twice: a reader buffered without bound would hold all
    # of it; one cut off holds its 2 MiB buffer, and the allocator's own
    # noise in this process (the server and the test share it) is a few MiB.
    rounds = 24
    flood_bytes = rounds * 10 * len(BIG_ARGUMENT)

    async def flood() -> None:
        for _ in range(rounds):
            await submit_batch(http, 10, BIG_ARGUMENT)

    await flood()  # the same work once without a reader: what it costs anyway
    start = (await recorded_sequences(http))[-1]
    before = resident_bytes()
    stalled = await StalledReader.open(http.port, f"/v1/events:stream?from={start}&topic=jobs/")
    await eventually(lambda: _is(http.server.open_streams, 1))
    await flood()
    await eventually(lambda: _is(http.server.open_streams, 0))  # cut off
    grown = resident_bytes() - before
    assert grown < flood_bytes / 2, f"the server grew {grown} bytes for a reader it cut off"

    received: list[int] = []
    while True:
        opcode, payload = await asyncio.wait_for(stalled.frame(), 10)
        if opcode == 0x8:  # close
            break
        frame = json.loads(payload)
        if "error" in frame:
            error = frame["error"]
        else:
            received += sequences(frame)
    stalled.close()
    code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    assert code == 4008
    assert error["code"] == 8
    # Cut off by a full socket or by a full event buffer, whichever came first:
    # either way it resumes after the last event it was sent.
    resume = int(reason.rsplit("from=", 1)[1])
    assert resume == (received[-1] if received else start)

    rest: list[int] = []
    everything = [s for s in await recorded_sequences(http) if s > start]
    assert received == everything[: len(received)]
    async with http.websocket(f"/v1/events:stream?from={resume}&topic=jobs/") as ws:
        while len(received) + len(rest) < len(everything):
            rest += sequences(await ws.receive_json(timeout=10))
    assert received + rest == everything


async def _is(value: int, expected: int) -> bool:
    return value == expected


async def test_sockets_need_a_token_and_see_only_their_organisation(start_http: StartHttp) -> None:
    http = await start_http(auth="required")
    team_a = await http.token("team-a", Role.CLIENT)
    theirs = await http.submit(["true"], token=await http.token("team-b", Role.CLIENT))
    async with http.websocket("/v1/events:stream") as ws:
        assert (await ws.receive_json(timeout=10))["error"]["code"] == 16
        await ws.receive(timeout=10)
        assert ws.close_code == 4016
    bearer = {"Authorization": f"Bearer {team_a}"}
    async with http.websocket(f"/v1/jobs/{theirs}/logs:stream", headers=bearer) as ws:
        assert (await ws.receive_json(timeout=10))["error"]["code"] == 5
        await ws.receive(timeout=10)
        assert ws.close_code == 4005
    ours = await http.submit(["true"], token=team_a)
    async with http.websocket("/v1/events:stream?follow=false", headers=bearer) as ws:
        frame = await ws.receive_json(timeout=10)
        assert {event["jobId"] for event in frame["events"]} == {ours}
