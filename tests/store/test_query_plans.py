"""The queries a request runs read through an index, whatever the store's
size: SQLite's plan for each is checked here, so that a query a partial
index cannot serve (a bound parameter the planner cannot see through) fails
a test instead of a benchmark with a million jobs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zbrain_server.store.queries import load_migrations
from zbrain_server.store.sqlite.driver import QUERIES

# Run once per Get, List, lease or result, or every few seconds: none may
# walk the jobs table or an index of every job.
PER_REQUEST = (
    "reruns_of",
    "count_running",
    "count_running_key",
    "runnable_requirements",
)
# Partial indexes small by design, which a query may read whole: only the
# runnable jobs that require worker labels.
SMALL = ("SCAN jobs USING INDEX jobs_runnable_requiring",)


@pytest.fixture
def schema(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(tmp_path / "plans.db")
    for migration in load_migrations("zbrain_server.store.sqlite"):
        connection.executescript(migration)
    return connection


@pytest.mark.parametrize("name", PER_REQUEST)
def test_a_per_request_query_does_not_scan_the_jobs(schema: sqlite3.Connection, name: str) -> None:
    query = QUERIES[name]
    params = {param: "x" for param in query.names}
    plan = schema.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.args(params)).fetchall()
    steps = [str(step[-1]) for step in plan]
    assert not any(step.startswith("SCAN jobs") and step not in SMALL for step in steps), steps
