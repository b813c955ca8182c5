"""A process of stalled readers, for the stalled-readers chaos test.

    python -m tests.chaos.stalled_reader ADDRESS [--events-of JOB_ID...]
        [--all-events N] [--logs JOB_ID...]

It opens StreamEvents(follow) streams: one per `--events-of` job, following
that job's topic from its start, and N following every event from sequence 0
(a replay of the whole history first); it waits for the first message of
each, so the server is serving them. It opens one StreamLogs(follow) stream
per `--logs` job. Then it says "stalled" and stops itself with SIGSTOP.
Stopped, it reads nothing at all, down to the socket: the server meets
readers whose TCP window is shut, which readers in a running gRPC process
(whose transport keeps reading into memory) never show it. Continued
(SIGCONT), it cancels the log streams, reads each event stream to its end,
and prints one JSON line: how the event streams ended, by status code name.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
from typing import Any

import grpc

from zbrain.v1 import job_service_pb2, job_service_pb2_grpc

STALLED = "stalled"
DRAIN_TIMEOUT_S = 60.0


async def main(
    address: str, events_of: list[str], all_events: int, logs: list[str]
) -> dict[str, int]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        requests = [
            job_service_pb2.StreamEventsRequest(topic_prefix=f"jobs/{job_id}/", follow=True)
            for job_id in events_of
        ] + [job_service_pb2.StreamEventsRequest(follow=True)] * all_events
        followers = [stub.StreamEvents(request) for request in requests]
        for follower in followers:
            await follower.read()
        tails = [
            stub.StreamLogs(job_service_pb2.StreamLogsRequest(job_id=job_id, follow=True))
            for job_id in logs
        ]
        print(STALLED, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

        for tail in tails:
            tail.cancel()
        ends = await asyncio.wait_for(
            asyncio.gather(*(_end_of(follower) for follower in followers)), DRAIN_TIMEOUT_S
        )
        return dict(collections.Counter(ends))


async def _end_of(call: Any) -> str:
    """Read a stream to its end; the name of the status it ended with."""
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    return str((await call.code()).name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("address")
    parser.add_argument("--events-of", nargs="*", default=[], metavar="JOB_ID")
    parser.add_argument("--all-events", type=int, default=0, metavar="N")
    parser.add_argument("--logs", nargs="*", default=[], metavar="JOB_ID")
    arguments = parser.parse_args()
    ended = asyncio.run(
        main(arguments.address, arguments.events_of, arguments.all_events, arguments.logs)
    )
    print(json.dumps(ended), flush=True)
