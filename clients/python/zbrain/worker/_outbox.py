"""What a worker owes its server: log lines, results and control messages,
kept across broken streams until a stream has written them.

A message leaves the outbox only once it was written, so when a stream breaks
mid-way the rest waits for the next one. A write is not a delivery, though:
the last results written are remembered and sent again on the next stream
(a repeat of one already applied is refused by its lease epoch).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from ..protocol import BATCH_BYTES
from ..v1 import job_pb2
from ..v1 import worker_service_pb2 as wpb

MAX_LINES_PER_MESSAGE = 5000
MAX_RESULTS_PER_MESSAGE = 500
FLUSH_TIMEOUT_S = 5.0

LeaseKey = tuple[str, int]
"""A lease as (job id, lease epoch)."""


class Outbox:
    """Lines and control messages waiting for the stream, in the order owed."""

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._lines: dict[LeaseKey, list[job_pb2.LogLine]] = {}
        self._control: list[wpb.ConnectRequest] = []
        # The last results written on the current stream (at most a lease TTL
        # old, and a few per slot), to send again after a break. An older
        # result lost with a dying server costs a retry.
        self._written_results: collections.deque[tuple[float, wpb.ConnectRequest]] = (
            collections.deque()
        )
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set when the writer has sent all it was given
        self.batch_results = False  # the server's welcome says it reads WorkerResults
        self.lease_ttl_s = 30.0

    # -- what the worker queues ------------------------------------------------

    def log(self, lease: LeaseKey, line: job_pb2.LogLine) -> None:
        self._lines.setdefault(lease, []).append(line)
        self._wake.set()

    def send(self, message: wpb.ConnectRequest) -> None:
        self._control.append(message)
        self._wake.set()

    # -- what it holds -------------------------------------------------------------

    def owes(self) -> bool:
        """Whether lines or control messages wait to be written."""
        return bool(self._lines or self._control)

    def leases(self) -> set[LeaseKey]:
        """The leases with lines or a result still to be written."""
        held = set(self._lines)
        held.update(
            (m.result.lease.job_id, m.result.lease.lease_epoch)
            for m in self._control
            if m.HasField("result")
        )
        return held

    def after_break(self) -> None:
        """A stream broke: the results it last wrote go first on the next one,
        and heartbeats are dropped (the next hello claims the leases anyway)."""
        replay = [message for _, message in self._written_results]
        self._written_results.clear()
        self._control = replay + [m for m in self._control if not m.HasField("heartbeat")]

    def clear(self) -> None:
        """Forget everything owed (the leases are lost, or the worker stops)."""
        self._lines.clear()
        self._control.clear()
        self._written_results.clear()

    # -- writing -------------------------------------------------------------------

    async def pump(self, call: Any) -> None:
        """Write to the stream for as long as it lives; the stream's only writer.

        Every line queued so far goes out before the next control message, so
        an attempt's lines always reach the server before its result.
        """
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            while self._lines or self._control:
                while self._lines:
                    (job_id, epoch), lines = next(iter(self._lines.items()))
                    batch = lines[:MAX_LINES_PER_MESSAGE]
                    ref = wpb.LeaseRef(job_id=job_id, lease_epoch=epoch)
                    await call.write(
                        wpb.ConnectRequest(logs=wpb.WorkerLogs(lease=ref, lines=batch))
                    )
                    del lines[: len(batch)]
                    if not lines:
                        del self._lines[(job_id, epoch)]
                if self._control:
                    sent = self._next_control()
                    if len(sent) > 1:
                        outcomes = [message.result for message in sent]
                        await call.write(
                            wpb.ConnectRequest(results=wpb.WorkerResults(results=outcomes))
                        )
                    else:
                        await call.write(sent[0])
                    del self._control[: len(sent)]
                    for message in sent:
                        if message.HasField("result"):
                            self._remember_written(loop.time(), message)
            self._idle.set()
            await self._wake.wait()

    def _next_control(self) -> list[wpb.ConnectRequest]:
        """What to write next from the control queue: its first message or,
        when the server reads WorkerResults, the run of results heading it,
        up to about BATCH_BYTES (a bigger result goes alone)."""
        batch = self._control[:1]
        if not self.batch_results or not batch[0].HasField("result"):
            return batch
        size = batch[0].ByteSize()
        for message in self._control[1:MAX_RESULTS_PER_MESSAGE]:
            size += message.ByteSize()
            if not message.HasField("result") or size > BATCH_BYTES:
                break
            batch.append(message)
        return batch

    def _remember_written(self, now: float, result: wpb.ConnectRequest) -> None:
        self._written_results.append((now, result))
        while self._written_results and (
            now - self._written_results[0][0] > self.lease_ttl_s
            or len(self._written_results) > 4 * self._concurrency
        ):
            self._written_results.popleft()

    async def flush(self) -> None:
        """Wait until everything queued was written, or FLUSH_TIMEOUT_S passed
        (a stream that stopped taking writes)."""
        self._idle.clear()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await self._idle.wait()
