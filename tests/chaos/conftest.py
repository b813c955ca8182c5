"""Fixtures of the chaos suite: a fleet of processes, the run log, a seed."""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import Fleet, RunLog, chaos_seed

# Each phase's report of a test, for its fixtures' teardown to see how it went.
PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(PHASES, {})[report.when] = report
    return report


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """The test's processes, killed at teardown; their logs are shown when it failed."""
    processes = Fleet(tmp_path / "logs")
    yield processes
    phases = request.node.stash.get(PHASES, {})
    processes.kill_all(show_logs=any(report.failed for report in phases.values()))


@pytest.fixture
def runs(tmp_path: Path) -> RunLog:
    return RunLog(tmp_path / "runs")


@pytest.fixture
def seed() -> int:
    return chaos_seed()


@pytest.fixture
def rng(seed: int) -> random.Random:
    return random.Random(seed)
