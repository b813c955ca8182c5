"""Job dependencies in the store: linking a submitted graph, releasing and
canceling waiting children when a parent ends, and what a started child sees
of its parents.

A dependency is a row of `job_edges` (parent, child, condition), indexed by
parent, and the child's `depends_on` column lists its parents for reading.
A child counts the parents still to meet their conditions (`waiting_on`) and
a parent knows whether any child waits for it (`has_children`), so that:

- a job without dependencies costs nothing more to submit or to finish;
- when a parent with children ends, the write that ends it reads only its
  own BLOCKED children through the index, counts each one down, and releases
  or cancels it in the same transaction (`settle`, called by `Tx.save` for
  every job it makes terminal); below a canceled child, everything BLOCKED
  is read in one recursive query and settled in topological order (as is
  everything below a job a user cancels), so a chain 10,000 jobs deep
  costs a few statements, not a few per job. No task ever scans blocked
  jobs.

On PostgreSQL the rows are locked as they are read (parents before their
children, children in id order), so two replicas finishing two parents of one
child count it down one after the other, and a child submitted while its
parent ends either sees it ended or is seen by it.
"""

from __future__ import annotations

import collections
import graphlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zbrain.errors import FieldViolation, InvalidArgumentError

from ..core import lifecycle
from ..core.lifecycle import Change
from ..core.model import (
    Dependency,
    DependencyCondition,
    Job,
    JobState,
    Lease,
    NewJob,
    ParentOutcome,
    evolve,
)
from .ops import Execute, ExecuteMany, Fetch, Params, Program, Row
from .rows import dependencies_json, job_from_row

if TYPE_CHECKING:
    from .engine import Tx

CHILDREN_SHOWN = 1000
"""At most this many children (and reruns) of a job are listed by Get."""


def plan(
    jobs: Sequence[NewJob],
    results: list[tuple[Job, bool]],
    stored: dict[str, Job],
    max_depth: int,
) -> tuple[list[tuple[Job, bool]], list[Params]]:
    """Link the new jobs of a submission to their parents: each one's state
    (BLOCKED, or CANCELED at once when a parent already ended the wrong way),
    its depth, and the edge rows to insert.

    `results` are the submission's jobs as `rules.plan_submission` made them
    (a repeated request id stands for an earlier job); `stored` holds every
    stored job named as a parent (`stored_parent_ids`), read under lock. A
    parent named by its index in the batch is the job the batch made (or
    found stored) there. Raises InvalidArgumentError, naming the job and the
    dependency, for a parent that is not a job of the child's organisation
    (stored, or in the batch: a graph never crosses organisations) or a graph
    deeper than `max_depth`.
    """
    planned = list(results)
    order = graphlib.TopologicalSorter(
        {
            i: [edge.parent for edge in new.depends_on if isinstance(edge.parent, int)]
            for i, new in enumerate(jobs)
        }
    ).static_order()  # the edge layer refused cycles; a parent comes before its children
    edges: list[Params] = []
    parents_in_batch: set[int] = set()
    for i in order:
        new = jobs[i]
        job, deduplicated = planned[i]
        if deduplicated or not new.depends_on:
            continue
        waiting, failed, depth = 0, None, 0
        depends_on: dict[str, Dependency] = {}
        for j, edge in enumerate(new.depends_on):
            field = f"jobs[{i}].depends_on[{j}]"
            found: Job | None
            if isinstance(edge.parent, int) and not planned[edge.parent][1]:
                found = planned[edge.parent][0]  # new in this batch
                parents_in_batch.add(edge.parent)
            else:
                parent_id = (
                    edge.parent if isinstance(edge.parent, str) else planned[edge.parent][0].id
                )
                found = stored.get(parent_id)
            if found is None or found.org_id != new.org_id:
                raise _foreign_parent(field, edge.parent, found, new.org_id)
            parent = found
            if parent.id in depends_on:  # named twice (by id and by ref): once is enough
                continue
            met = lifecycle.condition_met(edge.condition, parent.state)
            if met is None:
                waiting += 1
            elif not met and failed is None:
                failed = (parent.id, parent.state)
            depth = max(depth, parent.depth + 1)
            depends_on[parent.id] = Dependency(parent.id, edge.condition)
            edges.append(
                {"parent_id": parent.id, "child_id": job.id, "condition": edge.condition.name}
            )
        if depth > max_depth:
            raise _refused(
                f"jobs[{i}].depends_on",
                f"makes a graph {depth + 1} jobs deep; the limit (max_graph_depth) is "
                f"{max_depth + 1}",
            )
        linked = evolve(job, depends_on=tuple(depends_on.values()), depth=depth)
        planned[i] = (lifecycle.accepted(linked, waiting, failed), False)
    for i in parents_in_batch:
        planned[i] = (evolve(planned[i][0], has_children=True), False)
    return planned, edges


def _foreign_parent(
    field: str, named: str | int, found: Job | None, org_id: str
) -> InvalidArgumentError:
    """The refusal of a parent that is not a job of the child's organisation:
    a stored one is answered as if it did not exist (ids of other
    organisations are not to be probed); one of the batch, whose organisation
    the caller chose, is named as such."""
    if isinstance(named, int):
        where = f"jobs[{named}]"
        if found is not None:
            where += f", a job of organisation {found.org_id!r}"
        return _refused(
            field + ".ref",
            f"names {where}; a job of organisation {org_id!r} may depend only on jobs of "
            "its own organisation",
        )
    return _refused(field + ".job_id", f"there is no job {named} in organisation {org_id!r}")


def _refused(field: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{field} {description}", violations=[FieldViolation(field, description)]
    )


def stored_parent_ids(jobs: Sequence[NewJob], results: list[tuple[Job, bool]]) -> list[str]:
    """The ids of stored jobs a submission names as parents, sorted (lock
    order): by id, or by the index of a job the batch found stored already."""
    ids = set()
    for new in jobs:
        for edge in new.depends_on:
            if isinstance(edge.parent, str):
                ids.add(edge.parent)
            elif results[edge.parent][1]:
                ids.add(results[edge.parent][0].id)
    return sorted(ids)


def link_params(job: Job) -> Params:
    """The `set_links` parameters of a job: the graph columns (and rerun_of)
    that `insert_job` leaves at their defaults, written apart so that a job
    without any pays nothing for them."""
    return {
        "id": job.id,
        "depends_on": dependencies_json(job.depends_on),
        "waiting_on": job.waiting_on,
        "has_children": int(job.has_children),
        "depth": job.depth,
        "rerun_of": job.rerun_of,
    }


def is_linked(job: Job) -> bool:
    """Whether a new job has graph columns to write (see `link_params`)."""
    return bool(job.depends_on or job.has_children or job.rerun_of)


def mark_parents(parents: Sequence[Job]) -> Program[None]:
    """Note on stored parents that a child now waits for them."""
    ids = [parent.id for parent in parents if not parent.has_children]
    if ids:
        yield Execute("mark_parents", {"ids": ids})


# -- a parent ended ----------------------------------------------------------------


def newly_finished(changes: Sequence[Change]) -> list[Job]:
    """The jobs these changes made terminal that have children to settle."""
    return [
        change.after
        for change in changes
        if change.after.has_children
        and change.after.state.is_terminal
        and not change.before.state.is_terminal
    ]


def settle(tx: Tx, finished: list[Job]) -> Program[None]:
    """The BLOCKED children of jobs that just ended: each counted down, and
    released when none is left to wait for, or canceled (cause
    DEPENDENCY_FAILED) when a parent ended the wrong way for it; then, when
    some were canceled, everything waiting below them the same way.

    The children are read through the index on edges; what waits below
    canceled ones is read in one recursive query and decided in topological
    order, so a deep chain costs a few statements, not a few per level."""
    now_us = max(parent.update_time_us for parent in finished)
    ended = {parent.id: parent.state for parent in finished}
    rows = yield Fetch("lock_blocked_children", {"ids": sorted(ended)})
    canceled = yield from _decide(tx, rows, ended, now_us)
    if canceled:
        rows = yield Fetch("lock_blocked_downstream", {"ids": sorted(canceled)})
        yield from _decide(tx, rows, canceled, now_us)


def _decide(
    tx: Tx, rows: Sequence[Row], ended: dict[str, JobState], now_us: int
) -> Program[dict[str, JobState]]:
    """Count down, release or cancel the BLOCKED jobs of `rows` (one per edge
    from a job of `ended` or from another of them), parents before children;
    return the ones canceled that have children of their own."""
    children: dict[str, Job] = {}
    edges: dict[str, list[tuple[str, DependencyCondition]]] = collections.defaultdict(list)
    for row in rows:
        child = children.setdefault(row["id"], job_from_row(row))
        edges[child.id].append((row["parent_id"], DependencyCondition[row["edge_condition"]]))
    order = graphlib.TopologicalSorter(
        {child: [parent for parent, _ in edges[child] if parent in children] for child in children}
    ).static_order()
    ended = dict(ended)
    changes: list[Change] = []
    counts: list[Params] = []
    for child_id in order:
        child = children[child_id]
        met, failed = 0, None
        for parent_id, condition in edges[child_id]:
            state = ended.get(parent_id)
            if state is None:  # a parent that still waits itself
                continue
            if lifecycle.condition_met(condition, state):
                met += 1
            elif failed is None:
                failed = (parent_id, state)
        if failed is not None:
            change = lifecycle.dependency_failed(child, failed[0], failed[1], now_us)
            changes.append(change)
            ended[child_id] = change.after.state
        elif met:
            left = child.waiting_on - met
            counts.append({"id": child_id, "waiting_on": max(left, 0)})
            if left <= 0:
                changes.append(lifecycle.release(child, now_us))
    if counts:
        yield ExecuteMany("set_waiting_on", counts)
    yield from tx.write(changes)
    return {job.id: job.state for job in newly_finished(changes)}


def cancel_descendants(tx: Tx, root: Job, now_us: int) -> Program[None]:
    """Cancel every BLOCKED job downstream of `root`, which a user is
    canceling: whatever their conditions, nothing waiting for it runs."""
    rows = yield Fetch("lock_blocked_downstream", {"ids": [root.id]})
    children = {row["id"]: job_from_row(row) for row in rows}
    changes = [lifecycle.canceled_with(child, root.id, now_us) for child in children.values()]
    yield from tx.write(changes)


# -- a child starts -----------------------------------------------------------------


def with_parents(leases: list[Lease], budget_bytes: int) -> Program[list[Lease]]:
    """The leases, each with how its parents ended and their outputs, as far
    as `budget_bytes` of output per lease allows (beyond it an output is
    left out and marked so: the worker reads it with Get).

    The outputs' sizes are read first and only the outputs that fit are read
    after, so a child of many parents with large outputs costs the server
    no more memory than its budget."""
    ids = sorted({d.job_id for lease in leases for d in lease.job.depends_on})
    if not ids:
        return leases
    rows = yield Fetch("parent_outcomes", {"ids": ids})
    ended = {row["id"]: (JobState[row["state"]], row["output_bytes"] or 0) for row in rows}
    fitting: list[list[tuple[str, JobState, bool]]] = []  # per lease: id, state, omitted
    for lease in leases:
        left = budget_bytes
        outcomes = []
        for dependency in lease.job.depends_on:
            if dependency.job_id not in ended:  # purged by retention since: nothing to tell
                continue
            state, size = ended[dependency.job_id]
            size = size if state is JobState.SUCCEEDED else 0
            omitted = size > left
            left -= 0 if omitted else size
            outcomes.append((dependency.job_id, state, omitted))
        fitting.append(outcomes)
    wanted = sorted(
        {
            job_id
            for outcomes in fitting
            for job_id, state, omitted in outcomes
            if state is JobState.SUCCEEDED and not omitted
        }
    )
    outputs: dict[str, str] = {}
    if wanted:
        rows = yield Fetch("parent_outputs", {"ids": wanted})
        outputs = {row["id"]: row["output_json"] for row in rows}
    for lease, outcomes in zip(leases, fitting, strict=True):
        lease.parents = tuple(
            ParentOutcome(job_id, state, "" if omitted else outputs.get(job_id, ""), omitted)
            for job_id, state, omitted in outcomes
        )
    return leases
