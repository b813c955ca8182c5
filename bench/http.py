"""Load generators of the HTTP edge for bench/run.py; each mode prints one
JSON line of figures (as bench/load.py does).

    python -m bench.http submit URL INFLIGHT SECONDS   Submit as JSON over HTTP
    python -m bench.http watchers URL COUNT SECONDS    COUNT WebSockets following events
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import aiohttp

from bench.load import emit, percentile

SUBMIT_BODY = json.dumps({"job": {"cmd": ["true"], "inputJson": '{"n": 1}'}})


async def submit(url: str, inflight: int, seconds: float) -> None:
    """POST /v1/jobs with INFLIGHT requests outstanding, for SECONDS."""
    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(url, connector=connector) as session:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                async with session.post("/v1/jobs", data=SUBMIT_BODY) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"Submit answered {response.status}")
                latencies.append((time.perf_counter() - begun) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(inflight)))
        elapsed = time.perf_counter() - started
    emit(
        rate=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies),
        p99_ms=percentile(latencies, 0.99),
    )


async def watchers(url: str, count: int, seconds: float) -> None:
    """COUNT sockets following every new event (from the last one recorded
    now); prints "ready" once all are open, then, after SECONDS, the events
    each received (the slowest one's and the fastest one's)."""
    async with aiohttp.ClientSession(url) as session:
        last = 0
        async with session.get("/v1/events") as response:
            async for line in response.content:
                last = int(json.loads(line)["events"][-1]["sequence"])
        path = f"/v1/events:stream?from={last}&follow=true"
        sockets = [await session.ws_connect(path, max_msg_size=0) for _ in range(count)]
        print("ready", flush=True)
        received = [0] * count

        async def follow(index: int) -> None:
            async for message in sockets[index]:
                if message.type == aiohttp.WSMsgType.TEXT:
                    received[index] += message.data.count('"sequence"')

        tasks = [asyncio.create_task(follow(i)) for i in range(count)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ws in sockets:
            await ws.close()
    emit(events_each_min=min(received), events_each_max=max(received))


def main() -> None:
    mode, url, count, seconds = sys.argv[1:]
    runs = {"submit": submit, "watchers": watchers}
    asyncio.run(runs[mode](url, int(count), float(seconds)))


if __name__ == "__main__":
    main()
