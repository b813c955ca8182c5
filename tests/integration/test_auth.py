"""Tenancy: tokens and roles, organisation isolation on every RPC, secure defaults, limits."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import eventually
from zbrain import Client, JobState
from zbrain.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from zbrain.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from zbrain_server.core.model import Role
from zbrain_server.dispatch.tokens import create_token


class Tenants:
    """A server with auth on and tokens for two teams and an admin."""

    def __init__(self, server) -> None:
        self.server = server
        self.tokens: dict[str, str] = {}
        self.channels: list[grpc.aio.Channel] = []  # kept open for the stubs

    async def add(self, name: str, org: str, role: Role) -> str:
        _, bearer = await create_token(self.server.store, org, role, name)
        self.tokens[name] = bearer
        return bearer

    async def client(self, name: str | None) -> Client:
        return await Client.connect(
            self.server.address, token=self.tokens.get(name or ""), timeout=10
        )

    def stub(self, name: str) -> job_service_pb2_grpc.JobServiceStub:
        from zbrain.connection import Connection

        channel = Connection(self.server.address, self.tokens[name]).open_channel()
        self.channels.append(channel)
        return job_service_pb2_grpc.JobServiceStub(channel)


@pytest.fixture
async def tenants(start_server) -> Tenants:
    server = await start_server(auth="required")
    teams = Tenants(server)
    await teams.add("admin", "ops", Role.ADMIN)
    await teams.add("a", "team-a", Role.CLIENT)
    await teams.add("b", "team-b", Role.CLIENT)
    await teams.add("worker-a", "team-a", Role.WORKER)
    await teams.add("worker-b", "team-b", Role.WORKER)
    return teams


async def test_a_call_without_a_token_is_unauthenticated(tenants: Tenants) -> None:
    async with await tenants.client(None) as anonymous:
        with pytest.raises(UnauthenticatedError, match="requires a token"):
            await anonymous.submit(["true"])


async def test_a_forged_token_is_unauthenticated(tenants: Tenants) -> None:
    token_id = tenants.tokens["a"].split("_")[1]
    async with await Client.connect(
        tenants.server.address, token=f"zbt_{token_id}_guess"
    ) as forged:
        with pytest.raises(UnauthenticatedError, match="unknown token"):
            _ = [job async for job in forged.list()]


async def test_a_revoked_token_is_refused_at_once(tenants: Tenants) -> None:
    async with await tenants.client("a") as team_a:
        await team_a.submit(["true"])
        token_id = tenants.tokens["a"].split("_")[1]
        await tenants.server.store.revoke_token(token_id, 0)
        with pytest.raises(UnauthenticatedError, match="revoked"):
            await team_a.submit(["true"])


async def test_each_org_sees_only_its_own_jobs(tenants: Tenants) -> None:
    async with await tenants.client("a") as team_a, await tenants.client("b") as team_b:
        job = await team_a.submit(["echo", "secret"])

        for probe in (team_b.get(job.id), team_b.cancel(job.id), team_b.artifacts(job.id)):
            with pytest.raises(NotFoundError) as error:
                await probe
            assert str(error.value) == f"job {job.id} not found", "same answer as a missing job"
        with pytest.raises(NotFoundError):
            _ = [line async for line in team_b.logs(job.id)]
        assert [j async for j in team_b.list()] == []
        assert [e async for e in team_b.events()] == []
        assert (await team_a.get(job.id)).state is JobState.PENDING, "b's cancel changed nothing"


async def test_naming_another_org_is_permission_denied(tenants: Tenants) -> None:
    async with await tenants.client("b") as team_b:
        for attempt in (
            team_b.submit(["true"], org="team-a"),
            _drain(team_b.list(org="team-a")),
            _drain(team_b.events(org="team-a")),
        ):
            with pytest.raises(PermissionDeniedError, match="team-b"):
                await attempt


async def _drain(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


async def test_an_admin_may_act_on_any_org(tenants: Tenants) -> None:
    async with await tenants.client("a") as team_a, await tenants.client("admin") as admin:
        job = await team_a.submit(["true"])
        assert (await admin.get(job.id)).org_id == "team-a"
        assert [j.id async for j in admin.list(org="team-a")] == [job.id]


async def test_only_an_admin_lists_every_org_at_once(tenants: Tenants) -> None:
    async with await tenants.client("a") as team_a, await tenants.client("admin") as admin:
        first = await team_a.submit(["true"])
        second = await admin.submit(["true"], org="team-b")
        assert [j.id async for j in admin.list(all_orgs=True)] == [second.id, first.id]
        with pytest.raises(PermissionDeniedError, match="needs an admin token"):
            await _drain(team_a.list(all_orgs=True))


async def test_roles_limit_what_a_token_may_call(tenants: Tenants) -> None:
    async with await tenants.client("worker-a") as worker:
        with pytest.raises(PermissionDeniedError, match="worker token cannot call Submit"):
            await worker.submit(["true"])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await tenants.stub("a").AcquireLease(job_service_pb2.AcquireLeaseRequest(worker_id="w"))
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_worker_leases_only_its_orgs_jobs(tenants: Tenants) -> None:
    async with await tenants.client("admin") as admin:
        theirs = await admin.submit(["true"], org="team-b")
        ours = await admin.submit(["true"], org="team-a")
    stub = tenants.stub("worker-a")
    leased = await stub.AcquireLease(
        job_service_pb2.AcquireLeaseRequest(worker_id="w", max_jobs=10)
    )
    assert [lease.job.id for lease in leased.leases] == [ours.id]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.AcquireLease(
            job_service_pb2.AcquireLeaseRequest(worker_id="w", org_ids=["team-b"])
        )
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert theirs.state is JobState.PENDING


async def test_a_worker_cannot_report_on_another_orgs_lease(tenants: Tenants) -> None:
    async with await tenants.client("b") as team_b:
        job = await team_b.submit(["true"])
    lease = (
        await tenants.stub("worker-b").AcquireLease(
            job_service_pb2.AcquireLeaseRequest(worker_id="wb")
        )
    ).leases[0]
    done = job_service_pb2.AttemptResult(outcome=job_service_pb2.ATTEMPT_OUTCOME_SUCCEEDED)
    other = tenants.stub("worker-a")
    epoch = lease.lease_epoch
    for report in (
        other.CompleteLease(
            job_service_pb2.CompleteLeaseRequest(job_id=job.id, lease_epoch=epoch, result=done)
        ),
        other.RenewLease(job_service_pb2.RenewLeaseRequest(job_id=job.id, lease_epoch=epoch)),
        other.ReportLogs(job_service_pb2.ReportLogsRequest(job_id=job.id, lease_epoch=epoch)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await report
        assert error.value.code() is grpc.StatusCode.NOT_FOUND


async def test_tokens_are_stored_hashed(tenants: Tenants) -> None:
    folder = tenants.server.config.data_dir
    database = b"".join(path.read_bytes() for path in folder.glob("zbrain.db*"))
    secret = tenants.tokens["a"].split("_", 2)[2]
    assert secret.encode() not in database
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in database


async def test_tokens_are_managed_over_the_api_by_admins_only(tenants: Tenants) -> None:
    from zbrain.connection import Connection
    from zbrain.v1 import token_service_pb2 as tpb
    from zbrain.v1 import token_service_pb2_grpc

    admin = token_service_pb2_grpc.TokenServiceStub(
        Connection(tenants.server.address, tenants.tokens["admin"]).open_channel()
    )
    created = await admin.CreateToken(
        tpb.CreateTokenRequest(org_id="team-c", role=tpb.TOKEN_ROLE_CLIENT, description="ci")
    )
    async with await Client.connect(tenants.server.address, token=created.secret) as team_c:
        assert (await team_c.submit(["true"])).org_id == "team-c"
    listed = await admin.ListTokens(tpb.ListTokensRequest(org_id="team-c"))
    assert [t.description for t in listed.tokens] == ["ci"]
    await admin.RevokeToken(tpb.RevokeTokenRequest(token_id=created.token.id))
    async with await Client.connect(tenants.server.address, token=created.secret) as team_c:
        with pytest.raises(UnauthenticatedError):
            await team_c.submit(["true"])
    not_admin = token_service_pb2_grpc.TokenServiceStub(
        Connection(tenants.server.address, tenants.tokens["a"]).open_channel()
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await not_admin.ListTokens(tpb.ListTokensRequest())
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_auth_turns_on_by_itself_once_a_token_exists(start_server, tmp_path: Path) -> None:
    first = await start_server(data_dir=tmp_path / "shared")
    assert not first.auth_required
    await create_token(first.store, "ops", Role.ADMIN, "")
    await first.stop(grace_s=0.1)
    second = await start_server(data_dir=tmp_path / "shared")
    assert second.auth_required


def test_an_open_server_refuses_a_network_address(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zbrain",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "refusing to listen on 0.0.0.0:0 without auth" in out.stderr


async def test_loader_variables_are_rejected(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match="dynamic loader"):
        await client.submit(["true"], env={"LD_PRELOAD": "/tmp/evil.so"})


async def test_the_pending_quota_is_enforced_at_its_edge(start_server) -> None:
    from zbrain_server.config import Limits

    server = await start_server(limits=Limits(max_pending_per_org=3))
    async with await Client.connect(server.address) as client:
        for _ in range(3):
            await client.submit(["true"], org="busy")
        with pytest.raises(ResourceExhaustedError, match="max_pending_per_org"):
            await client.submit(["true"], org="busy")
        await client.submit(["true"], org="calm")


async def test_log_bytes_per_job_are_capped_with_a_marker(start_server) -> None:
    from zbrain_server.config import Limits

    server = await start_server(limits=Limits(max_log_bytes_per_job=10))
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    async with await Client.connect(server.address) as client:
        job = await client.submit(["true"])
        lease = (
            await stub.AcquireLease(job_service_pb2.AcquireLeaseRequest(worker_id="w"))
        ).leases[0]

        def report(*texts: str) -> job_service_pb2.ReportLogsRequest:
            return job_service_pb2.ReportLogsRequest(
                job_id=job.id,
                lease_epoch=lease.lease_epoch,
                lines=[job_pb2.LogLine(stream=job_pb2.LOG_STREAM_STDOUT, text=t) for t in texts],
            )

        await stub.ReportLogs(report("x" * 6, "y" * 4))  # exactly at the limit
        await stub.ReportLogs(report("z"))  # past it: dropped, one marker
        await stub.ReportLogs(report("w"))  # nothing more, not even a second marker

        texts = [line.text async for line in client.logs(job.id)]
    assert texts == [
        "x" * 6,
        "y" * 4,
        "[log limit reached: further output of this job is not stored]",
    ]


async def test_streams_per_client_are_capped(start_server) -> None:
    from zbrain_server.config import Limits

    server = await start_server(limits=Limits(max_streams_per_client=2))
    async with await Client.connect(server.address) as client:
        await client.submit(["true"])  # an event for each stream to receive
        opened = [asyncio.Event() for _ in range(2)]

        async def follow(received: asyncio.Event) -> None:
            async for _ in client.events(follow=True):
                received.set()  # its stream is open: it holds a slot

        followers = [asyncio.ensure_future(follow(received)) for received in opened]
        for received in opened:
            await asyncio.wait_for(received.wait(), 10)
        with pytest.raises(ResourceExhaustedError, match="max_streams_per_client"):
            await _drain(client.events())  # not following: without a cap it would just end
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)

        async def accepted() -> bool:
            """Whether a new stream is let in: the server counted the slots back."""
            try:
                await _drain(client.events())
            except ResourceExhaustedError:
                return False
            return True

        await eventually(accepted)


async def test_the_artifact_count_per_job_is_capped(start_server) -> None:
    from zbrain_server.config import Limits

    server = await start_server(limits=Limits(max_artifacts_per_job=1))
    stub = job_service_pb2_grpc.JobServiceStub(grpc.aio.insecure_channel(server.address))
    async with await Client.connect(server.address) as client:
        job = await client.submit(["true"])
    lease = (await stub.AcquireLease(job_service_pb2.AcquireLeaseRequest(worker_id="w"))).leases[0]

    async def upload(name: str) -> None:
        async def parts():
            yield job_service_pb2.UploadArtifactRequest(
                header=job_service_pb2.ArtifactHeader(
                    job_id=job.id,
                    lease_epoch=lease.lease_epoch,
                    artifact=job_pb2.Artifact(
                        name=name, sha256=hashlib.sha256(b"x").hexdigest(), size_bytes=1
                    ),
                )
            )
            yield job_service_pb2.UploadArtifactRequest(chunk=b"x")

        await stub.UploadArtifact(parts())

    await upload("one.txt")
    await upload("one.txt")  # replacing an artifact is not adding one
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await upload("two.txt")
    assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_artifacts_per_job" in error.value.details()


async def test_auth_turns_on_while_running_when_a_token_appears(start_server) -> None:
    server = await start_server()
    async with await Client.connect(server.address) as anonymous:
        await anonymous.submit(["true"])
        await create_token(server.store, "ops", Role.ADMIN, "made on the host")

        async def refused() -> bool:
            try:
                await anonymous.submit(["true"])
            except UnauthenticatedError:
                return True
            return False

        await eventually(refused, timeout=10)


def test_the_local_worker_pool_keeps_working_once_auth_is_on(processes, tmp_path: Path) -> None:
    import os

    from tests.integration.test_cli import zbrain

    data = tmp_path / "data"
    _, address = processes.server(data, "--workers", "1", "--auth", "required")
    admin = subprocess.run(
        [
            sys.executable,
            "-m",
            "zbrain",
            "token",
            "create",
            "--data-dir",
            str(data),
            "--org",
            "default",
            "--role",
            "admin",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[0]
    out = subprocess.run(
        [sys.executable, "-m", "zbrain", "submit", "--wait", "--", "echo", "hi"],
        capture_output=True,
        text=True,
        env={**os.environ, "ZBRAIN_SERVER": address, "ZBRAIN_TOKEN": admin},
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCEEDED" in out.stdout
    assert zbrain(address, "list").returncode == 1, "and anonymous calls are refused"


def test_a_token_for_a_malformed_org_is_refused_offline_too(tmp_path: Path) -> None:
    from tests.integration.test_cli import zbrain

    # Jobs submitted with a token default to its org, so the org is checked when made.
    out = zbrain(
        "127.0.0.1:1",  # no server: the token is made in the data directory
        *("token", "create", "--data-dir", str(tmp_path), "--org", "no spaces!"),
        *("--role", "client"),
    )

    assert out.returncode == 1
    assert "invalid organisation id" in out.stderr
    assert "Traceback" not in out.stderr
