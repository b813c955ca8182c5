"""Readers that stop reading while jobs print a lot, round after round.

Each round, a process opens many StreamEvents(follow) and StreamLogs(follow)
streams and stops itself (SIGSTOP: it reads nothing, down to the socket),
then jobs print megabytes. The server bounds what it holds for each
subscriber in bytes (live events by ZBRAIN_EVENT_BUFFER_BYTES, a replay's
page of history by ZBRAIN_MAX_STREAM_MESSAGE_BYTES; both lowered here to make
rounds quick), so the most memory it ever held (its peak resident size) stops
growing after the first round, and every stalled event stream, once read
again, ends with RESOURCE_EXHAUSTED (where to resume is in its details).
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.harness import Fleet, peak_rss_bytes, publish
from tests.chaos.stalled_reader import STALLED
from tests.conftest import eventually
from zbrain import Client, JobState

SERVER_ENV = {
    "ZBRAIN_EVENT_BUFFER_BYTES": str(256 << 10),  # a stalled subscriber is cut at 256 KiB
    # A stalled replay holds about one message (its page of the history, and
    # that page on its way out): 1 MiB keeps eight of them small beside the bound.
    "ZBRAIN_MAX_STREAM_MESSAGE_BYTES": str(1 << 20),
    # The stalled readers answer no pings: their connections must outlive a round.
    "ZBRAIN_KEEPALIVE": "120s",
}
PRINTERS = 2
# 20,000 lines of 100 bytes: 2 MB a job, 4 MB a round, as log lines and as
# events, to each of the stalled readers.
PRINT = ["sh", "-c", 'while [ ! -e "$GATE" ]; do sleep 0.05; done; yes "$LINE" | head -n 20000']
LINE = "x" * 99
LOG_READERS_PER_JOB = 10
MiB = 1 << 20
# Holding each round's output for every stalled reader would take about
# 200 MB a round (40 event streams x 4 MB, 20 log streams x 2 MB).
GROWTH_BOUND = 48 * MiB


@dataclass(frozen=True)
class Stall:
    """The event streams each round's stalled readers hold, beside their log
    streams, and how many rounds there are."""

    events_per_job: int  # following one job's topic, from its start
    all_events: int  # following every event from sequence 0: the whole history first
    rounds: int


FOLLOWING_THEIR_JOBS = Stall(events_per_job=20, all_events=0, rounds=3)
# Fewer: replaying a growing history costs the server time.
REPLAYING_EVERYTHING = Stall(events_per_job=0, all_events=8, rounds=4)


@pytest.mark.parametrize(
    "stall",
    [
        pytest.param(FOLLOWING_THEIR_JOBS, id="following-their-jobs"),
        pytest.param(REPLAYING_EVERYTHING, id="replaying-all-events"),
    ],
)
async def test_stalled_readers_during_heavy_output_leave_the_servers_memory_flat(
    stall: Stall, fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    served = await fleet.server(tmp_path / "data", env=SERVER_ENV)
    fleet.worker(served.address, "printer", concurrency=PRINTERS)
    peaks: list[int] = []
    ends: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    async with await Client.connect(served.address) as client:
        # Some history before the first round, for readers that replay it.
        opened = tmp_path / "open"
        opened.touch()
        await _print(client, opened, PRINTERS)
        for round_number in range(stall.rounds):
            gate = tmp_path / f"gate{round_number}"
            jobs = [
                await client.submit(PRINT, env={"GATE": str(gate), "LINE": LINE}, max_retries=0)
                for _ in range(PRINTERS)
            ]
            readers = fleet.spawn(
                "stalled-readers",
                [
                    *("-m", "tests.chaos.stalled_reader", served.address),
                    *(
                        "--events-of",
                        *[job.id for job in jobs for _ in range(stall.events_per_job)],
                    ),
                    *("--all-events", str(stall.all_events)),
                    *("--logs", *[job.id for job in jobs for _ in range(LOG_READERS_PER_JOB)]),
                ],
            )
            await _stalled(fleet, readers)
            gate.touch()
            for job in jobs:
                assert (await client.wait(job.id, timeout=120)).state is JobState.SUCCEEDED
            peaks.append(peak_rss_bytes(served.process.pid))

            readers.send_signal(signal.SIGCONT)
            assert await asyncio.to_thread(readers.wait, 90) == 0
            ends.update(json.loads(fleet.log_of(readers).splitlines()[-1]))

    event_streams = PRINTERS * stall.events_per_job + stall.all_events
    growth = peaks[-1] - peaks[0]
    publish(
        {
            "test": request.node.name,
            "seconds": round(time.monotonic() - started, 1),
            "rounds": stall.rounds,
            "output_mb_per_round": PRINTERS * 2,
            "stalled_event_streams_per_round": event_streams,
            "stalled_log_streams_per_round": PRINTERS * LOG_READERS_PER_JOB,
            "peak_rss_mib_after_each_round": [round(peak / MiB, 1) for peak in peaks],
            "growth_after_first_round_mib": round(growth / MiB, 1),
            "event_streams_ended": dict(ends),
        }
    )
    assert growth < GROWTH_BOUND, [peak // MiB for peak in peaks]
    assert ends == {"RESOURCE_EXHAUSTED": event_streams * stall.rounds}


async def _print(client: Client, gate: Path, count: int) -> None:
    jobs = [
        await client.submit(PRINT, env={"GATE": str(gate), "LINE": LINE}, max_retries=0)
        for _ in range(count)
    ]
    for job in jobs:
        assert (await client.wait(job.id, timeout=120)).state is JobState.SUCCEEDED


async def _stalled(fleet: Fleet, readers: subprocess.Popen[bytes]) -> None:
    """Wait until the readers' process has opened its streams and stopped itself."""

    async def stopped() -> bool:
        assert readers.poll() is None, fleet.log_of(readers)
        state = Path(f"/proc/{readers.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return STALLED in fleet.log_of(readers) and state == "T"

    await eventually(stopped, timeout=60)
