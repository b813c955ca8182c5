"""Workflow figures for bench/run.py: how soon a released child and a delayed
job start, and how fast graphs of a thousand jobs run. Each mode prints one
JSON line, as bench.load's modes do.

    python -m bench.workflows release ADDRESS LINKS
    python -m bench.workflows delayed ADDRESS JOBS
    python -m bench.workflows graphs ADDRESS
    python -m bench.workflows cancel-chain ADDRESS DEPTH

The times compared are the server's own (a parent's finish_time and its
child's start_time; a delayed job's next_run_time and its start_time), so
they measure the server's reaction, not the client's clock or its polling.
An SDK worker in another process with plenty of slots runs every job at
once, so the server, not the worker, is what waits.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta

from bench.load import emit, percentile
from zbrain import Client, Job
from zbrain.client import job_spec, ref


async def _with_worker(address: str, run: object) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load", "sdk-worker", address
    )
    try:
        await asyncio.sleep(1.5)  # connected and idle before measuring
        await run  # type: ignore[misc]
    finally:
        worker.terminate()
        await worker.wait()


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


async def release(address: str, links: int) -> None:
    """Chains of two jobs, one after another on an idle server: the time from
    the parent's finish to the child's start (the release and the lease)."""

    async def measure() -> None:
        async with await Client.connect(address) as client:
            gaps = []
            for _ in range(links):
                parent, child = await client.submit_batch(
                    [job_spec(["parent"], ref="p"), job_spec(["child"], depends_on=[ref("p")])]
                )
                done = await client.wait(child, timeout=60)
                before = await client.get(parent)
                assert before.finish_time and done.start_time
                gaps.append(_ms(done.start_time - before.finish_time))
        emit(p50_ms=percentile(gaps, 0.5), p99_ms=percentile(gaps, 0.99))

    await _with_worker(address, measure())


async def delayed(address: str, jobs: int) -> None:
    """Delayed jobs falling due 20 ms apart on an idle server: how late each
    starts after its time."""

    async def measure() -> None:
        async with await Client.connect(address) as client:
            submitted: list[Job] = [
                await client.submit(["later"], delay=1.0 + i * 0.02) for i in range(jobs)
            ]
            lateness = []
            for job in submitted:
                done = await client.wait(job.id, timeout=60)
                assert done.start_time and job.next_run_time
                lateness.append(_ms(done.start_time - job.next_run_time))
        emit(p50_ms=percentile(lateness, 0.5), p99_ms=percentile(lateness, 0.99))

    await _with_worker(address, measure())


async def graphs(address: str) -> None:
    """A fan-out of 1,000 jobs joined by one, and a chain 1,000 deep: jobs/s."""

    async def measure() -> None:
        async with await Client.connect(address) as client:
            fan = [job_spec(["root"], ref="root")]
            fan += [job_spec(["leaf"], ref=f"l{i}", depends_on=[ref("root")]) for i in range(1000)]
            fan.append(job_spec(["join"], depends_on=[ref(f"l{i}") for i in range(1000)]))
            started = time.perf_counter()
            ids = await client.submit_batch(fan)
            await client.wait(ids[-1], timeout=600)
            fan_rate = len(fan) / (time.perf_counter() - started)

            chain = [job_spec(["link"], ref="0")]
            chain += [
                job_spec(["link"], ref=str(i), depends_on=[ref(str(i - 1))]) for i in range(1, 1000)
            ]
            started = time.perf_counter()
            ids = await client.submit_batch(chain)
            await client.wait(ids[-1], timeout=600)
            chain_rate = len(chain) / (time.perf_counter() - started)
        emit(fan_rate=fan_rate, chain_rate=chain_rate)

    await _with_worker(address, measure())


async def cancel_chain(address: str, depth: int) -> None:
    """Cancel the root of a chain `depth` jobs deep that waits (no worker):
    the Cancel call's time, which cancels every job of the chain in one
    transaction."""
    async with await Client.connect(address, timeout=600) as client:
        chain = [job_spec(["link"], ref="0")]
        chain += [
            job_spec(["link"], ref=str(i), depends_on=[ref(str(i - 1))]) for i in range(1, depth)
        ]
        ids = await client.submit_batch(chain)
        started = time.perf_counter()
        await client.cancel(ids[0])
        cancel_ms = (time.perf_counter() - started) * 1000
        assert (await client.get(ids[-1])).state.name == "CANCELED"
    emit(cancel_ms=cancel_ms)


def main() -> None:
    mode, address, *args = sys.argv[1:]
    runs = {
        "release": lambda: release(address, int(args[0])),
        "delayed": lambda: delayed(address, int(args[0])),
        "graphs": lambda: graphs(address),
        "cancel-chain": lambda: cancel_chain(address, int(args[0])),
    }
    asyncio.run(runs[mode]())


if __name__ == "__main__":
    main()
