"""Remote workers end to end: real server, real `zbrain worker` processes, real jobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from tests.conftest import (
    ON_EVERY_STORE,
    Processes,
    eventually,
    field_violations,
    free_port,
    read_until,
)
from zbrain import Client, JobState
from zbrain.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from zbrain_server.app import ZBrainServer

pytestmark = ON_EVERY_STORE


def stub_for(server: ZBrainServer) -> job_service_pb2_grpc.JobServiceStub:
    return job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))


async def wait_state(client: Client, job_id: str, *states: JobState, timeout: float = 20.0):
    async def reached() -> bool:
        return (await client.get(job_id)).state in states

    await eventually(reached, timeout)
    return await client.get(job_id)


@contextlib.asynccontextmanager
async def raw_worker(
    server: ZBrainServer, **hello: Any
) -> AsyncIterator[tuple[Any, worker_service_pb2.ServerWelcome]]:
    """A worker speaking WorkerService.Connect by hand: its call and the
    server's welcome, once the hello (of these WorkerHello fields) is answered."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = worker_service_pb2_grpc.WorkerServiceStub(channel).Connect()
        await call.write(
            worker_service_pb2.ConnectRequest(hello=worker_service_pb2.WorkerHello(**hello))
        )
        first = await call.read()
        assert first.HasField("welcome")
        try:
            yield call, first.welcome
        finally:
            call.cancel()


def results(*refs: worker_service_pb2.LeaseRef) -> worker_service_pb2.ConnectRequest:
    """One WorkerResults message saying each lease's attempt succeeded."""
    succeeded = job_service_pb2.AttemptResult(outcome=job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED)
    return worker_service_pb2.ConnectRequest(
        results=worker_service_pb2.WorkerResults(
            results=[worker_service_pb2.WorkerResult(lease=ref, result=succeeded) for ref in refs]
        )
    )


async def test_job_succeeds_with_output_logs_and_artifacts(
    server, client, processes: Processes
) -> None:
    processes.worker(server.address)
    script = (
        'read line; echo "got $line"; echo oops >&2;'
        ' printf \'{"sum": 3}\' > "$ZBRAIN_OUTPUT";'
        ' mkdir -p "$ZBRAIN_ARTIFACTS_DIR/sub";'
        ' printf report > "$ZBRAIN_ARTIFACTS_DIR/sub/report.txt"'
    )
    job = await client.submit(["sh", "-c", script], input={"a": 1})

    done = await client.wait(job.id, timeout=30)

    assert done.state is JobState.SUCCEEDED, done.last_error
    assert done.output == {"sum": 3}
    lines = [(line.stream.name, line.text) async for line in client.logs(job.id)]
    assert ("STDOUT", 'got {"a": 1}') in lines
    assert ("STDERR", "oops") in lines
    [artifact] = done.artifacts
    assert artifact.name == "sub/report.txt"
    assert artifact.sha256 == hashlib.sha256(b"report").hexdigest()


async def test_artifact_download_matches_content(
    server, client, processes: Processes, tmp_path: Path
) -> None:
    processes.worker(server.address)
    payload = os.urandom(300_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    job = await client.submit(["sh", "-c", f'cp {source} "$ZBRAIN_ARTIFACTS_DIR/blob.bin"'])
    await client.wait(job.id, timeout=30)
    target = tmp_path / "downloaded.bin"
    artifact = await client.download(job.id, "blob.bin", target)
    assert target.read_bytes() == payload
    assert artifact.size_bytes == len(payload)


async def test_command_never_passes_through_a_shell(server, client, processes: Processes) -> None:
    processes.worker(server.address)
    job = await client.submit(["echo", "$HOME", "*", "a;b"])
    await client.wait(job.id, timeout=30)
    assert [line.text async for line in client.logs(job.id)] == ["$HOME * a;b"]


async def test_failing_job_retries_with_backoff_then_fails(
    server, client, processes: Processes
) -> None:
    processes.worker(server.address)
    job = await client.submit(
        ["sh", "-c", "echo attempt $ZBRAIN_ATTEMPT >&2; exit 3"], max_retries=2
    )

    done = await client.wait(job.id, timeout=30)

    assert done.state is JobState.FAILED
    assert done.attempt == 3
    assert done.last_error == "exited with status 3: attempt 3"
    attempts = sorted({line.attempt async for line in client.logs(job.id)})
    assert attempts == [1, 2, 3]


async def test_retrying_job_shows_its_next_run_time(start_server, processes: Processes) -> None:
    server = await start_server(retry_base_s=30.0, retry_cap_s=60.0)
    processes.worker(server.address)
    async with await Client.connect(server.address) as client:
        job = await client.submit(["false"], max_retries=1)
        retrying = await wait_state(client, job.id, JobState.RETRYING)
    assert retrying.next_run_time is not None
    delay = (retrying.next_run_time - retrying.update_time).total_seconds()
    assert 15.0 <= delay <= 30.0  # half to all of the base backoff


async def test_worker_stops_a_job_that_exceeds_its_timeout(
    server, client, processes: Processes
) -> None:
    processes.worker(server.address)
    job = await client.submit(["sleep", "30"], timeout=1, max_retries=0)

    done = await client.wait(job.id, timeout=20)

    assert done.state is JobState.FAILED
    assert "timed out" in done.last_error
    assert (done.finish_time - done.start_time).total_seconds() < 10


async def test_server_times_out_a_job_whose_worker_never_answers(start_server) -> None:
    server = await start_server(lease_ttl_s=60.0, timeout_grace_s=0.5)
    stub = stub_for(server)
    async with await Client.connect(server.address) as client:
        job = await client.submit(["sleep", "30"], timeout=1, max_retries=0)
        leased = await stub.AcquireLease(job_service_pb2.AcquireLeaseRequest(worker_id="mute"))
        assert [lease.job.id for lease in leased.leases] == [job.id]

        done = await client.wait(job.id, timeout=20)
    assert done.state is JobState.FAILED
    assert "timed out (enforced by the server)" in done.last_error


async def test_cancel_stops_a_running_process(
    server, client, processes: Processes, tmp_path: Path
) -> None:
    processes.worker(server.address)
    pid_file = tmp_path / "pid"
    job = await client.submit(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"], max_retries=3)
    await wait_state(client, job.id, JobState.RUNNING)
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    pid = int(pid_file.read_text())

    await client.cancel(job.id)
    done = await client.wait(job.id, timeout=15)

    assert done.state is JobState.CANCELED
    assert done.attempt == 1, "a canceled job is never retried"
    await eventually(lambda: not _alive(pid), timeout=10)


async def test_killed_worker_job_is_retried_on_another_worker_which_clears_its_folders(
    server, client, processes: Processes, tmp_path: Path
) -> None:
    temp_dir = tmp_path / "jobs"
    first = processes.worker(server.address, "--id", "first", temp_dir=temp_dir)
    job = await client.submit(
        ["sh", "-c", 'sleep 1; printf "{\\"attempt\\": $ZBRAIN_ATTEMPT}" > "$ZBRAIN_OUTPUT"'],
        max_retries=2,
    )
    running = await wait_state(client, job.id, JobState.RUNNING)
    assert running.worker_id == "first"
    [first_folder] = temp_dir.iterdir()
    # RUNNING once leased: the worker makes the job's folder a moment later.
    await eventually(lambda: any(first_folder.iterdir()), timeout=10)

    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)  # its lock is gone with it
    processes.worker(server.address, "--id", "second", temp_dir=temp_dir)
    done = await client.wait(job.id, timeout=30)

    assert done.state is JobState.SUCCEEDED
    assert done.output == {"attempt": 2}
    await eventually(lambda: not first_folder.exists(), timeout=30)
    [second_folder] = temp_dir.iterdir()  # the living worker's own, emptied
    await eventually(lambda: not any(second_folder.iterdir()), timeout=10)


async def test_worker_keeps_its_attempt_through_a_server_restart(
    store_url: str | None, processes: Processes, tmp_path: Path
) -> None:
    serve = ("--listen", f"127.0.0.1:{free_port()}", *_store_flag(store_url))
    env = {"ZBRAIN_LEASE_TTL": "30s"}
    first, address = processes.server(tmp_path / "data", *serve, env=env)
    processes.worker(address)
    script = 'sleep 3; echo finished; printf "{\\"attempt\\": $ZBRAIN_ATTEMPT}" > "$ZBRAIN_OUTPUT"'
    async with await Client.connect(address) as client:
        job = await client.submit(["sh", "-c", script], max_retries=2)
        await wait_state(client, job.id, JobState.RUNNING)

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    processes.server(tmp_path / "data", *serve, env=env)

    async with await Client.connect(address) as client:
        done = await client.wait(job.id, timeout=30)
        lines = [line.text async for line in client.logs(job.id)]
    assert done.state is JobState.SUCCEEDED, done.last_error
    assert done.attempt == 1, "the attempt carried on through the new connection"
    assert done.output == {"attempt": 1}
    assert "finished" in lines


async def test_a_hello_claiming_a_lease_it_does_not_hold_is_answered_with_a_rejection(
    server, client
) -> None:
    job = await client.submit(["true"])
    leased = await stub_for(server).AcquireLease(
        job_service_pb2.AcquireLeaseRequest(worker_id="owner")
    )
    [lease] = leased.leases
    claimed = [
        worker_service_pb2.LeaseRef(job_id=job.id, lease_epoch=lease.lease_epoch),  # not ours
        worker_service_pb2.LeaseRef(job_id=job.id, lease_epoch=lease.lease_epoch + 1),  # stale
    ]
    async with raw_worker(server, worker_id="thief", concurrency=1, leases=claimed) as (call, _):
        rejected = [(await call.read()).rejected for _ in claimed]

    assert [r.lease for r in rejected] == claimed
    assert "not this worker's" in rejected[0].reason
    assert (await client.get(job.id)).worker_id == "owner"


async def test_a_worker_taking_batches_gets_a_pass_in_one_message_and_reports_at_once(
    server, client
) -> None:
    ids = await client.submit_batch([job_pb2.JobSpec(cmd=["true"], max_retries=0)] * 3)
    hello = {"worker_id": "batcher", "concurrency": 8, "accepts_lease_batches": True}
    async with raw_worker(server, **hello) as (call, welcome):
        assert welcome.accepts_result_batches
        batch = await call.read()
        assert batch.WhichOneof("message") == "leases", "all three in the one pass's message"
        leases = list(batch.leases.leases)
        assert sorted(lease.job.id for lease in leases) == sorted(ids)
        refs = [
            worker_service_pb2.LeaseRef(job_id=lease.job.id, lease_epoch=lease.lease_epoch)
            for lease in leases
        ]
        stale = worker_service_pb2.LeaseRef(job_id=ids[0], lease_epoch=refs[0].lease_epoch + 1)
        await call.write(results(*refs, stale))
        rejected = await call.read()

    assert rejected.rejected.lease == stale
    for job_id in ids:
        assert (await wait_state(client, job_id, JobState.SUCCEEDED)).attempt == 1


async def test_a_pass_too_big_for_one_message_is_split_into_several(server, client) -> None:
    from zbrain.protocol import BATCH_BYTES

    big = '"' + "x" * (400 << 10) + '"'  # five such leases are about 2 MiB
    ids = await client.submit_batch([job_pb2.JobSpec(cmd=["true"], input_json=big)] * 5)
    batches: list[worker_service_pb2.LeaseBatch] = []
    hello = {"worker_id": "bulky", "concurrency": 5, "accepts_lease_batches": True}
    async with raw_worker(server, **hello) as (call, _):
        while sum(len(batch.leases) for batch in batches) < len(ids):
            batches.append((await call.read()).leases)

    assert sorted(lease.job.id for batch in batches for lease in batch.leases) == sorted(ids)
    assert len(batches) >= 3
    assert all(len(batch.leases) == 1 or batch.ByteSize() <= BATCH_BYTES for batch in batches)


async def test_a_malformed_report_in_a_batch_ends_the_stream_naming_it(server, client) -> None:
    [job_id] = await client.submit_batch([job_pb2.JobSpec(cmd=["true"])])
    async with raw_worker(server, worker_id="sloppy", concurrency=1) as (call, _):
        lease = (await call.read()).lease  # no batches asked for: one lease per message
        good = worker_service_pb2.LeaseRef(job_id=job_id, lease_epoch=lease.lease_epoch)
        await call.write(results(good, worker_service_pb2.LeaseRef(job_id="nope", lease_epoch=1)))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                await call.read()

    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "results.results[1].lease.job_id" in field_violations(ended.value)
    assert (await client.get(job_id)).state is JobState.RUNNING, "nothing of it was applied"


async def test_a_lease_that_never_reached_its_worker_is_returned_when_it_reconnects(
    server, client
) -> None:
    job = await client.submit(["true"], max_retries=0)
    async with raw_worker(server, worker_id="same", concurrency=1, incarnation_id="one") as (
        call,
        _,
    ):
        lost = (await call.read()).lease  # as if the stream broke with it on its way
    # The same process (same incarnation) comes back claiming no lease.
    async with raw_worker(server, worker_id="same", concurrency=1, incarnation_id="one") as (
        call,
        _,
    ):
        again = (await call.read()).lease

    assert again.job.id == job.id
    assert again.lease_epoch > lost.lease_epoch
    assert again.job.attempt == 1, "a lease returned unstarted does not count as an attempt"


async def test_a_worker_restarted_under_its_own_id_ends_its_predecessors_lease_as_lost(
    server, client
) -> None:
    job = await client.submit(["true"], max_retries=1)
    async with raw_worker(server, worker_id="same", concurrency=1, incarnation_id="old") as (
        call,
        _,
    ):
        first = (await call.read()).lease  # the old process may have started it, then died
    # A new process under the same id: what the old one held is not its to restart.
    async with raw_worker(server, worker_id="same", concurrency=1, incarnation_id="new") as (
        call,
        _,
    ):
        second = (await call.read()).lease

    assert second.job.id == job.id
    assert second.job.attempt == first.job.attempt + 1, "the lost attempt counts"
    [ended, _running] = second.job.attempts
    assert ended.cause == job_pb2.TRANSITION_CAUSE_WORKER_RESTARTED
    assert ended.lease_epoch == first.lease_epoch


async def test_partitioned_worker_loses_its_lease_and_its_late_report_is_rejected(
    server, client, processes: Processes, tmp_path: Path
) -> None:
    stalled_log = tmp_path / "stalled.log"
    stalled = processes.worker(server.address, "--id", "stalled", log=stalled_log)
    script = 'sleep 1; printf "{\\"attempt\\": $ZBRAIN_ATTEMPT}" > "$ZBRAIN_OUTPUT"'
    job = await client.submit(["sh", "-c", script], max_retries=2)
    await wait_state(client, job.id, JobState.RUNNING)

    stalled.send_signal(signal.SIGSTOP)  # no heartbeats, connection stays open: a partition
    try:
        retrying = await wait_state(client, job.id, JobState.RETRYING, JobState.PENDING, timeout=20)
        assert "lease expired" in retrying.last_error
        processes.worker(server.address, "--id", "healthy")
        done = await client.wait(job.id, timeout=30)
    finally:
        stalled.send_signal(signal.SIGCONT)
    # The stalled worker wakes up still holding attempt 1 and reports on it;
    # the server refuses that lease, and the worker says so.
    refused = re.compile(rf"the server refused lease \d+ of job {job.id}: ")
    await eventually(lambda: bool(refused.search(stalled_log.read_text())), timeout=20)

    final = await client.get(job.id)
    assert final.state is JobState.SUCCEEDED
    assert final.output == {"attempt": 2} == done.output


async def test_workers_are_listed_a_page_at_a_time_by_id(server) -> None:
    async with contextlib.AsyncExitStack() as connected:
        for worker_id in ("w-c", "w-a", "w-b"):
            await connected.enter_async_context(
                raw_worker(server, worker_id=worker_id, concurrency=1)
            )
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            first = await stub.ListWorkers(job_service_pb2.ListWorkersRequest(page_size=2))
            rest = await stub.ListWorkers(
                job_service_pb2.ListWorkersRequest(page_size=2, page_token=first.next_page_token)
            )
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.ListWorkers(job_service_pb2.ListWorkersRequest(page_token="not*a*token"))

    assert [w.id for w in first.workers] == ["w-a", "w-b"]
    assert [w.id for w in rest.workers] == ["w-c"]
    assert rest.next_page_token == ""
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(error.value)


async def test_stale_lease_reports_are_failed_precondition(server, client) -> None:
    stub = stub_for(server)
    job = await client.submit(["true"], max_retries=1)
    first = (await stub.AcquireLease(job_service_pb2.AcquireLeaseRequest(worker_id="w1"))).leases[0]
    failed = job_service_pb2.AttemptResult(
        outcome=job_service_pb2.ATTEMPT_OUTCOME_FAILED, error="boom"
    )
    await stub.CompleteLease(
        job_service_pb2.CompleteLeaseRequest(
            job_id=job.id, lease_epoch=first.lease_epoch, result=failed
        )
    )
    await wait_state(client, job.id, JobState.PENDING, JobState.RETRYING)
    second = (
        await stub.AcquireLease(
            job_service_pb2.AcquireLeaseRequest(worker_id="w2", wait_timeout=Duration(seconds=5))
        )
    ).leases[0]
    assert second.lease_epoch > first.lease_epoch

    succeeded = job_service_pb2.AttemptResult(outcome=job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED)
    for call in (
        stub.CompleteLease(
            job_service_pb2.CompleteLeaseRequest(
                job_id=job.id, lease_epoch=first.lease_epoch, result=succeeded
            )
        ),
        stub.RenewLease(
            job_service_pb2.RenewLeaseRequest(job_id=job.id, lease_epoch=first.lease_epoch)
        ),
        stub.ReportLogs(
            job_service_pb2.ReportLogsRequest(
                job_id=job.id,
                lease_epoch=first.lease_epoch,
                lines=[job_pb2.LogLine(stream=job_pb2.LOG_STREAM_STDOUT, text="late")],
            )
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (await client.get(job.id)).state is JobState.RUNNING


async def test_acquire_lease_long_polls_until_a_job_arrives(server, client) -> None:
    stub = stub_for(server)
    request = job_service_pb2.AcquireLeaseRequest(
        worker_id="poller", wait_timeout=Duration(seconds=10)
    )
    waiting = asyncio.ensure_future(stub.AcquireLease(request))
    # A short look at something that must NOT happen: with no job, the call
    # does not return (a broken long poll answers at once, empty).
    await asyncio.sleep(0.3)
    assert not waiting.done()

    job = await client.submit(["true"])
    response = await asyncio.wait_for(waiting, 5)

    assert [lease.job.id for lease in response.leases] == [job.id]


async def test_acquire_lease_returns_nothing_when_the_wait_ends(server) -> None:
    stub = stub_for(server)
    request = job_service_pb2.AcquireLeaseRequest(
        worker_id="poller", wait_timeout=Duration(nanos=200_000_000)
    )
    assert list((await stub.AcquireLease(request)).leases) == []


async def test_log_stream_follows_live_and_resumes_without_gaps(
    server, client, processes: Processes
) -> None:
    processes.worker(server.address)
    job = await client.submit(
        ["sh", "-c", "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.3; done"]
    )

    first_two = []
    async for line in client.logs(job.id, follow=True):
        first_two.append(line)
        if len(first_two) == 2:
            break
    assert (await client.get(job.id)).state is JobState.RUNNING, (
        "lines must arrive while the job runs"
    )

    rest = [line async for line in client.logs(job.id, follow=True, after=first_two[-1].sequence)]

    texts = [line.text for line in first_two + rest]
    assert texts == [f"line {i}" for i in range(1, 7)]
    assert [line.sequence for line in first_two + rest] == list(range(1, 7))
    assert (await client.get(job.id)).state is JobState.SUCCEEDED


async def test_long_lines_and_huge_output_are_truncated_visibly(
    server, client, processes: Processes
) -> None:
    processes.worker(server.address)
    job = await client.submit(["python3", "-c", "print('x' * 100000); print('after')"])
    await client.wait(job.id, timeout=30)
    lines = [line.text async for line in client.logs(job.id)]
    assert lines[0].endswith("[line truncated]")
    assert len(lines[0].encode()) < 20_000
    assert lines[1] == "after"


@pytest.mark.parametrize(
    ("name", "sha256", "size", "content", "message"),
    [
        ("ok.txt", "0" * 64, 5, b"hello", "does not match its checksum"),
        (
            "../escape.txt",
            hashlib.sha256(b"hello").hexdigest(),
            5,
            b"hello",
            "must not contain '..'",
        ),
        (
            "/etc/passwd",
            hashlib.sha256(b"hello").hexdigest(),
            5,
            b"hello",
            "must be a relative path",
        ),
        ("ok.txt", hashlib.sha256(b"hello").hexdigest(), 4, b"hello", "longer than its announced"),
    ],
)
async def test_bad_artifact_uploads_are_rejected(
    server, client, name: str, sha256: str, size: int, content: bytes, message: str
) -> None:
    stub = stub_for(server)
    job = await client.submit(["true"])
    lease = (await stub.AcquireLease(job_service_pb2.AcquireLeaseRequest(worker_id="w"))).leases[0]

    async def parts():
        yield job_service_pb2.UploadArtifactRequest(
            header=job_service_pb2.ArtifactHeader(
                job_id=job.id,
                lease_epoch=lease.lease_epoch,
                artifact=job_pb2.Artifact(name=name, sha256=sha256, size_bytes=size),
            )
        )
        yield job_service_pb2.UploadArtifactRequest(chunk=content)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UploadArtifact(parts())
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
    assert (await client.artifacts(job.id)) == []
    assert not any(server.config.artifact_root.rglob("escape.txt"))


async def test_two_hundred_jobs_across_four_workers_run_exactly_once(
    server, client, processes: Processes, tmp_path: Path
) -> None:
    ledger = tmp_path / "ran.txt"
    for n in range(4):
        processes.worker(server.address, "--id", f"w{n}", "--concurrency", "4")
    # All of them, before the jobs: on a busy machine the first worker up
    # would otherwise run all 200 before the others have started.
    await eventually(lambda: _workers_connected(server, 4), timeout=60)
    jobs = [
        await client.submit(["sh", "-c", f'echo "$ZBRAIN_JOB_ID" >> {ledger}'], max_retries=0)
        for _ in range(200)
    ]
    finished = [await client.wait(job.id, timeout=60) for job in jobs]

    assert all(job.state is JobState.SUCCEEDED for job in finished)
    assert all(job.attempt == 1 for job in finished)
    ran = ledger.read_text().split()
    assert sorted(ran) == sorted(job.id for job in jobs)
    assert len({job.worker_id for job in finished}) > 1


async def test_worker_drains_on_sigterm(server, client, processes: Processes) -> None:
    worker = processes.worker(server.address)
    job = await client.submit(["sh", "-c", "sleep 1; echo done"])
    await wait_state(client, job.id, JobState.RUNNING)

    worker.send_signal(signal.SIGTERM)
    # The worker logs "draining" once the server acknowledged its drain: from
    # then on no lease can be on its way to it.
    await asyncio.to_thread(read_until, worker, "draining:")
    later = await client.submit(["true"])

    done = await client.wait(job.id, timeout=20)
    assert done.state is JobState.SUCCEEDED
    assert await asyncio.to_thread(worker.wait, 20) == 0
    assert (await client.get(later.id)).state is JobState.PENDING, (
        "a draining worker takes no new job"
    )


async def test_worker_reconnects_after_server_restart(
    store_url: str | None, processes: Processes, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    serve = ("--listen", address, *_store_flag(store_url))
    data = tmp_path / "data"
    server, _ = processes.server(data, *serve)
    processes.worker(address)
    server.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait, 30) == 0

    processes.server(data, *serve)
    async with await Client.connect(address) as client:
        job = await client.submit(["echo", "back"])
        done = await client.wait(job.id, timeout=30)
    assert done.state is JobState.SUCCEEDED


async def _workers_connected(server: ZBrainServer, count: int) -> bool:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        listed = await stub.ListWorkers(job_service_pb2.ListWorkersRequest())
    return len(listed.workers) >= count


def _store_flag(store_url: str | None) -> tuple[str, ...]:
    return ("--store", store_url) if store_url else ()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
