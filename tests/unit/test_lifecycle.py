"""The job state machine: which transitions exist and what each decision stores."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from zbrain.errors import IllegalTransitionError, StaleLeaseError
from zbrain_server.core import lifecycle
from zbrain_server.core.lifecycle import ALLOWED_TRANSITIONS, RetryPolicy, check_transition
from zbrain_server.core.model import (
    AttemptOutcome,
    AttemptResult,
    CancelOutcome,
    Cause,
    Job,
    JobState,
    NewJob,
)

T0 = 1_700_000_000_000_000
SECOND = 1_000_000
TTL = 30 * SECOND
RETRY = RetryPolicy(base_us=SECOND, cap_us=60 * SECOND)

LEGAL = {
    (JobState.PENDING, JobState.RUNNING),
    (JobState.PENDING, JobState.CANCELED),
    (JobState.RUNNING, JobState.SUCCEEDED),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.RUNNING, JobState.RETRYING),
    (JobState.RUNNING, JobState.CANCELED),
    (JobState.RUNNING, JobState.PENDING),  # a lease returned before its worker saw it
    (JobState.RETRYING, JobState.RUNNING),
    (JobState.RETRYING, JobState.CANCELED),
    (JobState.SCHEDULED, JobState.PENDING),  # a delayed job's time came
    (JobState.SCHEDULED, JobState.CANCELED),
    (JobState.BLOCKED, JobState.PENDING),  # released
    (JobState.BLOCKED, JobState.SCHEDULED),  # released before its own time
    (JobState.BLOCKED, JobState.CANCELED),  # a parent failed, or canceled
}
ALL_PAIRS = list(itertools.product(JobState, JobState))

MakeJob = Callable[..., Job]


@pytest.fixture
def make_job() -> MakeJob:
    """A stored job, PENDING by default; keyword arguments replace any field."""

    def make_job(**fields: Any) -> Job:
        new = NewJob(
            org_id="acme",
            cmd=("true",),
            input_json="null",
            env={},
            timeout_us=60 * SECOND,
            max_retries=2,
        )
        job = lifecycle.submitted_job("01939a4e-8b2c-7def-8123-456789abcdef", new, T0)
        return replace(job, **fields)

    return make_job


@pytest.fixture
def running(make_job: MakeJob) -> MakeJob:
    """A job in its `attempt`-th attempt (1 by default), leased to w1 under epoch 4."""

    def running(**fields: Any) -> Job:
        defaults: dict[str, Any] = dict(
            state=JobState.RUNNING,
            attempt=1,
            lease_epoch=4,
            worker_id="w1",
            start_time_us=T0,
            lease_expire_time_us=T0 + TTL,
            next_run_time_us=None,
        )
        return make_job(**{**defaults, **fields})

    return running


# -- check_transition ------------------------------------------------------------


def pair_id(pair: tuple[JobState, JobState]) -> str:
    return f"{pair[0].name}->{pair[1].name}"


def test_the_transition_table_is_the_documented_one() -> None:
    table = {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert set(ALLOWED_TRANSITIONS) == set(JobState)


@pytest.mark.parametrize("pair", sorted(LEGAL), ids=pair_id)
def test_legal_transitions_are_allowed(pair: tuple[JobState, JobState]) -> None:
    check_transition(*pair)


@pytest.mark.parametrize("pair", [p for p in ALL_PAIRS if p not in LEGAL], ids=pair_id)
def test_illegal_transitions_are_refused(pair: tuple[JobState, JobState]) -> None:
    with pytest.raises(IllegalTransitionError, match=f"{pair[0].name} to {pair[1].name}"):
        check_transition(*pair)


@pytest.mark.parametrize("state", sorted(s for s in JobState if s.is_terminal))
def test_terminal_states_have_no_way_out(state: JobState) -> None:
    assert ALLOWED_TRANSITIONS[state] == frozenset()


# -- start_attempt ---------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.RETRYING])
def test_start_attempt_leases_a_runnable_job(make_job: MakeJob, state: JobState) -> None:
    job = make_job(state=state, attempt=1, lease_epoch=3, next_run_time_us=T0)

    change = lifecycle.start_attempt(job, "w9", T0 + SECOND, TTL)

    after = change.after
    assert change.before == job
    assert after.state is JobState.RUNNING
    assert (after.attempt, after.lease_epoch) == (2, 4)
    assert after.worker_id == "w9"
    assert after.start_time_us == after.update_time_us == T0 + SECOND
    assert after.lease_expire_time_us == T0 + SECOND + TTL
    assert after.next_run_time_us is None
    assert "w9" in change.reason


@pytest.mark.parametrize(
    "state", [JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED]
)
def test_start_attempt_refuses_a_job_that_is_not_runnable(
    make_job: MakeJob, state: JobState
) -> None:
    with pytest.raises(IllegalTransitionError):
        lifecycle.start_attempt(make_job(state=state), "w1", T0, TTL)


# -- renew_lease -----------------------------------------------------------------


def test_renew_lease_moves_the_expiry_only(running: MakeJob) -> None:
    job = running()

    renewed = lifecycle.renew_lease(job, 4, T0 + 10 * SECOND, TTL)

    assert renewed == replace(
        job, lease_expire_time_us=T0 + 10 * SECOND + TTL, update_time_us=T0 + 10 * SECOND
    )


@pytest.mark.parametrize("epoch", [3, 5])
def test_renew_lease_refuses_another_epoch(running: MakeJob, epoch: int) -> None:
    with pytest.raises(StaleLeaseError):
        lifecycle.renew_lease(running(), epoch, T0, TTL)


@pytest.mark.parametrize("state", [JobState.RETRYING, JobState.SUCCEEDED, JobState.CANCELED])
def test_renew_lease_refuses_a_job_that_is_not_running(make_job: MakeJob, state: JobState) -> None:
    with pytest.raises(StaleLeaseError):
        lifecycle.renew_lease(make_job(state=state, lease_epoch=4), 4, T0, TTL)


# -- finish_attempt --------------------------------------------------------------


def finish(job: Job, result: AttemptResult, now_us: int = T0 + SECOND) -> lifecycle.Change:
    return lifecycle.finish_attempt(job, job.lease_epoch, result, now_us, RETRY)


def test_success_ends_the_job_with_its_output(running: MakeJob) -> None:
    change = finish(running(), AttemptResult(AttemptOutcome.SUCCEEDED, output_json="[1]"))

    after = change.after
    assert after.state is JobState.SUCCEEDED
    assert after.output_json == "[1]"
    assert after.finish_time_us == after.update_time_us == T0 + SECOND
    assert after.lease_expire_time_us is None


def test_success_wins_over_a_requested_cancel(running: MakeJob) -> None:
    change = finish(running(cancel_requested=True), AttemptResult(AttemptOutcome.SUCCEEDED))

    assert change.after.state is JobState.SUCCEEDED


def test_a_canceled_attempt_cancels_the_job(running: MakeJob) -> None:
    change = finish(running(max_retries=5), AttemptResult(AttemptOutcome.CANCELED))

    assert change.after.state is JobState.CANCELED
    assert change.after.finish_time_us == T0 + SECOND
    assert change.after.lease_expire_time_us is None


@pytest.mark.parametrize(
    "outcome", [AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.INTERRUPTED]
)
def test_a_failure_after_a_cancel_request_cancels_instead_of_retrying(
    running: MakeJob, outcome: AttemptOutcome
) -> None:
    change = finish(running(max_retries=5, cancel_requested=True), AttemptResult(outcome))

    assert change.after.state is JobState.CANCELED
    assert change.after.next_run_time_us is None


@pytest.mark.parametrize(
    "outcome", [AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.INTERRUPTED]
)
def test_a_failure_with_retries_left_schedules_a_retry(
    running: MakeJob, outcome: AttemptOutcome
) -> None:
    now = T0 + SECOND
    change = finish(running(attempt=2, max_retries=2), AttemptResult(outcome), now)

    after = change.after
    assert after.state is JobState.RETRYING
    assert after.finish_time_us is None
    assert after.lease_expire_time_us is None
    # The second retry waits between half and all of base * 2.
    assert after.next_run_time_us is not None
    assert now + SECOND <= after.next_run_time_us <= now + 2 * SECOND
    assert "retry" in change.reason


@pytest.mark.parametrize(
    "outcome", [AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.INTERRUPTED]
)
def test_a_failure_with_no_retries_left_fails_the_job(
    running: MakeJob, outcome: AttemptOutcome
) -> None:
    change = finish(running(attempt=3, max_retries=2), AttemptResult(outcome))

    assert change.after.state is JobState.FAILED
    assert change.after.finish_time_us == T0 + SECOND
    assert change.after.lease_expire_time_us is None


def test_max_retries_counts_retries_not_attempts(running: MakeJob) -> None:
    failed = AttemptResult(AttemptOutcome.FAILED)

    states = [finish(running(attempt=n, max_retries=2), failed).after.state for n in (1, 2, 3)]

    assert states == [JobState.RETRYING, JobState.RETRYING, JobState.FAILED]


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (AttemptResult(AttemptOutcome.FAILED, error="boom"), "boom"),
        (AttemptResult(AttemptOutcome.FAILED, exit_code=3), "exited with status 3"),
        (AttemptResult(AttemptOutcome.FAILED), "failed"),
        (AttemptResult(AttemptOutcome.TIMED_OUT), "timed out"),
        (AttemptResult(AttemptOutcome.TIMED_OUT, error="took 61s"), "took 61s"),
        (AttemptResult(AttemptOutcome.INTERRUPTED), "interrupted: the worker shut down"),
    ],
    ids=["error", "exit_code", "bare", "timed_out", "timed_out_error", "interrupted"],
)
def test_a_failure_records_why_it_failed(
    running: MakeJob, result: AttemptResult, error: str
) -> None:
    assert finish(running(), result).after.last_error == error


@pytest.mark.parametrize(
    ("outcome", "cause"),
    [
        (AttemptOutcome.SUCCEEDED, Cause.SUCCEEDED),
        (AttemptOutcome.FAILED, Cause.ATTEMPT_FAILED),
        (AttemptOutcome.TIMED_OUT, Cause.ATTEMPT_TIMED_OUT),
        (AttemptOutcome.CANCELED, Cause.CANCELED),
        (AttemptOutcome.INTERRUPTED, Cause.INTERRUPTED),
    ],
)
def test_an_attempt_ends_with_the_cause_its_outcome_stands_for(
    running: MakeJob, outcome: AttemptOutcome, cause: Cause
) -> None:
    change = finish(running(max_retries=1), AttemptResult(outcome))

    assert change.cause is change.after.cause is cause
    assert change.after.previous_state is JobState.RUNNING
    assert change.after.transition_time_us == T0 + SECOND


def test_a_failure_after_a_cancel_request_is_caused_by_the_cancel(running: MakeJob) -> None:
    change = finish(running(cancel_requested=True), AttemptResult(AttemptOutcome.FAILED))

    assert change.cause is Cause.CANCELED


def test_an_expired_lease_is_a_lost_worker(running: MakeJob) -> None:
    change = lifecycle.expire_lease(running(max_retries=1), T0 + SECOND, RETRY)

    assert (change.after.state, change.cause) == (JobState.RETRYING, Cause.LEASE_EXPIRED)
    assert change.after.last_error == lifecycle.LEASE_EXPIRED_ERROR


def test_an_overdue_attempt_is_ended_by_the_server(running: MakeJob) -> None:
    change = lifecycle.end_overdue(running(max_retries=0), T0 + SECOND, RETRY)

    assert (change.after.state, change.cause) == (JobState.FAILED, Cause.OVERDUE)
    assert change.after.last_error == lifecycle.OVERDUE_ERROR


def test_leasing_and_returning_a_lease_have_their_causes(make_job: MakeJob) -> None:
    leased = lifecycle.start_attempt(make_job(), "w1", T0, TTL)
    returned = lifecycle.return_lease(leased.after, leased.after.lease_epoch, T0 + SECOND)

    assert (leased.cause, returned.cause) == (Cause.LEASED, Cause.LEASE_RETURNED)
    assert returned.after.previous_state is JobState.RUNNING


@pytest.mark.parametrize("epoch", [3, 5])
def test_finish_attempt_refuses_another_epoch(running: MakeJob, epoch: int) -> None:
    with pytest.raises(StaleLeaseError):
        lifecycle.finish_attempt(
            running(), epoch, AttemptResult(AttemptOutcome.SUCCEEDED), T0, RETRY
        )


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.RETRYING, JobState.SUCCEEDED])
def test_finish_attempt_refuses_a_job_that_is_not_running(
    make_job: MakeJob, state: JobState
) -> None:
    job = make_job(state=state, lease_epoch=4)

    with pytest.raises(StaleLeaseError):
        lifecycle.finish_attempt(job, 4, AttemptResult(AttemptOutcome.SUCCEEDED), T0, RETRY)


# -- cancel ----------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.RETRYING])
def test_cancel_ends_a_waiting_job_at_once(make_job: MakeJob, state: JobState) -> None:
    change, outcome = lifecycle.cancel(make_job(state=state), T0 + SECOND)

    assert outcome is CancelOutcome.CANCELED
    assert change is not None
    assert change.after.state is JobState.CANCELED
    assert change.after.finish_time_us == T0 + SECOND
    assert change.after.next_run_time_us is None
    assert change.after.cancel_requested


def test_cancel_asks_a_running_job_to_stop(running: MakeJob) -> None:
    job = running()

    change, outcome = lifecycle.cancel(job, T0 + SECOND)

    assert outcome is CancelOutcome.CANCEL_REQUESTED
    assert change is not None
    assert change.after == replace(
        job,
        cancel_requested=True,
        update_time_us=T0 + SECOND,
        previous_state=JobState.RUNNING,
        cause=Cause.CANCEL_REQUESTED,
        reason=change.after.reason,
        transition_time_us=T0 + SECOND,
    )


def test_cancel_asks_a_running_job_only_once(running: MakeJob) -> None:
    change, outcome = lifecycle.cancel(running(cancel_requested=True), T0 + SECOND)

    assert outcome is CancelOutcome.CANCEL_REQUESTED
    assert change is None


@pytest.mark.parametrize("state", sorted(s for s in JobState if s.is_terminal))
def test_cancel_leaves_a_finished_job_alone(make_job: MakeJob, state: JobState) -> None:
    change, outcome = lifecycle.cancel(make_job(state=state), T0 + SECOND)

    assert outcome is CancelOutcome.ALREADY_TERMINAL
    assert change is None


# -- RetryPolicy -----------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 15))
def test_backoff_lies_between_half_and_all_of_the_capped_exponential(attempt: int) -> None:
    policy = RetryPolicy(base_us=SECOND, cap_us=300 * SECOND)
    ceiling = min(policy.cap_us, policy.base_us * 2 ** (attempt - 1))
    rng = random.Random(attempt)

    waits = [policy.backoff_us(attempt, rng) for _ in range(200)]

    assert all(ceiling // 2 <= wait <= ceiling for wait in waits)


def test_backoff_is_jittered() -> None:
    rng = random.Random(7)

    waits = {RETRY.backoff_us(3, rng) for _ in range(50)}

    assert len(waits) > 40


def test_backoff_spreads_over_the_whole_range() -> None:
    rng = random.Random(11)
    ceiling = 4 * SECOND

    waits = [RETRY.backoff_us(3, rng) for _ in range(1000)]

    assert min(waits) < ceiling * 0.55
    assert max(waits) > ceiling * 0.95


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [RETRY.backoff_us(n, random.Random(42)) for n in range(1, 6)]
    again = [RETRY.backoff_us(n, random.Random(42)) for n in range(1, 6)]

    assert first == again


def test_backoff_never_exceeds_the_cap_however_many_attempts() -> None:
    policy = RetryPolicy(base_us=SECOND, cap_us=10 * SECOND)
    rng = random.Random(3)

    assert all(policy.backoff_us(1000, rng) <= 10 * SECOND for _ in range(100))
