"""Conformance: log lines, artifact records, purging finished jobs."""

from __future__ import annotations

import pytest

from tests.store.support import RETRY, SECOND, T0, LeaseOne, Submit, new_job
from zbrain.errors import NotFoundError, StaleLeaseError
from zbrain_server.core.model import (
    LINE_OVERHEAD_BYTES,
    Artifact,
    AttemptOutcome,
    AttemptResult,
    JobQuery,
    LogLine,
    LogStream,
)
from zbrain_server.store import JobStore

OUT, ERR = LogStream.STDOUT, LogStream.STDERR
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def texts(lines: list[LogLine]) -> list[str]:
    return [line.text for line in lines]


# -- logs ------------------------------------------------------------------------


async def test_appended_lines_are_numbered_from_one(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    lines = await store.append_logs(
        lease.job.id, lease.lease_epoch, [(OUT, T0 + 1, "one"), (ERR, T0 + 2, "two")]
    )

    assert lines == [LogLine(1, OUT, 1, T0 + 1, "one"), LogLine(2, ERR, 1, T0 + 2, "two")]
    assert await store.read_logs(lease.job.id, 0, 100) == lines


async def test_numbering_continues_gaplessly_across_appends(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    for batch in (["a", "b", "c"], [], ["d"], ["e", "f"]):
        await store.append_logs(
            lease.job.id, lease.lease_epoch, [(OUT, T0, text) for text in batch]
        )

    lines = await store.read_logs(lease.job.id, 0, 100)

    assert [line.sequence for line in lines] == [1, 2, 3, 4, 5, 6]
    assert texts(lines) == ["a", "b", "c", "d", "e", "f"]


async def test_numbering_continues_across_attempts(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(max_retries=1)
    first = await lease_one()
    await store.append_logs(first.job.id, first.lease_epoch, [(OUT, T0, "try 1")])
    retrying = await store.finish_attempt(
        first.job.id, first.lease_epoch, AttemptResult(AttemptOutcome.FAILED), T0, RETRY
    )
    second = await lease_one(now_us=retrying.next_run_time_us)
    await store.append_logs(second.job.id, second.lease_epoch, [(OUT, T0, "try 2")])

    lines = await store.read_logs(first.job.id, 0, 100)

    assert [(line.sequence, line.attempt, line.text) for line in lines] == [
        (1, 1, "try 1"),
        (2, 2, "try 2"),
    ]


async def test_each_job_numbers_its_own_lines(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    await submit()
    first, second = await lease_one(), await lease_one()
    await store.append_logs(first.job.id, first.lease_epoch, [(OUT, T0, "x"), (OUT, T0, "y")])

    [line] = await store.append_logs(second.job.id, second.lease_epoch, [(OUT, T0, "z")])

    assert line.sequence == 1
    assert texts(await store.read_logs(first.job.id, 0, 100)) == ["x", "y"]


async def test_appending_with_a_stale_epoch_stores_nothing(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    with pytest.raises(StaleLeaseError):
        await store.append_logs(lease.job.id, lease.lease_epoch + 1, [(OUT, T0, "late")])
    assert await store.read_logs(lease.job.id, 0, 100) == []


async def test_appending_after_the_attempt_ended_is_stale(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.SUCCEEDED), T0, RETRY
    )

    with pytest.raises(StaleLeaseError):
        await store.append_logs(lease.job.id, lease.lease_epoch, [(OUT, T0, "late")])


async def test_read_logs_starts_after_the_given_sequence(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.append_logs(
        lease.job.id, lease.lease_epoch, [(OUT, T0, str(n)) for n in range(1, 6)]
    )

    assert texts(await store.read_logs(lease.job.id, 3, 100)) == ["4", "5"]
    assert await store.read_logs(lease.job.id, 5, 100) == []


async def test_read_logs_returns_at_most_limit_lines_in_order(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.append_logs(
        lease.job.id, lease.lease_epoch, [(OUT, T0, str(n)) for n in range(1, 6)]
    )

    assert texts(await store.read_logs(lease.job.id, 1, 2)) == ["2", "3"]


async def test_read_logs_holds_no_more_bytes_than_asked_but_at_least_one_line(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    lines = ["é" * 1000, "b" * 2000, "c" * 2000]  # 2,000 bytes each
    await store.append_logs(lease.job.id, lease.lease_epoch, [(OUT, T0, t) for t in lines])
    two = 2 * (2000 + LINE_OVERHEAD_BYTES)

    assert texts(await store.read_logs(lease.job.id, 0, 100, max_bytes=two)) == lines[:2]
    assert texts(await store.read_logs(lease.job.id, 0, 100, max_bytes=two - 1)) == lines[:1]
    assert texts(await store.read_logs(lease.job.id, 1, 100, max_bytes=1)) == lines[1:2]


async def test_any_text_is_stored_as_given(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    odd = ["nul \x00 inside", "ünïcødé ✓ 🚀", "", "tab\tand\rcarriage"]

    await store.append_logs(lease.job.id, lease.lease_epoch, [(OUT, T0, text) for text in odd])

    assert texts(await store.read_logs(lease.job.id, 0, 100)) == odd


# -- artifacts -------------------------------------------------------------------


async def test_an_added_artifact_appears_on_the_job(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    report, data = Artifact("report.txt", SHA_A, 10), Artifact("data.bin", SHA_B, 2048)

    await store.add_artifact(lease.job.id, lease.lease_epoch, report)
    await store.add_artifact(lease.job.id, lease.lease_epoch, data)

    job = await store.get_job(lease.job.id)
    assert sorted(job.artifacts, key=lambda a: a.name) == [data, report]


async def test_listed_jobs_carry_their_artifacts(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    plain = await submit()
    artifact = Artifact("out.txt", SHA_A, 1)
    await store.add_artifact(lease.job.id, lease.lease_epoch, artifact)

    listed = {job.id: job.artifacts for job in await store.list_jobs(JobQuery("acme"))}

    assert listed == {plain.id: (), lease.job.id: (artifact,)}


async def test_an_artifact_of_the_same_name_replaces_the_earlier(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.add_artifact(lease.job.id, lease.lease_epoch, Artifact("out.txt", SHA_A, 1))

    await store.add_artifact(lease.job.id, lease.lease_epoch, Artifact("out.txt", SHA_B, 2))

    job = await store.get_job(lease.job.id)
    assert job.artifacts == (Artifact("out.txt", SHA_B, 2),)
    assert await store.referenced_blobs() == {SHA_B}


async def test_adding_an_artifact_with_a_stale_epoch_records_nothing(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()

    with pytest.raises(StaleLeaseError):
        await store.add_artifact(lease.job.id, lease.lease_epoch + 1, Artifact("x", SHA_A, 1))
    assert (await store.get_job(lease.job.id)).artifacts == ()


async def test_artifacts_outlive_the_attempt(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    artifact = Artifact("out.txt", SHA_A, 1)
    await store.add_artifact(lease.job.id, lease.lease_epoch, artifact)

    await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.SUCCEEDED), T0, RETRY
    )

    assert (await store.get_job(lease.job.id)).artifacts == (artifact,)


async def test_the_job_a_finished_attempt_returns_carries_its_artifacts(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.add_artifact(lease.job.id, lease.lease_epoch, Artifact("out", SHA_A, 1))

    job = await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.SUCCEEDED), T0, RETRY
    )

    assert job == await store.get_job(lease.job.id)


async def test_the_job_a_cancel_returns_carries_its_artifacts(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.add_artifact(lease.job.id, lease.lease_epoch, Artifact("out", SHA_A, 1))

    job, _ = await store.cancel_job(lease.job.id, T0 + SECOND)

    assert job == await store.get_job(lease.job.id)


async def test_the_earlier_job_a_repeated_request_id_returns_carries_its_artifacts(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit(request_id="once")
    lease = await lease_one()
    await store.add_artifact(lease.job.id, lease.lease_epoch, Artifact("out", SHA_A, 1))

    [(again, deduplicated)] = await store.create_jobs([new_job(request_id="once")], T0)

    assert deduplicated
    assert again == await store.get_job(lease.job.id)


async def test_referenced_blobs_names_each_blob_once(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    assert await store.referenced_blobs() == set()
    await submit()
    await submit()
    first, second = await lease_one(), await lease_one()

    await store.add_artifact(first.job.id, first.lease_epoch, Artifact("a", SHA_A, 1))
    await store.add_artifact(first.job.id, first.lease_epoch, Artifact("b", SHA_B, 1))
    await store.add_artifact(second.job.id, second.lease_epoch, Artifact("a", SHA_A, 1))

    assert await store.referenced_blobs() == {SHA_A, SHA_B}


# -- purge_finished --------------------------------------------------------------


async def test_purge_deletes_old_finished_jobs_with_their_logs_and_artifacts(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    lease = await lease_one()
    await store.append_logs(lease.job.id, lease.lease_epoch, [(OUT, T0, "bye")])
    await store.add_artifact(lease.job.id, lease.lease_epoch, Artifact("out", SHA_A, 1))
    await store.finish_attempt(
        lease.job.id, lease.lease_epoch, AttemptResult(AttemptOutcome.SUCCEEDED), T0, RETRY
    )

    assert await store.purge_finished(T0 + 1) == 1

    with pytest.raises(NotFoundError):
        await store.get_job(lease.job.id)
    assert await store.read_logs(lease.job.id, 0, 100) == []
    assert await store.referenced_blobs() == set()


async def test_purge_deletes_every_kind_of_finished_job(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    canceled = await submit()
    await store.cancel_job(canceled.id, T0)
    for outcome in (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED):
        await submit()
        lease = await lease_one()
        await store.finish_attempt(
            lease.job.id, lease.lease_epoch, AttemptResult(outcome), T0, RETRY
        )

    assert await store.purge_finished(T0 + 1) == 3
    assert await store.list_jobs(JobQuery("acme")) == []


async def test_purge_keeps_jobs_finished_at_or_after_the_cutoff(
    store: JobStore, submit: Submit
) -> None:
    at_cutoff, later = await submit(), await submit()
    await store.cancel_job(at_cutoff.id, T0 + SECOND)
    await store.cancel_job(later.id, T0 + 2 * SECOND)

    assert await store.purge_finished(T0 + SECOND) == 0
    assert len(await store.list_jobs(JobQuery("acme"))) == 2


async def test_purge_keeps_unfinished_jobs(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    running = await lease_one()
    await store.append_logs(running.job.id, running.lease_epoch, [(OUT, T0, "still here")])
    await submit(max_retries=1)
    failed_once = await lease_one()
    await store.finish_attempt(
        failed_once.job.id, failed_once.lease_epoch, AttemptResult(AttemptOutcome.FAILED), T0, RETRY
    )
    pending = await submit()

    assert await store.purge_finished(T0 + 3600 * SECOND) == 0

    listed = {job.id for job in await store.list_jobs(JobQuery("acme"))}
    assert listed == {pending.id, running.job.id, failed_once.job.id}
    assert texts(await store.read_logs(running.job.id, 0, 10)) == ["still here"]


async def test_purge_keeps_blobs_that_kept_jobs_still_reference(
    store: JobStore, submit: Submit, lease_one: LeaseOne
) -> None:
    await submit()
    await submit()
    old, kept = await lease_one(), await lease_one()
    await store.add_artifact(old.job.id, old.lease_epoch, Artifact("shared", SHA_A, 1))
    await store.add_artifact(old.job.id, old.lease_epoch, Artifact("own", SHA_C, 1))
    await store.add_artifact(kept.job.id, kept.lease_epoch, Artifact("shared", SHA_A, 1))
    await store.finish_attempt(
        old.job.id, old.lease_epoch, AttemptResult(AttemptOutcome.SUCCEEDED), T0, RETRY
    )

    assert await store.purge_finished(T0 + 1) == 1
    assert await store.referenced_blobs() == {SHA_A}
