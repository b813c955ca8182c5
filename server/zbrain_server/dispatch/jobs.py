"""The operations on jobs that every edge offers (gRPC today), in domain terms.

An edge validates and translates its request, resolves the caller, and calls
one of these; it translates the answer back. So the organisation checks, the
follow loops of logs and events and the artifact rules are written once,
whatever the wire. Each operation takes the `Caller` it acts for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from zbrain.errors import (
    EVENTS_PURGED,
    SLOW_SUBSCRIBER,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
)
from zbrain.models import WaitingCause

from ..config import ServerConfig
from ..core import lifecycle
from ..core.access import Caller, check_visible
from ..core.limits import WaitingFacts, artifact_quota_exceeded, hold
from ..core.model import (
    Artifact,
    AttemptResult,
    CancelOutcome,
    EventRecord,
    Job,
    JobQuery,
    Lease,
    LogLine,
    LogRecord,
    NewJob,
    WorkerPresence,
    event_size,
    line_size,
    now_us,
)
from ..store import JobStore
from ..store.blobs import BlobStore
from .bus import EventBus, SubscriberTooSlow
from .dispatcher import Dispatcher
from .signals import JobSignals, wait_for

T = TypeVar("T")

# A follower re-reads the store at least this often even without a nudge.
FOLLOW_RECHECK_S = 1.0


def chunked(items: Sequence[T], size_of: Callable[[T], int], max_bytes: int) -> Iterator[list[T]]:
    """The items in runs of at most `max_bytes` (an item larger than that alone):
    what one streamed message may carry."""
    run: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if run and size + item_size > max_bytes:
            yield run
            run, size = [], 0
        run.append(item)
        size += item_size
    if run:
        yield run


class Jobs:
    """Jobs, their logs, events and artifacts, for callers of any edge."""

    def __init__(
        self,
        config: ServerConfig,
        store: JobStore,
        dispatcher: Dispatcher,
        blobs: BlobStore,
        signals: JobSignals,
        bus: EventBus,
    ) -> None:
        self._config = config
        self._store = store
        self._dispatcher = dispatcher
        self._blobs = blobs
        self._signals = signals
        self._bus = bus

    # -- clients ---------------------------------------------------------------------

    async def submit(self, jobs: Sequence[NewJob]) -> list[tuple[Job, bool]]:
        """Store new jobs (all or none); each with True when it repeats an earlier one."""
        return await self._dispatcher.submit(jobs)

    async def get(self, caller: Caller, job_id: str) -> Job:
        """The job, or NotFoundError when it does not exist or belongs to another org."""
        job = await self._store.get_job(job_id)
        check_visible(caller, job.org_id, f"job {job_id}")
        return job

    async def settings_changed(self) -> None:
        """An org's settings changed here: apply them on this replica now
        (others read them within a tick) and let a resumed org's jobs go."""
        await self._dispatcher.refresh_org_settings()
        self._dispatcher.kick()

    def has_worker_for(self, job: Job) -> bool:
        """Whether a worker connected here serves the job's org with the
        labels it requires."""
        return self._dispatcher.has_worker_for(job.org_id, job.requires)

    async def waiting(self, job: Job) -> tuple[WaitingCause, str]:
        """For a runnable job (PENDING or RETRYING, due) what holds it, as a
        kind and in words (`core.limits.hold`); UNSPECIFIED and "" for any
        other job. Workers are those connected to this server; the counts are
        read now, so a job may be leased a moment after this says it waits."""
        due = job.next_run_time_us is None or job.next_run_time_us <= now_us()
        if not job.state.is_runnable or not due:
            return WaitingCause.UNSPECIFIED, ""
        settings = await self._store.orgs.get(job.org_id)
        org_running, key_running = await self._store.orgs.running(job.org_id, job.concurrency_key)
        facts = WaitingFacts(
            settings=settings,
            org_running=org_running,
            key_running=key_running,
            bucket_starts=await self._store.orgs.starts_left(settings, now_us()),
            worker_matches=self.has_worker_for(job),
        )
        return hold(job.requires, job.labels, job.concurrency_key, job.concurrency_limit, facts)

    async def links(self, job: Job) -> tuple[list[str], list[str]]:
        """The ids of the jobs that wait (or waited) for a job, and of its reruns."""
        if not job.has_children:
            return [], (await self._store.job_links(job.id))[1]
        return await self._store.job_links(job.id)

    async def rerun(
        self,
        caller: Caller,
        job_id: str,
        input_json: str | None,
        trace_context: Mapping[str, str],
    ) -> Job:
        """Submit a finished job again as a new job linked to it (`lifecycle.rerun`)."""
        job = await self.get(caller, job_id)
        [(created, _)] = await self.submit([lifecycle.rerun(job, input_json, trace_context)])
        return created

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        """One page of jobs (the query's org is already the caller's to read)."""
        return await self._store.list_jobs(query)

    async def cancel(self, caller: Caller, job_id: str) -> tuple[Job, CancelOutcome]:
        await self.get(caller, job_id)
        return await self._dispatcher.cancel(job_id)

    async def logs(
        self, caller: Caller, job_id: str, after: int, *, follow: bool
    ) -> AsyncIterator[list[LogLine]]:
        """The job's lines after sequence `after`, a page at a time; with
        `follow`, new ones as they arrive until the job finishes."""
        await self.get(caller, job_id)  # NotFoundError before any line
        page = self._config.limits.log_page_lines
        message_bytes = self._config.limits.stream_message_bytes
        with self._signals.follow(job_id) as changed:
            while True:
                # Read the job's state before the lines: if it was finished then,
                # every line it will ever have is already stored.
                finished = (await self._store.get_job(job_id)).state.is_terminal
                # A page of one message at a time: a reader that stops reading
                # holds one message here, however much the job printed.
                lines = await self._store.read_logs(job_id, after, page, max_bytes=message_bytes)
                if lines:
                    after = lines[-1].sequence
                    for run in chunked(lines, line_size, message_bytes):
                        yield run
                    continue
                if not follow or finished:
                    return
                await wait_for(changed, FOLLOW_RECHECK_S)

    async def last_event_sequence(self) -> int:
        """The sequence of the last event committed (0 if none)."""
        return await self._store.last_event_sequence()

    async def events(
        self, org_id: str, topic_prefix: str, start: int | None, *, follow: bool
    ) -> AsyncIterator[list[EventRecord]]:
        """Recorded events of an org after sequence `start` (None: after the
        last one committed when the stream opens), a page at a time; with
        `follow`, live ones as they commit. OutOfRangeError when retention
        removed some of those asked for; ResourceExhaustedError, naming where
        to resume, when the reader falls a buffer behind."""
        page = self._config.limits.event_page_events
        message_bytes = self._config.limits.stream_message_bytes
        # Subscribe before reading where to start and the backlog: an event
        # committed meanwhile is in one or both (above the end read for
        # `start` None), and the sequence check below drops the copy.
        with self._bus.subscribe(org_id, topic_prefix) as live:
            if start is None:
                last = await self._store.last_event_sequence()
            else:
                last = start
                purged = await self._store.events_purged_through()
                if last < purged:
                    raise OutOfRangeError(
                        f"events up to sequence {purged} were removed by retention; "
                        f"the oldest available is {purged + 1} "
                        f"(ask for after_sequence >= {purged})",
                        # Where to resume, for programs (the console) that must
                        # not read the words.
                        reason=EVENTS_PURGED,
                        metadata={"resume_after_sequence": str(purged)},
                    )
            # The backlog a page of one message at a time: a reader that stops
            # reading holds one message here, however large the history.
            while backlog := await self._store.read_events(
                org_id, topic_prefix, last, page, max_bytes=message_bytes
            ):
                last = backlog[-1].sequence
                for run in chunked(backlog, event_size, message_bytes):
                    yield run
            while follow:
                try:
                    batch = [r for r in await live.next_batch() if r.sequence > last]
                except SubscriberTooSlow:
                    raise ResourceExhaustedError(
                        f"subscriber too slow: more than {self._bus.buffer_size} events or "
                        f"{self._bus.buffer_bytes} bytes behind (ZBRAIN_EVENT_BUFFER, "
                        f"ZBRAIN_EVENT_BUFFER_BYTES); resume with after_sequence={last}",
                        reason=SLOW_SUBSCRIBER,
                        metadata={"resume_after_sequence": str(last)},
                    ) from None
                if batch:
                    last = batch[-1].sequence
                    for run in chunked(batch, event_size, message_bytes):
                        yield run

    async def artifact(
        self, caller: Caller, job_id: str, name: str
    ) -> tuple[Artifact, AsyncIterator[bytes]]:
        """One artifact of a job and its content, in chunks."""
        job = await self.get(caller, job_id)
        artifact = next((a for a in job.artifacts if a.name == name), None)
        if artifact is None:
            raise NotFoundError(f"job {job.id} has no artifact named {name!r}")
        return artifact, self._blobs.read(artifact.sha256)

    def workers(self, caller: Caller, org_id: str) -> list[WorkerPresence]:
        """The workers connected to any replica that the caller may see, by
        id: an admin sees all (or those serving `org_id`), others only those
        serving their own organisation. Another replica's workers are as it
        last published them (`dispatch.presence`)."""
        wanted = caller.org_id or org_id
        return [
            worker
            for worker in self._dispatcher.directory.workers()
            if not wanted or wanted in worker.org_ids
        ]

    # -- workers on the unary API -------------------------------------------------------

    async def acquire(
        self, worker_id: str, org_ids: Sequence[str], max_jobs: int, wait_s: float
    ) -> list[Lease]:
        return await self._dispatcher.acquire(worker_id, org_ids, max_jobs, wait_s)

    async def give_back(self, leases: list[Lease]) -> None:
        """Return leases acquired but not handed to their worker."""
        await self._dispatcher.give_back(leases)

    async def _own_lease(self, caller: Caller, job_id: str) -> None:
        """A worker bound to an org may report only on that org's jobs."""
        if caller.org_id is not None:  # unrestricted callers need no extra read
            await self.get(caller, job_id)

    async def renew(self, caller: Caller, job_id: str, lease_epoch: int) -> Job:
        await self._own_lease(caller, job_id)
        return await self._dispatcher.renew(job_id, lease_epoch)

    async def append_logs(
        self, caller: Caller, job_id: str, lease_epoch: int, records: Sequence[LogRecord]
    ) -> list[LogLine]:
        await self._own_lease(caller, job_id)
        return await self._dispatcher.append_logs(job_id, lease_epoch, records)

    async def complete(
        self, caller: Caller, job_id: str, lease_epoch: int, result: AttemptResult
    ) -> Job:
        await self._own_lease(caller, job_id)
        return await self._dispatcher.complete(job_id, lease_epoch, result)

    async def upload(
        self,
        caller: Caller,
        job_id: str,
        lease_epoch: int,
        announced: Artifact,
        chunks: AsyncIterator[bytes],
    ) -> Artifact:
        """Store an artifact of a leased job. The lease, the job's room and
        the org's artifact quota are checked before any content is read, so a
        stale worker wastes nothing; the quota again when the artifact is
        recorded (uploads of one org may run at once)."""
        job = await self.get(caller, job_id)
        lifecycle.check_lease(job, lease_epoch)
        self._check_artifact_room(job, announced)
        quota = (await self._store.orgs.get(job.org_id)).max_artifact_bytes
        if quota:
            used = (await self._store.orgs.usage(job.org_id)).artifact_bytes
            replaced = sum(a.size_bytes for a in job.artifacts if a.name == announced.name)
            if used - replaced + announced.size_bytes > quota:
                raise artifact_quota_exceeded(
                    job.org_id, used, announced.size_bytes - replaced, quota
                )
        stored = await self._blobs.write(chunks, announced, self._config.limits.max_artifact_bytes)
        await self._store.add_artifact(job_id, lease_epoch, stored, org_max_bytes=quota)
        self._signals.changed(job_id)
        return stored

    def _check_artifact_room(self, job: Job, announced: Artifact) -> None:
        """RESOURCE_EXHAUSTED when the job may hold no more (or no larger)
        artifacts (the server's max_artifacts_per_job and
        max_artifacts_bytes_per_job)."""
        limits = self._config.limits
        others = [a for a in job.artifacts if a.name != announced.name]
        if len(others) >= limits.max_artifacts_per_job:
            raise ResourceExhaustedError(
                f"job {job.id} has {len(others)} artifacts; the limit "
                f"(max_artifacts_per_job) is {limits.max_artifacts_per_job}"
            )
        total = sum(a.size_bytes for a in others) + announced.size_bytes
        limit = limits.max_artifacts_bytes_per_job
        if total > limit:
            raise ResourceExhaustedError(
                f"job {job.id}'s artifacts would total {total} bytes; "
                f"the limit (max_artifacts_bytes_per_job) is {limit}"
            )
