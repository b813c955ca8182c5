"""`zbrain worker`'s flags and variables: a bad value is refused before the
worker connects, in words a person can act on."""

from __future__ import annotations

import argparse

import pytest

from zbrain.cli import main
from zbrain.errors import ZBrainError
from zbrain.models import Resources
from zbrain.worker_command import worker_maxima


def maxima_args(**flags: str) -> argparse.Namespace:
    names = ("max_memory", "max_cpu", "max_processes", "max_open_files", "max_file_size")
    return argparse.Namespace(**{name: flags.get(name) for name in names})


def test_maxima_are_read_from_flags_with_units() -> None:
    args = maxima_args(max_memory="2G", max_cpu="10m", max_processes="64")
    assert worker_maxima(args) == Resources(
        memory_bytes=2 << 30, cpu_seconds=600, processes=64, open_files=0, file_size_bytes=0
    )


def test_a_count_that_is_not_a_whole_number_is_named_with_its_flag_and_variable() -> None:
    with pytest.raises(ZBrainError) as raised:
        worker_maxima(maxima_args(max_processes="x"))
    assert str(raised.value) == (
        "--max-processes / $ZWORKER_MAX_PROCESSES: 'x' is not a whole number"
    )


def test_a_concurrency_variable_that_is_not_a_number_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZWORKER_CONCURRENCY", "abc")
    assert main(["worker", "--server", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == (
        "zbrain worker: error: $ZWORKER_CONCURRENCY: 'abc' is not a whole number\n"
    )


def test_a_concurrency_variable_of_zero_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZWORKER_CONCURRENCY", "0")
    assert main(["worker", "--server", "127.0.0.1:1"]) == 1
    assert "$ZWORKER_CONCURRENCY must be 1 or more" in capsys.readouterr().err


def test_a_maximum_below_the_smallest_job_limit_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job's memory limit is at least 1 MiB (the server refuses less), so a
    worker maximum of 100K would make every limited job fail."""
    assert main(["worker", "--server", "127.0.0.1:1", "--max-memory", "100K"]) == 1
    assert capsys.readouterr().err == (
        "zbrain worker: error: --max-memory / $ZWORKER_MAX_MEMORY must be 0 (no maximum) "
        "or at least 1 MiB, the smallest limit a job may have\n"
    )
    with pytest.raises(ZBrainError, match=r"--max-open-files .* at least 3,"):
        worker_maxima(maxima_args(max_open_files="2"))
    assert worker_maxima(maxima_args(max_memory="1M", max_open_files="0")) == Resources(
        memory_bytes=1 << 20
    )
