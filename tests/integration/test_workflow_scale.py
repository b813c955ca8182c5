"""End to end: graphs of a thousand jobs complete, as a fan-out and fan-in
and as a chain. On SQLite only, to keep the suite quick: both stores settle
graphs with the same code (store/graph.py), which the conformance suite holds
PostgreSQL to, and `make bench` times graphs on both."""

from __future__ import annotations

from tests.conftest import Processes
from zbrain import Client
from zbrain.client import job_spec, ref
from zbrain.models import JobState
from zbrain_server.app import ZBrainServer


async def test_a_fan_out_and_fan_in_of_a_thousand_jobs_completes(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address, "--mode", "echo", "--concurrency", "64")
    specs = [job_spec(["root"], ref="root")]
    specs += [job_spec(["leaf"], ref=f"leaf{i}", depends_on=[ref("root")]) for i in range(1000)]
    specs.append(job_spec(["join"], depends_on=[ref(f"leaf{i}") for i in range(1000)]))
    ids = await client.submit_batch(specs)

    join = await client.wait(ids[-1], timeout=120)

    assert join.state is JobState.SUCCEEDED
    assert len(join.depends_on) == 1000


async def test_a_chain_a_thousand_deep_completes(
    server: ZBrainServer, client: Client, processes: Processes
):
    processes.worker(server.address, "--mode", "echo")
    specs = [job_spec(["link"], ref="0")]
    specs += [job_spec(["link"], ref=str(i), depends_on=[ref(str(i - 1))]) for i in range(1, 1000)]
    ids = await client.submit_batch(specs)

    last = await client.wait(ids[-1], timeout=180)

    assert last.state is JobState.SUCCEEDED
