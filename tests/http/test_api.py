"""The HTTP/JSON API against a real server: every route, errors as
google.rpc.Status with the right HTTP status, auth, organisations, downloads."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import pkgutil
import re
from typing import Any

import grpc
import pytest
from google.api import annotations_pb2

import zbrain.v1
from tests.integration.test_telemetry import Recorded
from zbrain.errors import ZBrainError
from zbrain.models import Role
from zbrain.v1 import job_pb2, job_service_pb2_grpc
from zbrain.v1 import job_service_pb2 as pb
from zbrain_server.config import Limits
from zbrain_server.dispatch.metrics import Telemetry
from zbrain_server.http.routes import routes_of
from zbrain_server.http.server import SERVICES

from .conftest import Http, StartHttp

BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def violations(answer: dict[str, Any]) -> dict[str, str]:
    """field -> description of the BadRequest detail of an error answer."""
    found = {}
    for detail in answer.get("details", []):
        if detail["@type"] == BAD_REQUEST:
            found.update({v["field"]: v["description"] for v in detail["fieldViolations"]})
    return found


async def lease(http: Http, token: str | None = None) -> tuple[str, str]:
    """Lease one job over HTTP, as a worker would: (job id, lease epoch)."""
    status, answer = await http.call(
        "POST",
        "/v1/leases:acquire",
        {"workerId": "w1", "maxJobs": 1, "waitTimeout": "5s"},
        token=token,
    )
    assert status == 200, answer
    [leased] = answer["leases"]
    return leased["job"]["id"], leased["leaseEpoch"]


async def test_a_job_is_submitted_read_listed_and_canceled_over_http(http: Http) -> None:
    job_id = await http.submit(["echo", "hi"], labels={"team": "ml"}, inputJson='{"n": 1}')
    status, answer = await http.call("GET", f"/v1/jobs/{job_id}")
    assert status == 200
    assert answer["job"]["cmd"] == ["echo", "hi"]
    assert answer["job"]["state"] == "JOB_STATE_PENDING"
    assert answer["job"]["labels"] == {"team": "ml"}

    other = await http.submit(["true"])
    status, page = await http.call("GET", "/v1/jobs?labels[team]=ml&states=JOB_STATE_PENDING")
    assert status == 200
    assert [job["id"] for job in page["jobs"]] == [job_id]
    status, page = await http.call("GET", "/v1/jobs?page_size=1&order=LIST_ORDER_NEWEST_FIRST")
    assert [job["id"] for job in page["jobs"]] == [other]
    assert page["nextPageToken"]

    status, answer = await http.call("POST", f"/v1/jobs/{job_id}:cancel")
    assert status == 200
    assert answer["job"]["state"] == "JOB_STATE_CANCELED"
    assert answer["outcome"] == "CANCEL_OUTCOME_CANCELED"


async def test_every_annotated_route_reaches_its_operation(http: Http) -> None:
    """Each binding in the protos answers from its RPC's operation: never
    the router's 404 or 405, whatever the operation then says."""
    routes = routes_of(SERVICES)
    assert {route.template for route in routes} >= {
        "/v1/jobs",
        "/v1/jobs:batchSubmit",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}:cancel",
        "/v1/jobs/{job_id}/logs",
        "/v1/jobs/{job_id}/logs:stream",
        "/v1/events:stream",
        "/v1/jobs/{job_id}/artifacts",
        "/v1/jobs/{job_id}/artifacts/{name=**}",
        "/v1/workers",
        "/v1/tokens",
        "/v1/templates/{name}:submit",
        "/v1/schedules/{schedule.id}",
        "/v1/orgs/{org_id}/settings",
        "/v1/orgs/{org_id}:pause",
    }
    missing_job = "01a2357e-1753-713e-9c23-cc11aed3891d"
    for route in routes:
        path = re.sub(r"\{[^}]*\}", missing_job, route.template)
        query = "?follow=false" if route.streaming else ""
        body: dict[str, Any] | None = {} if route.body else None
        status, answer = await http.call(route.http_method, path + query, body)
        assert status not in (405, 500), (route.template, status, answer)
        if status == 404:
            assert not answer["message"].startswith("no API route"), route.template


def test_every_service_with_annotated_rpcs_is_served_over_http() -> None:
    routed = {route.full_method for route in routes_of(SERVICES)}
    annotated = set()
    for module_info in pkgutil.iter_modules(zbrain.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"zbrain.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.GetOptions().HasExtension(annotations_pb2.http):
                    annotated.add(f"/{service.full_name}/{method.name}")
    assert "/zbrain.v1.OrgService/UpdateOrgSettings" in annotated
    assert annotated - routed == set()


async def test_an_admin_reads_changes_pauses_and_resumes_an_org_over_http(http: Http) -> None:
    status, answer = await http.call(
        "PATCH", "/v1/orgs/team-a/settings", {"maxRunningJobs": 3, "maxStartsPerSecond": 2.5}
    )
    assert status == 200, answer
    assert answer["settings"]["maxRunningJobs"] == 3
    status, answer = await http.call(
        "POST", "/v1/orgs/team-a:pause", {"selector": {"labels": {"pipeline": "nightly"}}}
    )
    assert status == 200, answer
    assert answer["settings"]["pausedSelectors"] == [{"labels": {"pipeline": "nightly"}}]
    status, answer = await http.call(
        "POST", "/v1/orgs/team-a:resume", {"selector": {"labels": {"pipeline": "nightly"}}}
    )
    assert status == 200, answer
    status, answer = await http.call("GET", "/v1/orgs/team-a/settings")
    assert status == 200, answer
    assert answer["settings"]["maxStartsPerSecond"] == 2.5
    assert "pausedSelectors" not in answer["settings"]


async def test_a_bad_org_setting_over_http_is_a_bad_request_naming_the_field(http: Http) -> None:
    status, answer = await http.call("PATCH", "/v1/orgs/team-a/settings", {"retentionDays": 100000})
    assert status == 400
    assert "retention_days" in violations(answer)


async def test_a_batch_is_submitted_in_one_request(http: Http) -> None:
    body = {"jobs": [{"cmd": ["true"]}, {"cmd": ["false"]}], "returnJobs": True}
    status, answer = await http.call("POST", "/v1/jobs:batchSubmit", body)
    assert status == 200
    assert len(answer["jobIds"]) == 2
    assert [s["job"]["cmd"] for s in answer["submitted"]] == [["true"], ["false"]]


async def test_json_that_does_not_parse_is_a_bad_request_naming_the_body(http: Http) -> None:
    status, answer = await http.call("POST", "/v1/jobs", data=b"{not json")
    assert status == 400
    assert answer["code"] == 3
    assert "body" in violations(answer)


async def test_a_field_of_the_wrong_type_is_named(http: Http) -> None:
    status, answer = await http.call(
        "POST", "/v1/jobs", {"job": {"cmd": ["x"], "maxRetries": "many"}}
    )
    assert status == 400
    assert violations(answer) == {
        "job.max_retries": "must be a whole number from -2147483648 to 2147483647"
    }
    status, answer = await http.call("POST", "/v1/jobs", {"job": {"cmd": ["x"], "colour": "red"}})
    assert status == 400
    assert violations(answer) == {"job.colour": "is not a field of zbrain.v1.JobSpec"}


async def test_a_value_of_the_wrong_kind_is_told_what_its_field_takes(http: Http) -> None:
    """In words, not the JSON parser's Python (`invalid literal for int()`)."""
    cases = [
        ("GET", "/v1/jobs?page_size=abc", None, "page_size", "a whole number"),
        (
            "POST",
            "/v1/jobs",
            {"job": {"cmd": ["x"], "maxRetries": 1.5}},
            "job.max_retries",
            "a whole number",
        ),
        (
            "POST",
            "/v1/jobs",
            {"job": {"cmd": "x"}},
            "job.cmd",
            "must be a list, each value a string",
        ),
        (
            "POST",
            "/v1/jobs",
            {"job": {"cmd": ["x"], "labels": {"a": 5}}},
            "job.labels",
            "each value a string",
        ),
        (
            "POST",
            "/v1/jobs",
            {"job": {"cmd": ["x"], "network": "yes"}},
            "job.network",
            "true or false",
        ),
        ("GET", "/v1/jobs?states=NOPE", None, "states", "JOB_STATE_RUNNING"),
        (
            "PATCH",
            "/v1/orgs/a/settings",
            {"maxStartsPerSecond": "fast"},
            "max_starts_per_second",
            "a number",
        ),
    ]
    for method, path, body, field, expected in cases:
        status, answer = await http.call(method, path, body)
        assert status == 400, (path, body, answer)
        found = violations(answer)
        assert list(found) == [field], (path, body, answer)
        assert expected in found[field], (path, body, answer)


async def test_validation_errors_carry_the_same_bad_request_details_as_grpc(http: Http) -> None:
    status, answer = await http.call("POST", "/v1/jobs", {"job": {"cmd": []}})
    assert status == 400
    assert "job.cmd" in violations(answer)
    status, answer = await http.call("GET", "/v1/jobs/not-a-uuid")
    assert status == 400
    assert "job_id" in violations(answer)
    status, answer = await http.call("GET", "/v1/jobs?page_size=abc")
    assert status == 400
    assert "page_size" in violations(answer)
    status, answer = await http.call("GET", "/v1/jobs?colour=red")
    assert status == 400
    assert "colour" in violations(answer)


async def test_unknown_paths_and_methods_have_their_own_statuses(http: Http) -> None:
    status, answer = await http.call("GET", "/v1/nothing")
    assert (status, answer["code"]) == (404, 5)
    async with http.session.delete(http.base + "/v1/jobs") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}


async def test_a_request_too_long_to_parse_is_logged_in_one_line_without_a_traceback(
    http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zbrain.http")
    async with http.session.get(http.base + "/v1/jobs?x=" + "y" * 10_000) as response:
        assert response.status == 400
    [record] = [r for r in caplog.records if r.name == "zbrain.http.protocol"]
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert "400 Got more than 8190 bytes" in record.getMessage()


async def test_a_body_over_the_message_limit_is_refused_with_413(
    start_http: StartHttp,
) -> None:
    http = await start_http(limits=Limits(max_message_bytes=1 << 16))
    status, answer = await http.call("POST", "/v1/jobs", data=b" " * (1 << 17))
    assert status == 413
    assert answer["code"] == 8


async def test_auth_needs_a_bearer_token_and_the_right_role(
    start_http: StartHttp,
) -> None:
    http = await start_http(auth="required")
    client = await http.token("team-a", Role.CLIENT)
    worker = await http.token("team-a", Role.WORKER)

    async with http.session.get(http.base + "/v1/jobs") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["code"] == 16
    status, _ = await http.call("GET", "/v1/jobs", token="zbt_nope_nope")
    assert status == 401
    job_id = await http.submit(["true"], token=client)
    status, answer = await http.call("GET", f"/v1/jobs/{job_id}", token=client)
    assert (status, answer["job"]["orgId"]) == (200, "team-a")
    status, answer = await http.call("POST", "/v1/jobs", {"job": {"cmd": ["x"]}}, token=worker)
    assert (status, answer["code"]) == (403, 7)
    status, _ = await http.call("GET", "/v1/tokens", token=client)
    assert status == 403


async def test_another_organisations_job_is_not_found(
    start_http: StartHttp,
) -> None:
    http = await start_http(auth="required")
    team_a = await http.token("team-a", Role.CLIENT)
    team_b = await http.token("team-b", Role.CLIENT)
    theirs = await http.submit(["true"], token=team_b)
    for method, path in (
        ("GET", f"/v1/jobs/{theirs}"),
        ("POST", f"/v1/jobs/{theirs}:cancel"),
        ("GET", f"/v1/jobs/{theirs}/artifacts"),
        ("GET", f"/v1/jobs/{theirs}/logs"),
    ):
        status, answer = await http.call(method, path, token=team_a)
        assert (status, answer["code"]) == (404, 5), path
    status, page = await http.call("GET", "/v1/jobs", token=team_a)
    assert page.get("jobs", []) == []


async def test_auth_off_serves_requests_without_a_token(http: Http) -> None:
    assert not http.server.auth_required
    status, _ = await http.call("GET", "/v1/tokens")
    assert status == 200


async def test_an_artifact_downloads_with_its_length_type_and_checksum(http: Http) -> None:
    content = b'{"rows": 3}\n' * 5000
    digest = hashlib.sha256(content).hexdigest()
    job_id = await http.submit(["true"])
    leased_id, epoch = await lease(http)
    assert leased_id == job_id
    async with grpc.aio.insecure_channel(http.server.address) as channel:
        header = pb.ArtifactHeader(
            job_id=job_id,
            lease_epoch=int(epoch),
            artifact=job_pb2.Artifact(name="out/data.json", sha256=digest, size_bytes=len(content)),
        )
        await job_service_pb2_grpc.JobServiceStub(channel).UploadArtifact(
            iter([pb.UploadArtifactRequest(header=header), pb.UploadArtifactRequest(chunk=content)])
        )
    status, listed = await http.call("GET", f"/v1/jobs/{job_id}/artifacts")
    assert listed["artifacts"][0]["sha256"] == digest

    async with http.session.get(
        f"{http.base}/v1/jobs/{job_id}/artifacts/out/data.json"
    ) as response:
        body = await response.read()
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(content))
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["ETag"] == f'"{digest}"'
        assert response.headers["Content-Disposition"].startswith("attachment")
    assert hashlib.sha256(body).hexdigest() == digest
    async with http.session.get(
        f"{http.base}/v1/jobs/{job_id}/artifacts/out/data.json",
        headers={"If-None-Match": f'"{digest}"'},
    ) as response:
        assert response.status == 304
    status, answer = await http.call("GET", f"/v1/jobs/{job_id}/artifacts/missing.txt")
    assert (status, answer["code"]) == (404, 5)


async def test_a_worker_leases_reports_and_completes_over_http(http: Http) -> None:
    job_id = await http.submit(["true"])
    _, epoch = await lease(http)
    status, answer = await http.call(
        "POST",
        f"/v1/jobs/{job_id}/logs:report",
        {"leaseEpoch": epoch, "lines": [{"stream": "LOG_STREAM_STDOUT", "text": "hello"}]},
    )
    assert (status, answer["lastSequence"]) == (200, "1")
    status, answer = await http.call(
        "POST",
        f"/v1/jobs/{job_id}/lease:complete",
        {
            "leaseEpoch": epoch,
            "result": {"outcome": "ATTEMPT_OUTCOME_SUCCEEDED", "outputJson": "[1]"},
        },
    )
    assert (status, answer["job"]["state"]) == (200, "JOB_STATE_SUCCEEDED")
    async with http.session.get(f"{http.base}/v1/jobs/{job_id}/logs") as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        lines = (await response.text()).splitlines()
    assert [json.loads(line)["lines"][0]["text"] for line in lines] == ["hello"]


async def test_the_console_is_served_with_a_strict_content_security_policy(http: Http) -> None:
    for path in ("/", "/jobs/some-id"):
        async with http.session.get(http.base + path) as response:
            assert response.status == 200
            assert "<html" in await response.text()
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
    async with http.session.get(http.base + "/missing.js") as response:
        assert response.status == 404
    async with http.session.get(http.base + "/%2e%2e/%2e%2e/etc/passwd") as response:
        assert response.status == 404 or "root:" not in await response.text()


async def test_with_auth_off_only_requests_to_an_ip_or_localhost_are_answered(
    start_http: StartHttp,
) -> None:
    """A page on a domain made to resolve to 127.0.0.1 (DNS rebinding) is
    same-origin with an open server; it must not be able to submit."""
    http = await start_http()
    rebound = {
        "Host": f"rebound.example:{http.port}",
        "Origin": f"http://rebound.example:{http.port}",
    }
    status, answer = await http.call("POST", "/v1/jobs", {"job": {"cmd": ["x"]}}, headers=rebound)
    assert (status, answer["code"]) == (403, 7)
    status, _ = await http.call("GET", "/v1/jobs", headers={"Host": f"localhost:{http.port}"})
    assert status == 200


async def test_a_taken_http_port_is_refused_with_a_message(
    start_http: StartHttp, start_server: Any
) -> None:
    http = await start_http()
    with pytest.raises(ZBrainError, match=f"cannot listen for HTTP on 127.0.0.1:{http.port}"):
        await start_server(http_listen=f"127.0.0.1:{http.port}")


async def test_api_calls_are_traced_and_timed_like_grpc_calls(start_http: StartHttp) -> None:
    recorded = Recorded()
    try:
        http = await start_http(
            telemetry=Telemetry(recorded.tracer_provider, recorded.meter_provider)
        )
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        parent = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        status, _ = await http.call("POST", "/v1/jobs", {"job": {"cmd": ["x"]}}, headers=parent)
        assert status == 200
        submit = recorded.span("zbrain.v1.JobService/Submit")
        assert f"{submit.context.trace_id:032x}" == trace_id  # in the caller's trace
        assert dict(submit.attributes or {})["rpc.system"] == "http"
        status, _ = await http.call("GET", "/v1/jobs/01939a4e-8b2c-7def-8123-456789abcdef")
        assert status == 404
        get = recorded.attributes("zbrain.v1.JobService/Get")
        assert get["rpc.grpc.status_code"] == "NOT_FOUND"
        durations = recorded.points("rpc.server.duration")
        assert {p.attributes["rpc.method"] for p in durations} >= {"zbrain.v1.JobService/Submit"}
    finally:
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()
