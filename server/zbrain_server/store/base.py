"""The storage interface every backend implements.

It is deliberately small and speaks only domain objects: no SQL, rows or
driver exceptions cross it (backends raise `zbrain.errors` classes, chaining
the driver's error). Decisions about state changes are made by
`zbrain_server.lifecycle`; a backend reads, asks the lifecycle, and writes the
result atomically with a compare-and-set on the old state and lease epoch.
The conformance suite in tests/store/ is what every backend must pass.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from zbrain.errors import ZBrainError

from ..auth import Token
from ..lifecycle import RetryPolicy
from ..model import (
    Artifact,
    AttemptResult,
    CancelOutcome,
    EventRecord,
    Job,
    JobQuery,
    JobState,
    Lease,
    LogLine,
    LogRecord,
    NewJob,
)

EventListener = Callable[[list[EventRecord]], None]
"""Called with each transaction's events, numbered, after it commits, in sequence order."""


class JobStore(abc.ABC):
    """Durable storage of jobs, leases, logs and artifact metadata."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the store lives, for people to read (never with a password)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and run pending schema migrations."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release the database."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise StoreError unless the store can be read and written."""

    @abc.abstractmethod
    async def create_jobs(
        self, jobs: Sequence[NewJob], now_us: int, *, pending_limit: int | None = None
    ) -> list[tuple[Job, bool]]:
        """Store new jobs atomically (all or none).

        With `pending_limit`, an org may hold at most that many PENDING or
        RETRYING jobs afterwards; otherwise ResourceExhaustedError, nothing stored.

        A job whose request_id matches an earlier job of the same org is not
        created again: that earlier job is returned with True beside it.
        """

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> Job:
        """Return one job with its artifacts; NotFoundError when unknown."""

    @abc.abstractmethod
    async def list_jobs(self, query: JobQuery) -> list[Job]:
        """Return up to query.limit jobs after query.after_id in the query's order."""

    @abc.abstractmethod
    async def cancel_job(self, job_id: str, now_us: int) -> tuple[Job, CancelOutcome]:
        """Cancel a job as the lifecycle decides; return it as stored after."""

    @abc.abstractmethod
    async def lease_jobs(
        self,
        worker_id: str,
        org_ids: Sequence[str],
        max_jobs: int,
        now_us: int,
        lease_ttl_us: int,
    ) -> list[Lease]:
        """Lease up to max_jobs runnable jobs of the given orgs to a worker.

        Within an org, higher priority first, then submission order; the
        slots are shared round-robin between orgs, starting with the first
        org given, so that callers can rotate it for fairness.
        """

    @abc.abstractmethod
    async def leases_of(self, worker_id: str) -> list[tuple[str, int]]:
        """The (job id, lease epoch) of every attempt leased to a worker and running."""

    @abc.abstractmethod
    async def return_lease(self, job_id: str, lease_epoch: int, now_us: int) -> Job:
        """Give back a lease nobody started: the job is PENDING again, its attempt
        not counted; StaleLeaseError when the lease is not live."""

    @abc.abstractmethod
    async def renew_lease(
        self, job_id: str, lease_epoch: int, now_us: int, lease_ttl_us: int
    ) -> Job:
        """Extend a live lease; StaleLeaseError when it is not live."""

    async def finish_attempt(
        self,
        job_id: str,
        lease_epoch: int,
        result: AttemptResult,
        now_us: int,
        retry: RetryPolicy,
    ) -> Job:
        """Record an attempt's outcome; StaleLeaseError when the lease is not live."""
        [outcome] = await self.finish_attempts([(job_id, lease_epoch, result)], now_us, retry)
        if isinstance(outcome, ZBrainError):
            raise outcome
        return outcome

    @abc.abstractmethod
    async def finish_attempts(
        self,
        reports: Sequence[tuple[str, int, AttemptResult]],
        now_us: int,
        retry: RetryPolicy,
    ) -> list[Job | ZBrainError]:
        """Record several outcomes (job id, lease epoch, result) in one write,
        each on its own: the job as finished, or the error that refused that
        report (stale, unknown). A worker reports many outcomes at once under
        load, so they share one piece of work, not one each."""

    @abc.abstractmethod
    async def expire_leases(self, now_us: int, retry: RetryPolicy) -> list[Job]:
        """Fail every attempt whose lease expired before now ("worker lost")."""

    @abc.abstractmethod
    async def time_out_attempts(self, now_us: int, grace_us: int, retry: RetryPolicy) -> list[Job]:
        """Fail every attempt running longer than its timeout plus grace."""

    @abc.abstractmethod
    async def next_run_time(self, org_ids: Sequence[str]) -> int | None:
        """The earliest time a job of these orgs becomes runnable, if any waits."""

    @abc.abstractmethod
    async def append_logs(
        self,
        job_id: str,
        lease_epoch: int,
        records: Sequence[LogRecord],
        *,
        max_bytes: int | None = None,
    ) -> list[LogLine]:
        """Append lines to a leased job, numbering them; StaleLeaseError if not live.

        With `max_bytes`, lines past the job's log budget are dropped and one
        SYSTEM line says so; after that the job's log takes nothing more.
        """

    @abc.abstractmethod
    async def read_logs(self, job_id: str, after_sequence: int, limit: int) -> list[LogLine]:
        """Return up to limit lines with a sequence above after_sequence, in order."""

    @abc.abstractmethod
    async def add_artifact(self, job_id: str, lease_epoch: int, artifact: Artifact) -> None:
        """Record an uploaded artifact of a leased job (replacing one of the same name)."""

    @abc.abstractmethod
    async def purge_finished(self, finished_before_us: int) -> int:
        """Delete terminal jobs finished before the time, with logs and artifacts."""

    @abc.abstractmethod
    async def add_token(self, token: Token) -> None:
        """Store a new API token (its secret's hash only)."""

    @abc.abstractmethod
    async def find_token(self, token_id: str) -> Token | None:
        """The token with this id, revoked or not; None if there is none."""

    @abc.abstractmethod
    async def list_tokens(self, org_id: str | None) -> list[Token]:
        """Tokens of one org (None: all), oldest first."""

    @abc.abstractmethod
    async def revoke_token(self, token_id: str, now_us: int) -> Token:
        """Revoke a token (a second revoke keeps the first time); NotFoundError if unknown."""

    @abc.abstractmethod
    async def has_tokens(self) -> bool:
        """Whether any unrevoked token exists (then auth is on by default)."""

    @abc.abstractmethod
    async def count_unfinished(self) -> dict[tuple[str, JobState], int]:
        """How many jobs are PENDING, RUNNING or RETRYING, by org and state."""

    @abc.abstractmethod
    async def referenced_blobs(self) -> set[str]:
        """The sha256 of every blob some stored artifact refers to."""

    @abc.abstractmethod
    def set_event_listener(self, listener: EventListener | None) -> None:
        """Receive every committed transaction's events, in sequence order.

        Every change the store makes (submitted, state changed, logged) is
        recorded as an event in the same transaction as the change itself.
        """

    @abc.abstractmethod
    async def record_events(self, records: Sequence[EventRecord]) -> None:
        """Record events that belong to no job change (worker presence)."""

    @abc.abstractmethod
    async def read_events(
        self, org_id: str | None, topic_prefix: str, after_sequence: int, limit: int
    ) -> list[EventRecord]:
        """Events after a sequence, of one org (None: all) under a topic prefix, in order."""

    @abc.abstractmethod
    async def events_purged_through(self) -> int:
        """The highest sequence deleted by retention (0 if none): older ones are gone."""

    @abc.abstractmethod
    async def purge_events(self, before_us: int) -> int:
        """Delete events recorded before a time; return how many."""
