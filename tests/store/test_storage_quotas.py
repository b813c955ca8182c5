"""Conformance: each org's storage usage (log and artifact bytes of its stored
jobs) is a running total moved once per group commit, given back when
retention deletes jobs, and its quotas (max_log_bytes, max_artifact_bytes)
hold as docs/limits.md says."""

from __future__ import annotations

import asyncio

import pytest

from tests.store.support import LEASE_TTL, RETRY, SECOND, SHARED_BACKENDS, T0, Databases, new_job
from zbrain.errors import ResourceExhaustedError
from zbrain_server.core.limits import OrgUsage
from zbrain_server.core.model import Artifact, AttemptOutcome, AttemptResult, Lease, LogStream
from zbrain_server.store import JobStore
from zbrain_server.store.rules import ORG_LOG_QUOTA_MARK

OUT = LogStream.STDOUT
SHA = "a" * 64


async def leased(store: JobStore, count: int, org: str = "acme") -> list[Lease]:
    await store.create_jobs([new_job(org_id=org) for _ in range(count)], T0)
    leases = await store.lease_jobs("w", [org], count, T0, LEASE_TTL)
    assert len(leases) == count
    return leases


async def finish(store: JobStore, lease: Lease) -> None:
    result = AttemptResult(AttemptOutcome.SUCCEEDED, output_json="null")
    await store.finish_attempt(lease.job.id, lease.lease_epoch, result, T0, RETRY)


async def log_texts(store: JobStore, lease: Lease) -> list[str]:
    return [line.text for line in await store.read_logs(lease.job.id, 0, 100)]


async def test_concurrent_appends_and_uploads_add_up_exactly_and_purging_gives_back(
    store: JobStore,
) -> None:
    leases = await leased(store, 8)
    other = await leased(store, 1, org="beta")

    async def write(lease: Lease, n: int) -> None:
        for i in range(5):
            await store.append_logs(lease.job.id, lease.lease_epoch, [(OUT, T0, "x" * (n + i))])
        await store.add_artifact(lease.job.id, lease.lease_epoch, Artifact("a", SHA, 100 + n))

    await asyncio.gather(*(write(lease, n) for n, lease in enumerate(leases + other)))
    # the same name again replaces: only the difference counts
    await store.add_artifact(leases[0].job.id, leases[0].lease_epoch, Artifact("a", SHA, 10))

    log_bytes = sum(5 * n + 10 for n in range(8))
    artifact_bytes = sum(100 + n for n in range(1, 8)) + 10
    assert await store.orgs.usage("acme") == OrgUsage(log_bytes, artifact_bytes)
    assert await store.orgs.usage("beta") == OrgUsage(5 * 8 + 10, 108)

    for lease in leases[:3]:
        await finish(store, lease)
    assert await store.purge_finished(T0 + SECOND) == 3

    kept = leases[3:]
    assert await store.orgs.usage("acme") == OrgUsage(
        sum(5 * n + 10 for n in range(3, 8)), sum(100 + n for n in range(3, 8))
    )
    assert (await store.orgs.usage("beta")).log_bytes == 50, "another org keeps its usage"
    assert len(kept) == 5


async def test_lines_past_the_orgs_log_quota_are_dropped_with_one_line_per_job_saying_so(
    store: JobStore,
) -> None:
    first, second = await leased(store, 2)
    [outsider] = await leased(store, 1, org="beta")
    quota = {"acme": 100}

    await store.append_logs(
        first.job.id, first.lease_epoch, [(OUT, T0, "a" * 60)], org_max_bytes=quota
    )
    await store.append_logs(
        second.job.id,
        second.lease_epoch,
        [(OUT, T0, "b" * 30), (OUT, T0, "c" * 30), (OUT, T0, "d")],
        org_max_bytes=quota,
    )
    for _ in range(3):  # said once: the job's log takes nothing more
        await store.append_logs(
            second.job.id, second.lease_epoch, [(OUT, T0, "e")], org_max_bytes=quota
        )
    await store.append_logs(
        first.job.id, first.lease_epoch, [(OUT, T0, "f" * 20)], org_max_bytes=quota
    )
    await store.append_logs(
        outsider.job.id, outsider.lease_epoch, [(OUT, T0, "g" * 500)], org_max_bytes=quota
    )

    assert await log_texts(store, second) == ["b" * 30, ORG_LOG_QUOTA_MARK]
    assert await log_texts(store, first) == ["a" * 60, ORG_LOG_QUOTA_MARK]
    assert await log_texts(store, outsider) == ["g" * 500]
    assert (await store.orgs.usage("acme")).log_bytes == 90


async def test_an_upload_past_the_orgs_artifact_quota_is_refused_naming_it(
    store: JobStore,
) -> None:
    first, second = await leased(store, 2)
    await store.add_artifact(
        first.job.id, first.lease_epoch, Artifact("a", SHA, 70), org_max_bytes=100
    )

    with pytest.raises(ResourceExhaustedError, match=r"quota \(max_artifact_bytes\) of 100"):
        await store.add_artifact(
            second.job.id, second.lease_epoch, Artifact("b", SHA, 31), org_max_bytes=100
        )
    await store.add_artifact(
        second.job.id, second.lease_epoch, Artifact("b", SHA, 30), org_max_bytes=100
    )

    assert (await store.orgs.usage("acme")).artifact_bytes == 100
    assert [a.name for a in (await store.get_job(second.job.id)).artifacts] == ["b"]


@pytest.mark.parametrize("databases", SHARED_BACKENDS, indirect=True)
async def test_replicas_move_one_orgs_usage_together(databases: Databases) -> None:
    a, b = await databases.open(), await databases.open()
    leases = await leased(a, 10)

    async def append(store: JobStore, lease: Lease) -> None:
        for _ in range(10):
            await store.append_logs(lease.job.id, lease.lease_epoch, [(OUT, T0, "x" * 7)])

    await asyncio.gather(*(append((a, b)[n % 2], lease) for n, lease in enumerate(leases)))

    assert await b.orgs.usage("acme") == OrgUsage(10 * 10 * 7, 0)
