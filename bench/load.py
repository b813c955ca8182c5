"""Load generators for bench/run.py; each mode prints one JSON line of figures.

Every mode runs in its own process, so the server's CPU is its own. `submit`
and `e2e` take several replica addresses joined by commas: submits go round
the replicas, workers are spread over them, and completions are counted on
the last replica's event stream (so they must cross replicas to be seen).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from zbrain.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

SPEC = job_pb2.JobSpec(cmd=["true"], input_json='{"n": 1}')
SUBMIT_BYTES = len(job_service_pb2.SubmitRequest(job=SPEC).SerializeToString())
EVENT_BYTES = 160  # about the size of a job_submitted event message


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def emit(**figures: Any) -> None:
    print(json.dumps(figures))


# -- the ceiling ----------------------------------------------------------------------


async def echo_server(port: int) -> None:
    """The bare grpc.aio server of the ceilings: a unary echo, a server stream,
    and a relay (`Push` answers once a 4 KiB write is on disk, as Submit
    answers once the job is, and hands the message to every `Follow` stream,
    as the server hands a new job's lease to an idle worker)."""
    followers: set[asyncio.Queue[bytes]] = set()
    path = os.path.join(tempfile.gettempdir(), f"zbrain-bench-relay-{port}")
    disk = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.unlink(path)  # written and synced all the same; gone with the process
    block = b"x" * 4096

    def write_durably() -> None:
        os.pwrite(disk, block, 0)
        os.fdatasync(disk)

    async def unary(request: bytes, context: Any) -> bytes:
        return request

    async def stream(request: bytes, context: Any) -> Any:
        count = int(request)
        message = b"x" * EVENT_BYTES
        for _ in range(count):
            yield message

    async def push(request: bytes, context: Any) -> bytes:
        # In a thread, as the store's writer runs its commits.
        await asyncio.get_running_loop().run_in_executor(None, write_durably)
        for queue in followers:
            queue.put_nowait(request)
        return b""

    async def follow(request: bytes, context: Any) -> Any:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        followers.add(queue)
        try:
            yield b"ready"
            while True:
                yield await queue.get()
        finally:
            followers.discard(queue)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Echo",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(stream),
                    "Push": grpc.unary_unary_rpc_method_handler(push),
                    "Follow": grpc.unary_stream_rpc_method_handler(follow),
                },
            )
        ]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def echo_unary(address: str, inflight: int, seconds: float) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/bench.Echo/Unary")
        payload = b"x" * SUBMIT_BYTES
        done = 0
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call(payload)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(inflight)))
        emit(rate=done / (time.perf_counter() - started))


async def echo_stream(address: str, subscribers: int, count: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_stream("/bench.Echo/Stream")

        async def subscriber() -> int:
            return len([m async for m in call(str(count).encode())])

        started = time.perf_counter()
        received = sum(await asyncio.gather(*(subscriber() for _ in range(subscribers))))
        emit(rate=received / (time.perf_counter() - started))


async def echo_relay(address: str, count: int) -> None:
    """The floor of `submit-to-start`: from just before a bare unary call to
    a message's arrival in another process that follows the server's stream,
    through one fsync'd write, the calls 10 ms apart as there. Every process
    is idle between probes, so what it measures is mostly how fast this
    machine wakes them (three processes, and gRPC's own poller thread in
    each), which no code of ZBrain's can avoid."""
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load", "echo-follower", address, stdout=asyncio.subprocess.PIPE
    )
    assert follower.stdout is not None
    try:
        assert (await follower.stdout.readline()).strip() == b"ready"
        latencies = []
        async with grpc.aio.insecure_channel(address) as channel:
            push = channel.unary_unary("/bench.Echo/Push")
            for probe in range(count):
                begun = time.perf_counter()
                await push(str(probe).encode())
                number, arrived = (await asyncio.wait_for(follower.stdout.readline(), 10)).split()
                assert int(number) == probe, number
                latencies.append((float(arrived) - begun) * 1000)
                await asyncio.sleep(0.01)
    finally:
        follower.terminate()
        await follower.wait()
    emit(p50_ms=statistics.median(latencies), p99_ms=percentile(latencies, 0.99))


async def echo_follower(address: str) -> None:
    """Prints each relayed message with when it arrived (`time.perf_counter`)."""
    async with grpc.aio.insecure_channel(address) as channel:
        async for message in channel.unary_stream("/bench.Echo/Follow")(b""):
            arrived = time.perf_counter()
            print("ready" if message == b"ready" else f"{message.decode()} {arrived}", flush=True)


# -- ZBrain ---------------------------------------------------------------------------


async def submit(address: str, inflight: int, seconds: float) -> None:
    emit(**await submit_figures(address, inflight, seconds))


async def submit_figures(addresses: str, inflight: int, seconds: float) -> dict[str, float]:
    channels = [grpc.aio.insecure_channel(address) for address in addresses.split(",")]
    try:
        stubs = [job_service_pb2_grpc.JobServiceStub(channel) for channel in channels]
        request = job_service_pb2.SubmitRequest(job=SPEC)
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def loop(stub: job_service_pb2_grpc.JobServiceStub) -> None:
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                await stub.Submit(request)
                latencies.append((time.perf_counter() - begun) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(loop(stubs[i % len(stubs)]) for i in range(inflight)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in channels:
            await channel.close()
    return {
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
    }


async def client_submit(address: str, inflight: int, seconds: float) -> None:
    """`submit`, through the friendly `zbrain.Client` (its defaults) instead of raw stubs."""
    from zbrain import Client

    latencies: list[float] = []
    async with await Client.connect(address) as client:
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                await client.submit(["true"], input={"n": 1})
                latencies.append((time.perf_counter() - begun) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(inflight)))
        elapsed = time.perf_counter() - started
    emit(
        rate=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies),
        p99_ms=percentile(latencies, 0.99),
    )


async def submit_to_start(address: str, count: int) -> None:
    """From just before `Client.submit` to the first statement of the job's
    function in an SDK worker process (default settings) on an idle server.

    The worker prints when each function started (`time.perf_counter`, the
    machine's monotonic clock, the same in every process here). Probes and
    worker are of an org of their own, so jobs other figures left behind wait."""
    from zbrain import Client

    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        "start-worker",
        address,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    try:
        assert (await worker.stdout.readline()).strip() == b"ready"
        latencies = []
        async with await Client.connect(address) as client:
            for probe in range(count):
                begun = time.perf_counter()
                await client.submit(["true"], input=probe, org="start-probe")
                line = await asyncio.wait_for(worker.stdout.readline(), 10)
                number, started = line.split()
                assert int(number) == probe, line
                latencies.append((float(started) - begun) * 1000)
                await asyncio.sleep(0.01)  # the worker has reported and is idle again
    finally:
        worker.terminate()
        await worker.wait()
    emit(p50_ms=statistics.median(latencies), p99_ms=percentile(latencies, 0.99))


async def start_worker(address: str) -> None:
    """An SDK worker (default settings) whose function prints when it started."""
    from zbrain import Client, Job
    from zbrain.worker import FunctionExecutor, Worker

    async def note(job: Job) -> None:
        started = time.perf_counter()
        print(job.input, started, flush=True)

    async with (
        await Client.connect(address) as client,
        Worker(client, FunctionExecutor(note), orgs=["start-probe"]),
    ):
        await asyncio.sleep(0.5)  # connected and waiting for work
        print("ready", flush=True)
        await asyncio.Event().wait()


async def batch(address: str, size: int, batches: int) -> None:
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        request = job_service_pb2.SubmitBatchRequest(jobs=[SPEC] * size)
        started = time.perf_counter()
        for _ in range(batches):
            await stub.SubmitBatch(request)
        emit(rate=size * batches / (time.perf_counter() - started))


async def dispatch(address: str, count: int, org: str = "default") -> None:
    """Submit-acknowledged to worker-received, with an idle SDK worker in this process.

    With `org`, the probe jobs and the worker are of that org alone, so a
    Submit load on the default org (bench.run's saturated case) keeps the
    server busy without taking the worker's slots."""
    from zbrain import Client, Job
    from zbrain.worker import FunctionExecutor, Worker

    spec = job_pb2.JobSpec()
    spec.CopyFrom(SPEC)
    spec.org_id = org

    received: dict[str, float] = {}
    arrived = asyncio.Event()

    async def note(job: Job) -> None:
        received[job.id] = time.perf_counter()
        arrived.set()

    async with (
        await Client.connect(address) as client,
        Worker(client, FunctionExecutor(note), orgs=[org], concurrency=4),
    ):
        await asyncio.sleep(0.5)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            latencies = []
            for _ in range(count):
                arrived.clear()
                response = await stub.Submit(job_service_pb2.SubmitRequest(job=spec))
                acked = time.perf_counter()
                await asyncio.wait_for(arrived.wait(), 10)
                latencies.append(max(0.0, received[response.job.id] - acked) * 1000)
                await asyncio.sleep(0.005)  # the worker is idle again before the next
    emit(p50_ms=statistics.median(latencies), p99_ms=percentile(latencies, 0.99))


async def fairness(address: str, backlog: int, probes: int, by: str = "org") -> None:
    """Org "small"'s dispatch latency (Submit acknowledged to worker received)
    while org "big" has `backlog` jobs queued and every worker slot busy. With
    `by` "key", the same within one org: concurrency key "small" (limit 1)
    against key "big" (limit 1000), so the slots rotate among keys, not orgs.

    One SDK worker in this process serves both orgs with 8 slots; big's jobs
    take 0 to 40 ms (20 ms on average, spread so that slots come free one at
    a time rather than in waves), so its backlog outlasts the probes (20,000
    take 50 s; the probes, one every 50 ms, about 10 s) while the server is
    far from saturated. What a probe waits for is the next slot coming free
    and its org's turn for it: fairness gives it that very slot."""
    from zbrain import Client, Job
    from zbrain.worker import FunctionExecutor, Worker

    received: dict[str, float] = {}
    arrived = asyncio.Event()

    async def run(job: Job) -> None:
        if job.org_id == "small" or job.concurrency_key == "small":
            received[job.id] = time.perf_counter()
            arrived.set()
        else:
            await asyncio.sleep(random.uniform(0.0, 0.04))

    big = job_pb2.JobSpec()
    big.CopyFrom(SPEC)
    big.org_id = "big"
    small = job_pb2.JobSpec()
    small.CopyFrom(SPEC)
    small.org_id = "small"
    if by == "key":
        big.org_id = small.org_id = "big"
        big.concurrency_key, big.concurrency_limit = "big", 1000
        small.concurrency_key = "small"
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        for start in range(0, backlog, 1000):
            size = min(1000, backlog - start)
            await stub.SubmitBatch(job_service_pb2.SubmitBatchRequest(jobs=[big] * size))
        async with (
            await Client.connect(address) as client,
            Worker(client, FunctionExecutor(run), orgs=["big", "small"], concurrency=8),
        ):
            await asyncio.sleep(0.5)  # every slot is busy with big's jobs
            latencies = []
            for _ in range(probes):
                arrived.clear()
                response = await stub.Submit(job_service_pb2.SubmitRequest(job=small))
                acked = time.perf_counter()
                await asyncio.wait_for(arrived.wait(), 10)
                latencies.append(max(0.0, received[response.job.id] - acked) * 1000)
                await asyncio.sleep(0.05)
            left = await stub.List(
                job_service_pb2.ListRequest(
                    org_id="big", states=[job_pb2.JOB_STATE_PENDING], page_size=1
                )
            )
    emit(
        p50_ms=statistics.median(latencies),
        p99_ms=percentile(latencies, 0.99),
        backlog_left=len(left.jobs),  # 1: big still had jobs waiting at the end
    )


async def count_finished(address: str, total: int, after: int) -> float:
    """Wait until `total` jobs succeeded (from the event stream); return when."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        done = 0
        request = job_service_pb2.StreamEventsRequest(
            after_sequence=after, follow=True, topic_prefix="jobs/"
        )
        async for response in stub.StreamEvents(request):
            for event in response.events:
                if (
                    event.WhichOneof("payload") == "job_state_changed"
                    and event.job_state_changed.to_state == job_pb2.JOB_STATE_SUCCEEDED
                ):
                    done += 1
            if done >= total:
                return time.perf_counter()
    raise RuntimeError("event stream ended early")


async def end_to_end(addresses: str, total: int, spec: job_pb2.JobSpec) -> None:
    replicas = addresses.split(",")
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
        for address in replicas
    ]
    try:
        stubs = [job_service_pb2_grpc.JobServiceStub(channel) for channel in channels]
        watcher = asyncio.ensure_future(count_finished(replicas[-1], total, 0))
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        for number, offset in enumerate(range(0, total, 1000)):
            await stubs[number % len(stubs)].SubmitBatch(
                job_service_pb2.SubmitBatchRequest(jobs=[spec] * min(1000, total - offset))
            )
        finished = await watcher
    finally:
        for channel in channels:
            await channel.close()
    emit(rate=total / (finished - started))


async def e2e(addresses: str, workers: int, total: int) -> None:
    replicas = addresses.split(",")
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", "sdk-worker", replicas[i % len(replicas)]
        )
        for i in range(workers)
    ]
    await asyncio.sleep(1.5)
    try:
        await end_to_end(addresses, total, SPEC)
    finally:
        for child in children:
            child.terminate()
            await child.wait()


async def sdk_worker(address: str) -> None:
    from zbrain import Client, Job
    from zbrain.worker import FunctionExecutor, Worker

    async def noop(job: Job) -> None:
        return None

    async with await Client.connect(address) as client:
        await Worker(client, FunctionExecutor(noop), concurrency=64).run()


async def events(address: str, subscribers: int, count: int) -> None:
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        start_after = 0
        async for response in stub.StreamEvents(job_service_pb2.StreamEventsRequest()):
            start_after = response.events[-1].sequence if response.events else start_after
        latencies: list[float] = []

        async def subscriber() -> None:
            seen = 0
            call = stub.StreamEvents(
                job_service_pb2.StreamEventsRequest(after_sequence=start_after, follow=True)
            )
            async for response in call:
                now = time.time()
                for event in response.events:
                    latencies.append((now - event.time.ToMicroseconds() / 1e6) * 1000)
                seen += len(response.events)
                if seen >= count:
                    call.cancel()
                    return

        tasks = [asyncio.ensure_future(subscriber()) for _ in range(subscribers)]
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        for offset in range(0, count, 500):
            await stub.SubmitBatch(
                job_service_pb2.SubmitBatchRequest(jobs=[SPEC] * min(500, count - offset))
            )
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        emit(rate=subscribers * count / elapsed, p99_ms=percentile(latencies, 0.99))


async def logs(address: str, lines: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        await stub.Submit(job_service_pb2.SubmitRequest(job=SPEC))
        lease = (
            await stub.AcquireLease(
                job_service_pb2.AcquireLeaseRequest(
                    worker_id="bench", wait_timeout=Duration(seconds=5)
                )
            )
        ).leases[0]
        line = job_pb2.LogLine(stream=job_pb2.LOG_STREAM_STDOUT, text="x" * 80)
        request = job_service_pb2.ReportLogsRequest(
            job_id=lease.job.id, lease_epoch=lease.lease_epoch, lines=[line] * 1000
        )
        started = time.perf_counter()
        for _ in range(lines // 1000):
            await stub.ReportLogs(request)
        emit(rate=(lines // 1000) * 1000 / (time.perf_counter() - started))


async def growth(address: str, prefill: int) -> None:
    """Fill the store to `prefill` jobs, then time Get, the first page of List, and Submit.

    The 300 Gets read distinct jobs when `prefill` is at least about 3,000
    (every seventh id of each batch is kept), as at the suite's 10,000 and
    1,000,000.
    """
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        ids: list[str] = []
        for offset in range(0, prefill, 1000):
            response = await stub.SubmitBatch(
                job_service_pb2.SubmitBatchRequest(jobs=[SPEC] * min(1000, prefill - offset))
            )
            # Ids from all over each batch, so that both store sizes answer
            # Gets of distinct, scattered jobs (not a few hot ones).
            ids.extend(response.job_ids[::7])
        gets, lists = [], []
        for n in range(300):
            begun = time.perf_counter()
            await stub.Get(job_service_pb2.GetRequest(job_id=ids[n * 7919 % len(ids)]))
            gets.append((time.perf_counter() - begun) * 1000)
            begun = time.perf_counter()
            await stub.List(job_service_pb2.ListRequest(page_size=50))
            lists.append((time.perf_counter() - begun) * 1000)
    submitted = await submit_figures(address, 64, 2.0)
    emit(
        get_p99_ms=percentile(gets, 0.99),
        list_p99_ms=percentile(lists, 0.99),
        submit_rate=submitted["rate"],
    )


async def many_workers(address: str, count: int, seconds: float) -> None:
    """Hold `count` worker connections open (one process) for `seconds`."""
    from zbrain import Client, Job
    from zbrain.worker import FunctionExecutor, Worker

    async def noop(job: Job) -> None:
        return None

    # A client each: every worker holds its own connection, as separate processes would.
    clients = [await Client.connect(address) for _ in range(count)]
    workers = [
        Worker(client, FunctionExecutor(noop), worker_id=f"idle-{n}")
        for n, client in enumerate(clients)
    ]
    runners = [asyncio.ensure_future(worker.run()) for worker in workers]
    await asyncio.sleep(seconds)
    await asyncio.gather(*(worker.shutdown(1.0) for worker in workers))
    await asyncio.gather(*runners, return_exceptions=True)
    await asyncio.gather(*(client.close() for client in clients))
    emit(workers=count)


async def spawn_ceiling(seconds: float) -> None:
    """The command-job ceiling: /bin/true spawned and reaped one after another
    from one Python process, by the cheapest call (posix_spawn, a vfork), with
    no pipes, folder or event loop. The local process worker's `true` figure
    is given as a ratio to it."""
    emit(rate=_spawn_true_for(seconds))


def _spawn_true_for(seconds: float) -> float:
    """Spawns of /bin/true per second, each waited for, for `seconds`."""
    environment = dict(os.environ)
    spawned = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        os.waitpid(os.posix_spawn("/bin/true", ["/bin/true"], environment), 0)
        spawned += 1
    return spawned / elapsed


def main() -> None:
    # The SDK workers a load starts would log a line each as they connect
    # (zbrain.logs.ensure_handler); the bench's output is its figures.
    logging.basicConfig(level=logging.WARNING)
    mode, *args = sys.argv[1:]
    runs = {
        "echo-server": lambda: echo_server(int(args[0])),
        "echo-unary": lambda: echo_unary(args[0], int(args[1]), float(args[2])),
        "echo-stream": lambda: echo_stream(args[0], int(args[1]), int(args[2])),
        "echo-relay": lambda: echo_relay(args[0], int(args[1])),
        "echo-follower": lambda: echo_follower(args[0]),
        "submit": lambda: submit(args[0], int(args[1]), float(args[2])),
        "client-submit": lambda: client_submit(args[0], int(args[1]), float(args[2])),
        "submit-to-start": lambda: submit_to_start(args[0], int(args[1])),
        "start-worker": lambda: start_worker(args[0]),
        "batch": lambda: batch(args[0], int(args[1]), int(args[2])),
        "dispatch": lambda: dispatch(args[0], int(args[1]), *args[2:]),
        "fairness": lambda: fairness(args[0], int(args[1]), int(args[2]), *args[3:]),
        "e2e": lambda: e2e(args[0], int(args[1]), int(args[2])),
        "e2e-process": lambda: end_to_end(args[0], int(args[1]), SPEC),
        "spawn-ceiling": lambda: spawn_ceiling(float(args[0])),
        "sdk-worker": lambda: sdk_worker(args[0]),
        "events": lambda: events(args[0], int(args[1]), int(args[2])),
        "logs": lambda: logs(args[0], int(args[1])),
        "growth": lambda: growth(args[0], int(args[1])),
        "workers": lambda: many_workers(args[0], int(args[1]), float(args[2])),
    }
    asyncio.run(runs[mode]())


if __name__ == "__main__":
    main()
