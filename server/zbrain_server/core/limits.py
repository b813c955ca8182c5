"""Sharing one server between teams: each organisation's settings, and the
pure rules the lease transaction applies with them (see docs/limits.md).

What holds a runnable job back, in the order the lease program checks it:
the organisation (or a label selector within it) is paused; no worker
offering the labels it requires asks for work; the organisation's running
jobs or starts per second are at their limit; its concurrency key is at its
limit. The store counts and locks (store/jobs.py); the decisions are here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zbrain.errors import ResourceExhaustedError, ZBrainError
from zbrain.models import WaitingCause


@dataclass(slots=True)
class OrgSettings:
    """What an organisation may use; 0 means none of its own (the server's
    default where there is one, else no limit)."""

    org_id: str
    max_running_jobs: int = 0
    max_starts_per_second: float = 0.0
    max_waiting_jobs: int = 0
    max_log_bytes: int = 0
    max_artifact_bytes: int = 0
    retention_days: int = 0
    paused: bool = False
    # Label selectors paused within the org: a job whose labels hold every
    # pair of one of them is not leased.
    paused_selectors: tuple[Mapping[str, str], ...] = ()
    update_time_us: int | None = None  # None: never set, all defaults

    @property
    def limits_leasing(self) -> bool:
        """Whether leasing must count and lock for this org (running jobs or
        starts per second); pauses are a filter and need neither."""
        return self.max_running_jobs > 0 or self.max_starts_per_second > 0


@dataclass(frozen=True, slots=True)
class OrgUsage:
    """The storage an organisation's stored jobs hold, against its quotas
    (max_log_bytes, max_artifact_bytes)."""

    log_bytes: int = 0
    artifact_bytes: int = 0


def artifact_quota_exceeded(org_id: str, used: int, adding: int, quota: int) -> ZBrainError:
    """The refusal of an upload past the org's artifact quota."""
    return ResourceExhaustedError(
        f"organisation {org_id!r} stores {used} bytes of artifacts; this one "
        f"({adding} bytes) would pass its quota (max_artifact_bytes) of {quota} bytes: "
        "retention frees room as old jobs go, or an admin may raise the quota"
    )


MAX_PAUSED_SELECTORS = 100
"""Label selectors an org may hold paused at once (settings stay small, and
each selector is a filter of every lease of the org)."""

DAY_US = 86_400 * 1_000_000
"""A retention day, in microseconds."""


def key_limit(concurrency_limit: int) -> int:
    """A job's limit on its key: 0 (unset) means one at a time."""
    return concurrency_limit if concurrency_limit > 0 else 1


def meets(requires: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a worker with `labels` may take a job that `requires` these:
    every key present, with the same value unless the value asked is empty."""
    for key, value in requires.items():
        offered = labels.get(key)
        if offered is None or (value and offered != value):
            return False
    return True


def selected(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Whether a job's labels hold every pair of a selector."""
    return all(labels.get(key) == value for key, value in selector.items())


def with_selector(
    selectors: Sequence[Mapping[str, str]], selector: Mapping[str, str], *, present: bool
) -> tuple[Mapping[str, str], ...]:
    """The paused selectors with one added (once) or removed."""
    others = tuple(s for s in selectors if dict(s) != dict(selector))
    return (*others, dict(selector)) if present else others


@dataclass(slots=True)
class Bucket:
    """An org's starts-per-second token bucket as stored: `tokens` left at
    `refill_time_us`. It holds one second's worth, at least one start, so a
    burst after a quiet spell is bounded by the rate itself."""

    tokens: float
    refill_time_us: int

    @staticmethod
    def capacity(rate: float) -> float:
        return max(1.0, rate)

    def refilled(self, rate: float, now_us: int) -> Bucket:
        """The bucket at `now_us`, filled at `rate` a second up to its capacity."""
        elapsed_s = max(0, now_us - self.refill_time_us) / 1e6
        return Bucket(min(self.capacity(rate), self.tokens + elapsed_s * rate), now_us)

    def starts(self) -> int:
        """How many starts it allows now."""
        return int(self.tokens + 1e-9)

    def until_next_us(self, rate: float) -> int:
        """How long until it allows one more start."""
        missing = max(0.0, 1.0 - self.tokens)
        return int(missing / rate * 1e6) + 1 if rate > 0 else 0


def full_bucket(rate: float, now_us: int) -> Bucket:
    """The bucket of an org that never started a job under its rate."""
    return Bucket(Bucket.capacity(rate), now_us)


@dataclass(slots=True)
class WaitingFacts:
    """What the store knows about a waiting job's org and key, for `hold`."""

    settings: OrgSettings
    org_running: int
    key_running: int
    bucket_starts: int | None  # None when the org has no rate
    worker_matches: bool


def hold(
    requires: Mapping[str, str],
    labels: Mapping[str, str],
    concurrency_key: str,
    concurrency_limit: int,
    facts: WaitingFacts,
) -> tuple[WaitingCause, str]:
    """What holds a runnable job, and the sentence `zbrain get` shows."""
    settings = facts.settings
    if settings.paused:
        return WaitingCause.PAUSED, "waiting: the organisation is paused"
    for selector in settings.paused_selectors:
        if selected(labels, selector):
            pairs = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            return WaitingCause.PAUSED, f"waiting: jobs labelled {pairs} are paused"
    if not facts.worker_matches:
        return WaitingCause.NO_WORKER, "waiting: no connected worker matches"
    limit = settings.max_running_jobs
    if limit and facts.org_running >= limit:
        return (
            WaitingCause.MAX_RUNNING,
            f"waiting: the organisation runs {facts.org_running} jobs, its limit "
            f"(max_running_jobs) is {limit}",
        )
    if facts.bucket_starts is not None and facts.bucket_starts < 1:
        return (
            WaitingCause.RATE,
            f"waiting: the organisation's limit of {settings.max_starts_per_second:g} "
            "starts per second is reached",
        )
    if concurrency_key and facts.key_running >= key_limit(concurrency_limit):
        return (
            WaitingCause.CONCURRENCY_KEY,
            f"waiting: concurrency key {concurrency_key!r} runs {facts.key_running} jobs, "
            f"its limit is {key_limit(concurrency_limit)}",
        )
    return WaitingCause.SLOTS, "waiting: for a free slot on a matching worker"
