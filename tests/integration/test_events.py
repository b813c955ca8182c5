"""StreamEvents: every change recorded durably, replayed and followed live, resumable."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import grpc
import pytest

from tests.conftest import Processes, eventually
from zbrain import Client, Event, JobState
from zbrain.errors import EVENTS_PURGED, InvalidArgumentError, OutOfRangeError
from zbrain.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc


async def collect(client: Client, count: int, **options) -> list[Event]:
    events: list[Event] = []
    async for event in client.events(**options):
        events.append(event)
        if len(events) == count:
            break
    return events


def states(events: list[Event]) -> list[str]:
    return [e.data["to_state"] for e in events if e.type == "job_state_changed"]


async def test_a_jobs_whole_life_is_recorded_in_order(
    server, client: Client, processes: Processes
) -> None:
    processes.worker(server.address, "--id", "w1")
    job = await client.submit(["sh", "-c", "echo out; exit 1"], max_retries=1)
    await client.wait(job.id, timeout=30)

    events = [e async for e in client.events(topic_prefix=f"jobs/{job.id}/")]

    assert [e.sequence for e in events] == sorted({e.sequence for e in events})
    assert events[0].type == "job_submitted"
    assert states(events) == ["RUNNING", "RETRYING", "RUNNING", "FAILED"]
    changes = [e for e in events if e.type == "job_state_changed"]
    assert changes[0].data["worker_id"] == "w1"
    assert changes[0].data["attempt"] == 1
    assert "next_run_time" in changes[1].data
    assert changes[3].data["error"] == "exited with status 1"
    logged = [line["text"] for e in events if e.type == "job_logged" for line in e.data["lines"]]
    assert logged == ["out", "out"]
    assert all(e.job_id == job.id and e.org_id == "default" for e in events)


async def test_worker_connections_are_recorded(
    server, client: Client, processes: Processes
) -> None:
    worker = processes.worker(server.address, "--id", "presence")
    connected = await collect(client, 1, topic_prefix="workers/presence", follow=True)
    worker.terminate()
    left = await collect(
        client, 1, topic_prefix="workers/presence", after=connected[0].sequence, follow=True
    )
    assert connected[0].data == {"worker_id": "presence", "connected": True}
    assert left[0].data == {"worker_id": "presence"}  # connected=false is the proto3 default


async def test_follow_streams_live_events_after_the_backlog(server, client: Client) -> None:
    first = await client.submit(["true"])
    backlog_read = asyncio.Event()

    async def follow() -> list[Event]:
        events: list[Event] = []
        async for event in client.events(follow=True):
            events.append(event)
            backlog_read.set()  # the backlog is the first job's one event
            if len(events) == 3:
                break
        return events

    follower = asyncio.ensure_future(follow())
    await asyncio.wait_for(backlog_read.wait(), 10)
    second = await client.submit(["true"])
    await client.cancel(second.id)

    events = await asyncio.wait_for(follower, 10)

    assert [(e.type, e.job_id) for e in events] == [
        ("job_submitted", first.id),
        ("job_submitted", second.id),
        ("job_state_changed", second.id),
    ]


async def test_resuming_from_a_sequence_misses_nothing_and_repeats_nothing(
    server, client: Client
) -> None:
    for _ in range(5):
        await client.submit(["true"])
    seen = await collect(client, 3, follow=True)
    for _ in range(5):
        await client.submit(["true"])

    rest = await collect(client, 7, after=seen[-1].sequence, follow=True)

    sequences = [e.sequence for e in seen + rest]
    assert sequences == list(range(sequences[0], sequences[0] + 10))


async def test_events_are_filtered_by_org_and_topic(server, client: Client) -> None:
    mine = await client.submit(["true"], org="a")
    await client.submit(["true"], org="b")

    in_a = [e async for e in client.events(org="a")]
    by_topic = [e async for e in client.events(org="a", topic_prefix=f"jobs/{mine.id}/")]

    assert {e.org_id for e in in_a} == {"a"}
    assert [e.job_id for e in by_topic] == [mine.id]


async def test_a_purged_sequence_is_out_of_range_naming_the_oldest(start_server) -> None:
    server = await start_server(event_retention_s=0.001, retention_s=3600.0, poll_interval_s=0.05)
    async with await Client.connect(server.address) as client:
        for _ in range(3):
            await client.submit(["true"])

        async def all_purged() -> bool:
            """Whether retention (a pass every poll interval here) removed all three."""
            purged: int = await server.store.events_purged_through()
            return purged >= 3

        await eventually(all_purged)
        with pytest.raises(OutOfRangeError) as error:
            _ = [e async for e in client.events(after=1)]
        assert "the oldest available is 4" in str(error.value)
        # Programs read where to resume from the details, not from the words.
        assert error.value.reason == EVENTS_PURGED
        assert error.value.metadata["resume_after_sequence"] == "3"
        assert [e async for e in client.events(after=3)] == []


async def test_a_slow_subscriber_is_told_to_resume(start_server) -> None:
    # A lease that outlives the 200 reports below on a busy machine (the
    # tests' default of 3 s did not, once): this test is about events.
    server = await start_server(event_buffer=5, lease_ttl_s=120.0)
    channel = grpc.aio.insecure_channel(server.address)
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    async with await Client.connect(server.address) as client:
        job = await client.submit(["chatty"])
    call = stub.StreamEvents(job_service_pb2.StreamEventsRequest(follow=True))
    # The backlog (the job's submission) comes after the subscription: once it
    # is read the subscriber is registered. From then on, nothing is read.
    backlog = await call.read()
    assert [event.job_id for event in backlog.events] == [job.id]
    lease = (await stub.AcquireLease(job_service_pb2.AcquireLeaseRequest(worker_id="w"))).leases[0]
    big = job_pb2.LogLine(stream=job_pb2.LOG_STREAM_STDOUT, text="x" * 15_000)
    for _ in range(200):  # ~12 MB of log events: far past what the transport buffers
        await stub.ReportLogs(
            job_service_pb2.ReportLogsRequest(
                job_id=job.id, lease_epoch=lease.lease_epoch, lines=[big] * 4
            )
        )

    with pytest.raises(grpc.aio.AioRpcError) as error:
        while await call.read() is not grpc.aio.EOF:
            pass
    assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "resume with after_sequence=" in error.value.details()
    await channel.close()


async def test_negative_sequence_is_invalid(client: Client) -> None:
    with pytest.raises(InvalidArgumentError):
        _ = [e async for e in client.events(after=-1)]


async def test_from_end_replays_no_history_and_misses_nothing_while_jobs_arrive(
    server, client: Client
) -> None:
    """A stream from the end, opened while submissions land, sends none of the
    history and, from its first event on, every event committed, in order."""
    for _ in range(5):
        await client.submit(["true"])
    history = [e.sequence async for e in client.events()]
    stop = asyncio.Event()

    async def submit_until_stopped() -> None:
        while not stop.is_set():
            await client.submit(["true"])

    submitter = asyncio.ensure_future(submit_until_stopped())
    got: list[int] = []
    async for event in client.events(from_end=True, follow=True):
        got.append(event.sequence)
        if len(got) == 20:
            break
    stop.set()
    await asyncio.wait_for(submitter, 10)

    recorded = [e.sequence async for e in client.events(after=history[-1])]
    assert got[0] > history[-1]
    assert got == [s for s in recorded if s >= got[0]][:20]


async def test_from_end_ends_at_once_without_follow_and_excludes_a_sequence(
    client: Client,
) -> None:
    await client.submit(["true"])
    assert [e async for e in client.events(from_end=True)] == []
    with pytest.raises(InvalidArgumentError) as error:
        _ = [e async for e in client.events(from_end=True, after=1, follow=True)]
    assert error.value.violations[0].field == "from_end"


def test_cli_events_json_has_seq_and_job_id(processes: Processes, tmp_path) -> None:
    _, address = processes.server(tmp_path / "data")
    env = {**os.environ, "ZBRAIN_SERVER": address}
    job_id = subprocess.run(
        [sys.executable, "-m", "zbrain", "submit", "--", "true"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    out = subprocess.run(
        [sys.executable, "-m", "zbrain", "events", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    [event] = [json.loads(line) for line in out.stdout.splitlines()]
    assert event["sequence"] == 1
    assert event["job_id"] == job_id
    assert event["type"] == "job_submitted"

    # --from end: only what comes next, so nothing here without --follow.
    from_end = subprocess.run(
        [sys.executable, "-m", "zbrain", "events", "--from", "end"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (from_end.returncode, from_end.stdout) == (0, "")
    assert "no events after the last one stored" in from_end.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "zbrain", "events", "--from", "later"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert "neither a sequence number nor 'end'" in bad.stderr


def test_cli_watch_follows_a_job_to_its_end(processes: Processes, tmp_path) -> None:
    _, address = processes.server(tmp_path / "data", "--workers", "1")
    env = {**os.environ, "ZBRAIN_SERVER": address}
    job_id = subprocess.run(
        [sys.executable, "-m", "zbrain", "submit", "--", "sh", "-c", "sleep 0.5; echo done"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    out = subprocess.run(
        [sys.executable, "-m", "zbrain", "watch", job_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "submitted: sh -c sleep 0.5; echo done" in lines[0]
    assert "done" in lines
    assert "RUNNING -> SUCCEEDED" in lines[-1]
    assert JobState.SUCCEEDED.name in lines[-1]
