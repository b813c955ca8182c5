"""Job graphs from Python and the command line: a graph file read into one
`submit_batch`, and the graph around a stored job walked for display.

A graph file (YAML, or JSON, which YAML reads too) names its jobs:

    org: analytics            # optional: the client's organisation otherwise
    defaults:                 # optional: what every job takes unless it says otherwise
      timeout: 10m
      max_retries: 2
    jobs:
      extract:
        cmd: [python, extract.py]
        input: {day: "2026-12-01"}
      load:
        cmd: [python, load.py]
        after: [extract]                      # must succeed
      notify:
        cmd: [echo, done]
        after: [{job: load, condition: finished}]  # or "load:finished"

A job's `after` names other jobs of the file, or stored jobs by id. Its other
fields are those of `zbrain.client.job_spec`: cmd, input, env, timeout,
max_retries, priority, labels, delay, run_at.
"""

from __future__ import annotations

import asyncio
import graphlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .client import job_spec, ref
from .durations import parse_duration
from .errors import InvalidArgumentError, NotFoundError
from .models import DependencyCondition, Job
from .v1 import job_pb2

if TYPE_CHECKING:
    from .client import Client

JOB_FIELDS = {
    "cmd",
    "input",
    "env",
    "timeout",
    "max_retries",
    "priority",
    "labels",
    "delay",
    "run_at",
    "after",
}
CONDITIONS = {c.name.lower(): c for c in DependencyCondition}
WALK_LIMIT = 500
"""Jobs `walk` reads at most: a larger graph is shown in part, and says so."""


@dataclass(frozen=True)
class GraphFile:
    """A graph read from a file: its jobs' names and specs, in file order."""

    names: list[str]
    specs: list[job_pb2.JobSpec]


def read_graph(path: Path) -> GraphFile:
    """Read a graph file; InvalidArgumentError naming the file, the job and
    the field for anything wrong with it."""
    import yaml  # only `run-graph` pays for loading it

    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidArgumentError(f"{path} is not valid YAML or JSON: {exc}") from None
    return parse_graph(document, str(path))


def parse_graph(document: Any, where: str = "the graph") -> GraphFile:
    """A graph from its parsed document (see the module's docstring)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("jobs"), Mapping):
        raise _bad(where, "must be a mapping with a 'jobs' mapping of named jobs")
    unknown = set(document) - {"org", "defaults", "jobs"}
    if unknown:
        raise _bad(where, f"has unknown keys {sorted(unknown)}; expected org, defaults, jobs")
    org = document.get("org")
    if org is not None and not isinstance(org, str):
        raise _bad(where, "'org' must be text")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping) or "after" in defaults or set(defaults) - JOB_FIELDS:
        raise _bad(where, f"'defaults' may set {sorted(JOB_FIELDS - {'after'})}")
    jobs: Mapping[str, Any] = document["jobs"]
    if not jobs:
        raise _bad(where, "names no jobs")
    names = [str(name) for name in jobs]
    specs = [
        _spec(str(name), {**defaults, **_mapping(body, where, str(name))}, set(names), org, where)
        for name, body in jobs.items()
    ]
    return GraphFile(names, specs)


def _mapping(body: Any, where: str, name: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise _bad(where, f"{_job(name)} must be a mapping of its fields (cmd, after, ...)")
    return body


def _spec(
    name: str, body: Mapping[str, Any], names: set[str], org: str | None, where: str
) -> job_pb2.JobSpec:
    unknown = set(body) - JOB_FIELDS
    if unknown:
        raise _bad(where, f"{_job(name)} has unknown fields {sorted(unknown)}")
    cmd = body.get("cmd")
    if (
        not isinstance(cmd, list)
        or not cmd
        or not all(isinstance(a, str | int | float) for a in cmd)
    ):
        raise _bad(where, f"{_job(name)} needs cmd: a list of arguments, e.g. [echo, hi]")
    try:
        return job_spec(
            [str(arg) for arg in cmd],
            org=org,
            input=body.get("input"),
            env={str(k): str(v) for k, v in (body.get("env") or {}).items()},
            timeout=_seconds(body.get("timeout")),
            max_retries=body.get("max_retries"),
            priority=int(body.get("priority", 0)),
            labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()},
            depends_on=[_after(item, names, name, where) for item in body.get("after") or []],
            ref=name,
            delay=_seconds(body.get("delay")),
            run_at=_time(body.get("run_at")),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise _bad(where, f"{_job(name)}: {exc}") from None


def _after(item: Any, names: set[str], name: str, where: str) -> job_pb2.Dependency:
    """One entry of `after`: "other", "other:finished", or {job:, condition:}."""
    if isinstance(item, Mapping):
        parent, condition = str(item.get("job", "")), str(item.get("condition", "succeeded"))
    elif isinstance(item, str):
        parent, _, condition = item.partition(":")
        condition = condition or "succeeded"
    else:
        raise _bad(where, f"{_job(name)}: 'after' entries are names, 'name:condition' or mappings")
    chosen = CONDITIONS.get(condition.lower())
    if chosen is None:
        raise _bad(where, f"{_job(name)}: condition {condition!r} is not succeeded or finished")
    if parent in names:
        return ref(parent, chosen)
    if _looks_like_job_id(parent):
        return job_pb2.Dependency(job_id=parent, condition=cast(Any, chosen.value))
    raise _bad(
        where, f"{_job(name)} is after {parent!r}, which is neither a job of the file nor a job id"
    )


def _looks_like_job_id(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return parse_duration(str(value))


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"run_at {value} needs a time zone, such as 2026-12-03T02:00:00Z")
    return moment


def _job(name: str) -> str:
    """How a message names a job: by its name in a graph file, or as "the
    job" of a batch line (whose `where` names the line)."""
    return f"job {name!r}" if name else "the job"


def _bad(where: str, problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{where}: {problem}")


async def walk(client: Client, job_id: str, limit: int = WALK_LIMIT) -> tuple[list[Job], bool]:
    """The jobs of the graph around a stored job (its ancestors and
    descendants, and theirs), read with Get a wave at a time; and whether
    the graph had more than `limit` jobs (then only `limit` are read)."""
    found: dict[str, Job] = {}
    wave = [job_id]
    while wave:
        jobs = await asyncio.gather(*(client.get(jid) for jid in wave), return_exceptions=True)
        for job in jobs:
            if isinstance(job, NotFoundError):
                continue  # purged by retention since
            if isinstance(job, BaseException):
                raise job
            found[job.id] = job
        linked = {
            other
            for job in jobs
            if isinstance(job, Job)
            for other in (*(d.job_id for d in job.depends_on), *job.child_ids)
        }
        fresh = sorted(linked - set(found) - set(wave))
        if len(found) + len(fresh) > limit:
            return list(found.values()), True
        wave = fresh
    return list(found.values()), False


def in_order(jobs: list[Job]) -> list[Job]:
    """The jobs with every job after the jobs it depends on (then by id)."""
    by_id = {job.id: job for job in jobs}
    order = graphlib.TopologicalSorter(
        {job.id: [d.job_id for d in job.depends_on if d.job_id in by_id] for job in jobs}
    )
    order.prepare()
    ordered: list[Job] = []
    while order.is_active():
        ready = sorted(order.get_ready())
        ordered += [by_id[job_id] for job_id in ready]
        order.done(*ready)
    return ordered


def graph_json(jobs: list[Job], partial: bool) -> dict[str, Any]:
    """The graph as one JSON document: its jobs (as `Job.to_dict`) and edges."""
    return {
        "jobs": [job.to_dict() for job in in_order(jobs)],
        "edges": [
            {"parent": d.job_id, "child": job.id, "condition": d.condition.name}
            for job in jobs
            for d in job.depends_on
        ],
        "partial": partial,
    }


def batch_spec(body: Any, where: str) -> job_pb2.JobSpec:
    """One line of `zbrain submit --batch`: a job with the fields of a graph
    file's job, plus `org`; its `after` names stored jobs by id."""
    fields = dict(_mapping(body, where, ""))
    org = fields.pop("org", None)
    if org is not None and not isinstance(org, str):
        raise _bad(where, "'org' must be text")
    return _spec("", fields, set(), org, where)
