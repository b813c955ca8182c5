"""The process executor's job folder: the input written as `open` would
write it, read on stdin, and no descriptor left open whatever the attempt's
end (a program missing, not executable, a folder)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from zbrain import _convert
from zbrain.models import Job
from zbrain.v1 import job_service_pb2
from zbrain.worker import AttemptOutcome, Cancellation, ProcessExecutor
from zbrain.worker._executor import AttemptEvents
from zbrain.worker._process import _write_new

from .fakes import job_message


class Lines:
    """A reporter keeping the attempt's log lines."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def log(self, line: Any) -> None:
        self.texts.append(line.text)

    async def upload(self, name: str, path: Path) -> Any:
        raise AssertionError("no artifact expected")


def command_job(*cmd: str, input_json: str = "") -> Job:
    message = job_message("job-1")
    del message.cmd[:]
    message.cmd.extend(cmd)
    message.input_json = input_json
    return _convert.leased_job(job_service_pb2.Lease(job=message, lease_epoch=1))


async def run(executor: ProcessExecutor, job: Job) -> tuple[Any, list[str]]:
    """The attempt's outcome and lines, once its folder is gone: the executor
    removes it in a thread of its own, whose descriptors count meanwhile."""
    lines = Lines()
    outcome = await executor.execute(job, AttemptEvents(job, lines), Cancellation())
    settled(executor)
    return outcome, lines.texts


def settled(executor: ProcessExecutor) -> None:
    """Return once the executor's folder thread has done what it was given."""
    executor._remover.submit(lambda: None).result(timeout=30)  # runs after the rest


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_the_input_is_a_file_with_opens_mode_and_the_commands_stdin(tmp_path: Path) -> None:
    executor = ProcessExecutor(tmp_path)
    script = 'stat -c %a "$ZBRAIN_INPUT"; cat "$ZBRAIN_INPUT"; echo; cat'
    job = command_job("sh", "-c", script, input_json='{"n": 1}')
    umask = os.umask(0)
    os.umask(umask)

    outcome, lines = await run(executor, job)

    assert outcome.kind is AttemptOutcome.SUCCEEDED, outcome.error
    assert lines == [f"{0o666 & ~umask:o}", '{"n": 1}', '{"n": 1}']


def test_writing_a_job_file_refuses_one_already_there(tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text("planted")

    with pytest.raises(FileExistsError):
        _write_new(tmp_path / "input.json", b"{}")

    assert (tmp_path / "input.json").read_text() == "planted"
    assert stat.S_ISREG((tmp_path / "input.json").stat().st_mode)


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("no-such-program-here", "program not found"),
        ("{not_executable}", "program not executable"),
        ("{folder}", "program not executable"),
        ("true", None),
    ],
    ids=["missing", "not executable", "a folder", "runs"],
)
async def test_no_descriptor_outlives_an_attempt_however_it_ends(
    tmp_path: Path, program: str, error: str | None
) -> None:
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    jobs = tmp_path / "jobs"
    executor = ProcessExecutor(jobs)
    await executor.health_check()  # its own folder made, and locked through a descriptor
    settled(executor)  # the health check's sweep of dead workers' folders
    job = command_job(program.format(not_executable=not_executable, folder=folder))
    before = open_descriptors()

    outcome, _ = await run(executor, job)

    if error is None:
        assert outcome.kind is AttemptOutcome.SUCCEEDED, outcome.error
    else:
        assert outcome.kind is AttemptOutcome.FAILED
        assert outcome.error.startswith(error), outcome.error
    assert open_descriptors() == before
    [own] = jobs.iterdir()
    assert not any(own.iterdir()), "the job's folder is removed"
