"""`SyncClient` over a fake channel: the async client's calls, without `await`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from tests.unit.fakes import FakeChannel, job_message, rpc_error
from zbrain import Client, SyncClient
from zbrain.errors import JobFailedError, NotFoundError
from zbrain.models import LogLine, LogStream
from zbrain.v1 import job_pb2, job_service_pb2, schedule_pb2, template_pb2


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def client(channel: FakeChannel, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncClient]:
    """A SyncClient over the fake channel. SyncClient opens its `Client` with
    `Client.connect` on its own event loop; the test makes that wrap the fake."""

    async def connect(target: str | None = None, **options: Any) -> Client:
        return Client.from_channel(channel, target=target or "", timeout=options["timeout"])

    monkeypatch.setattr(Client, "connect", connect)
    with SyncClient.connect("10.1.2.3:4567", timeout=7) as connected:
        yield connected


def test_list_is_a_plain_iterator_over_every_page(client: SyncClient, channel: FakeChannel) -> None:
    channel.answer(
        "List",
        job_service_pb2.ListResponse(jobs=[job_message("a")], next_page_token="p2"),
        job_service_pb2.ListResponse(jobs=[job_message("b")]),
    )

    assert [job.id for job in client.list()] == ["a", "b"]
    assert [r.page_token for r in channel.requests("List")] == ["", "p2"]


def test_logs_yields_log_lines(client: SyncClient, channel: FakeChannel) -> None:
    line = job_pb2.LogLine(sequence=1, stream=job_pb2.LOG_STREAM_STDERR, attempt=1, text="oops")
    channel.answer("StreamLogs", [job_service_pb2.StreamLogsResponse(lines=[line])])

    [got] = client.logs("j1")

    assert isinstance(got, LogLine)
    assert (got.sequence, got.stream, got.text) == (1, LogStream.STDERR, "oops")


def test_result_raises_job_failed_error_for_a_failed_job(
    client: SyncClient, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [])
    failed = job_message("j1", job_pb2.JOB_STATE_FAILED, last_error="exit status 2")
    channel.answer("Get", job_service_pb2.GetResponse(job=failed))

    with pytest.raises(JobFailedError, match="job j1 failed: exit status 2"):
        client.result("j1")


def test_a_failed_call_raises_the_error_class_of_its_code(
    client: SyncClient, channel: FakeChannel
) -> None:
    channel.answer("Get", rpc_error(grpc.StatusCode.NOT_FOUND, "job j9 not found"))

    with pytest.raises(NotFoundError, match="job j9 not found"):
        client.get("j9")


def test_templates_and_schedules_block_and_convert(
    client: SyncClient, channel: FakeChannel
) -> None:
    channel.answer(
        "SubmitTemplate",
        template_pb2.SubmitTemplateResponse(job=job_message("t1"), template_version=2),
    )
    channel.answer(
        "PauseSchedule",
        schedule_pb2.PauseScheduleResponse(
            schedule=schedule_pb2.Schedule(id="nightly", paused=True)
        ),
    )

    job = client.templates.submit("report", {"day": "mon", "size": 3})
    paused = client.schedules.pause("nightly")

    [request] = channel.requests("SubmitTemplate")
    assert (request.name, dict(request.parameters)) == ("report", {"day": "mon", "size": "3"})
    assert job.id == "t1"
    assert (paused.id, paused.paused) == ("nightly", True)
