"""`Client` over a fake channel: what each method sends, and what it makes of
the answers and failures the test scripts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from tests.unit.fakes import STAY_OPEN, FakeChannel, job_message, rpc_error, until
from zbrain import Client
from zbrain.cli import main
from zbrain.errors import (
    FieldViolation,
    InvalidArgumentError,
    JobFailedError,
    NotFoundError,
    UnavailableError,
)
from zbrain.models import JobState, LogLine, LogStream, Resources
from zbrain.v1 import event_pb2, job_pb2, job_service_pb2

TARGET = "10.1.2.3:4567"


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
async def client(channel: FakeChannel) -> AsyncIterator[Client]:
    async with Client.from_channel(channel, target=TARGET, timeout=7) as wrapped:
        yield wrapped


def page(*job_ids: str, next_page_token: str = "") -> job_service_pb2.ListResponse:
    return job_service_pb2.ListResponse(
        jobs=[job_message(job_id) for job_id in job_ids], next_page_token=next_page_token
    )


def log_lines(*texts: str, first: int = 1) -> job_service_pb2.StreamLogsResponse:
    lines = []
    for sequence, text in enumerate(texts, start=first):
        line = job_pb2.LogLine(
            sequence=sequence, stream=job_pb2.LOG_STREAM_STDOUT, attempt=1, text=text
        )
        line.time.FromSeconds(1_700_000_000 + sequence)
        lines.append(line)
    return job_service_pb2.StreamLogsResponse(lines=lines)


def got(job: job_pb2.Job) -> job_service_pb2.GetResponse:
    return job_service_pb2.GetResponse(job=job)


# -- from_channel ------------------------------------------------------------------


async def test_a_client_from_a_channel_calls_on_that_channel(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("Get", got(job_message("j1")))

    job = await client.get("j1")

    assert job.id == "j1"
    assert channel.requests("Get") == [job_service_pb2.GetRequest(job_id="j1")]


async def test_a_client_from_a_channel_reports_the_target_it_was_given(client: Client) -> None:
    assert client.target == TARGET


def test_a_client_from_a_channel_refuses_a_target_that_is_no_address() -> None:
    with pytest.raises(InvalidArgumentError, match="not a server address"):
        Client.from_channel(FakeChannel(), target="no such host")


async def test_closing_a_client_from_a_channel_closes_the_channel(channel: FakeChannel) -> None:
    client = Client.from_channel(channel)

    await client.close()

    assert channel.closed


# -- submit ------------------------------------------------------------------------


async def test_submit_refuses_a_shell_string(client: Client, channel: FakeChannel) -> None:
    with pytest.raises(TypeError, match="argv list"):
        await client.submit("echo hi")

    assert channel.requests("Submit") == []


async def test_submit_sends_the_spec_and_request_id(client: Client, channel: FakeChannel) -> None:
    channel.answer("Submit", job_service_pb2.SubmitResponse(job=job_message("j1")))

    await client.submit(
        ["echo", "hi"], input={"n": 1}, timeout=timedelta(minutes=2), request_id="r-1"
    )

    [sent] = channel.requests("Submit")
    assert list(sent.job.cmd) == ["echo", "hi"]
    assert json.loads(sent.job.input_json) == {"n": 1}
    assert sent.job.timeout.ToTimedelta() == timedelta(minutes=2)
    assert sent.request_id == "r-1"


async def test_a_number_its_field_cannot_hold_is_refused_naming_the_field(
    client: Client, channel: FakeChannel
) -> None:
    """Protobuf's own ValueError names no field; the client's error does."""
    with pytest.raises(InvalidArgumentError) as raised:
        await client.submit(["true"], priority=2**40)
    assert raised.value.violations == (
        FieldViolation("priority", f"must be between -2147483648 and 2147483647, not {2**40}"),
    )
    with pytest.raises(InvalidArgumentError) as raised:
        await client.submit(["true"], resources=Resources(memory_bytes=2**64, open_files=-(2**32)))
    assert [v.field for v in raised.value.violations] == [
        "resources.memory_bytes",
        "resources.open_files",
    ]

    assert channel.requests("Submit") == []


def test_the_command_line_names_the_flag_of_a_number_out_of_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["submit", "--server", "127.0.0.1:1", "--priority", str(2**40), "--", "true"])
    assert status == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("zbrain submit: error: ") and "priority: must be between" in line


# -- list --------------------------------------------------------------------------


async def test_list_follows_next_page_token_across_pages(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("List", page("a", "b", next_page_token="p2"), page("c"))

    jobs = [job.id async for job in client.list(page_size=2)]

    assert jobs == ["a", "b", "c"]
    assert [(r.page_token, r.page_size) for r in channel.requests("List")] == [("", 2), ("p2", 2)]


async def test_list_stops_at_limit_without_asking_for_more_pages(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer(
        "List", page("a", "b", next_page_token="p2"), page("c", "d", next_page_token="p3")
    )

    jobs = [job.id async for job in client.list(limit=3, page_size=2)]

    assert jobs == ["a", "b", "c"]
    assert [r.page_token for r in channel.requests("List")] == ["", "p2"]


async def test_list_asks_for_no_more_than_its_limit_per_page(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("List", page("a"))

    [job async for job in client.list(limit=1)]

    assert [r.page_size for r in channel.requests("List")] == [1]


async def test_list_sends_its_filters(client: Client, channel: FakeChannel) -> None:
    channel.answer("List", page())

    [job async for job in client.list(org="lab", states=[JobState.FAILED], oldest_first=True)]

    [sent] = channel.requests("List")
    assert sent.org_id == "lab"
    assert list(sent.states) == [job_pb2.JOB_STATE_FAILED]
    assert sent.order == job_service_pb2.LIST_ORDER_OLDEST_FIRST


# -- wait and result ---------------------------------------------------------------


async def test_wait_follows_the_log_stream_until_it_ends_then_returns_the_job(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [])
    channel.answer("Get", got(job_message("j1", job_pb2.JOB_STATE_SUCCEEDED)))

    job = await client.wait("j1")

    assert job.state is JobState.SUCCEEDED
    [followed] = channel.requests("StreamLogs")
    assert (followed.job_id, followed.follow) == ("j1", True)


async def test_wait_follows_again_when_the_stream_ends_before_the_job(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [], [])
    channel.answer(
        "Get",
        got(job_message("j1", job_pb2.JOB_STATE_RUNNING)),
        got(job_message("j1", job_pb2.JOB_STATE_FAILED)),
    )

    job = await client.wait("j1")

    assert job.state is JobState.FAILED
    assert len(channel.requests("StreamLogs")) == 2


async def test_wait_gives_up_after_its_timeout_and_ends_the_stream(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [STAY_OPEN])

    with pytest.raises(TimeoutError):
        await client.wait("j1", timeout=0.05)

    [stream] = channel.server_streams
    assert stream.cancelled


async def test_result_is_the_output_of_a_succeeded_job(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [])
    channel.answer(
        "Get", got(job_message("j1", job_pb2.JOB_STATE_SUCCEEDED, output_json='{"sum": 3}'))
    )

    assert await client.result("j1") == {"sum": 3}


async def test_result_raises_job_failed_error_for_a_failed_job(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [])
    channel.answer(
        "Get", got(job_message("j1", job_pb2.JOB_STATE_FAILED, last_error="exit status 2"))
    )

    with pytest.raises(JobFailedError, match="job j1 failed: exit status 2"):
        await client.result("j1")


# -- logs and events ---------------------------------------------------------------


async def test_logs_yields_the_lines_of_every_message(client: Client, channel: FakeChannel) -> None:
    channel.answer("StreamLogs", [log_lines("one", "two"), log_lines("three", first=3)])

    lines = [line async for line in client.logs("j1")]

    assert all(isinstance(line, LogLine) for line in lines)
    assert [(line.sequence, line.text) for line in lines] == [(1, "one"), (2, "two"), (3, "three")]
    assert lines[0].stream is LogStream.STDOUT
    assert lines[0].time is not None
    assert lines[0].time.timestamp() == 1_700_000_001


async def test_logs_sends_follow_and_the_sequence_to_start_after(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [])

    [line async for line in client.logs("j1", follow=True, after=7)]

    assert channel.requests("StreamLogs") == [
        job_service_pb2.StreamLogsRequest(job_id="j1", follow=True, after_sequence=7)
    ]


async def test_leaving_a_log_iteration_early_cancels_its_call(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamLogs", [log_lines("one"), STAY_OPEN])

    async for _ in client.logs("j1", follow=True):
        break

    # The call is cancelled when the iteration is finalized, a loop turn or two later.
    [stream] = channel.server_streams
    await until(lambda: stream.cancelled, "the log stream is cancelled")


async def test_events_sends_after_sequence_and_its_filters(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("StreamEvents", [])

    [event async for event in client.events(org="lab", topic_prefix="jobs.", after=41)]

    assert channel.requests("StreamEvents") == [
        job_service_pb2.StreamEventsRequest(org_id="lab", topic_prefix="jobs.", after_sequence=41)
    ]


async def test_events_yields_each_event_with_its_payload(
    client: Client, channel: FakeChannel
) -> None:
    submitted = event_pb2.Event(
        sequence=42,
        topic="jobs.lab",
        org_id="lab",
        job_id="j1",
        job_submitted=event_pb2.JobSubmitted(cmd=["echo"], priority=3),
    )
    channel.answer("StreamEvents", [job_service_pb2.StreamEventsResponse(events=[submitted])])

    [event] = [event async for event in client.events(after=41)]

    assert (event.sequence, event.job_id, event.type) == (42, "j1", "job_submitted")
    assert event.data == {"cmd": ["echo"], "priority": 3}


# -- failures ----------------------------------------------------------------------


async def test_a_not_found_call_raises_not_found_error(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("Get", rpc_error(grpc.StatusCode.NOT_FOUND, "job j9 not found"))

    with pytest.raises(NotFoundError, match="job j9 not found"):
        await client.get("j9")


async def test_an_invalid_argument_keeps_its_field_violations(
    client: Client, channel: FakeChannel
) -> None:
    violation = FieldViolation("job.env['1X']", "name must match [A-Za-z_][A-Za-z0-9_]*")
    channel.answer(
        "Submit", rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "invalid job", [violation])
    )

    with pytest.raises(InvalidArgumentError) as raised:
        await client.submit(["true"], env={"1X": "y"})

    assert raised.value.violations == (violation,)


async def test_an_unreachable_server_is_unavailable_error_naming_the_target(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer("Get", rpc_error(grpc.StatusCode.UNAVAILABLE, "Connection refused"))

    with pytest.raises(UnavailableError) as raised:
        await client.get("j1")

    assert TARGET in raised.value.message
    assert "Connection refused" in raised.value.message


@pytest.mark.parametrize(
    ("details", "said"),
    [
        # A plaintext connection attempt that timed out.
        (
            "failed to connect to all addresses; last error: tcp handshaker shutdown",
            "cannot reach",
        ),
        # What grpc.aio reports when the server is killed while a stream is open.
        ("Stream removed (Socket closed)", f"lost the ZBrain server at {TARGET} during the call"),
    ],
)
async def test_a_server_unavailable_for_other_reasons_is_not_blamed_on_tls(
    client: Client, channel: FakeChannel, details: str, said: str
) -> None:
    channel.answer("Get", rpc_error(grpc.StatusCode.UNAVAILABLE, details))

    with pytest.raises(UnavailableError) as raised:
        await client.get("j1")

    assert "TLS" not in raised.value.message
    assert said in raised.value.message


async def test_a_stream_that_fails_midway_raises_after_the_lines_it_delivered(
    client: Client, channel: FakeChannel
) -> None:
    channel.answer(
        "StreamLogs", [log_lines("one"), rpc_error(grpc.StatusCode.NOT_FOUND, "job j1 deleted")]
    )
    seen: list[str] = []

    with pytest.raises(NotFoundError, match="job j1 deleted"):
        async for line in client.logs("j1", follow=True):
            seen.append(line.text)

    assert seen == ["one"]


async def test_unary_calls_carry_the_client_timeout(client: Client, channel: FakeChannel) -> None:
    channel.answer("Get", got(job_message("j1")))

    await client.get("j1")

    assert channel.timeouts("Get") == [7]


async def test_an_org_limit_its_field_cannot_hold_is_refused_naming_the_field(
    client: Client,
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.orgs.update("team-a", max_running_jobs=2**40)
    [violation] = raised.value.violations
    assert violation.field == "max_running_jobs"
    assert "1099511627776" in violation.description
