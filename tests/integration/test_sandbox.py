"""Resource limits and the sandbox, end to end: a real server, real `zbrain
worker` processes in process and sandbox mode, real jobs trying to break out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Processes, eventually
from zbrain import Cause, Client, Job, JobState, Resources
from zbrain.errors import InvalidArgumentError
from zbrain_server.app import ZBrainServer

# The Makefile installs bubblewrap; without it the sandbox tests skip, except
# under CI=true, where they fail rather than pass unrun.
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and os.environ.get("CI") != "true",
    reason="bubblewrap (bwrap) is not installed",
)
MODES = ["process", pytest.param("sandbox", marks=needs_bwrap)]

# The interpreter itself, not the virtual environment's link to it: a sandbox
# gives each job a private /tmp, which hides a checkout (and its .venv) that
# lives under /tmp, as CI's clean clones may.
PYTHON = os.path.realpath(sys.executable)


async def finished(client: Client, job_id: str) -> Job:
    done = await client.wait(job_id, timeout=30)
    assert done.state.is_terminal
    return done


async def log_text(client: Client, job_id: str) -> list[str]:
    return [line.text async for line in client.logs(job_id)]


def running_with(marker: str) -> list[int]:
    """The pids of processes whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


async def truth(value: bool) -> bool:
    return value


# -- limits, in every mode ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_job_over_its_memory_limit_is_killed_with_that_cause(
    server: ZBrainServer, client: Client, processes: Processes, mode: str
) -> None:
    processes.worker(server.address, "--mode", mode)
    # Holds its memory until killed: the sleep only keeps it alive meanwhile.
    hog = "import time; block = bytearray(256 << 20); time.sleep(60)"
    job = await client.submit(
        [PYTHON, "-c", hog], resources=Resources(memory_bytes=64 << 20), max_retries=0
    )

    done = await finished(client, job.id)

    assert done.state is JobState.FAILED
    assert done.last_transition is not None
    assert done.last_transition.cause is Cause.RESOURCE_LIMIT_EXCEEDED
    assert "memory limit exceeded" in done.last_error
    assert "the limit is 64 MiB" in done.last_error


async def test_cpu_and_file_size_limits_stop_a_job_with_the_limit_named(
    server: ZBrainServer, client: Client, processes: Processes
) -> None:
    processes.worker(server.address, "--concurrency", "2")
    spinner = await client.submit(
        ["sh", "-c", "while :; do :; done"], resources=Resources(cpu_seconds=1), max_retries=0
    )
    writer = await client.submit(
        ["dd", "if=/dev/zero", "of=big", "bs=1000", "count=100"],
        resources=Resources(file_size_bytes=4096),
        max_retries=0,
    )

    spun, wrote = await finished(client, spinner.id), await finished(client, writer.id)

    assert spun.last_transition is not None and wrote.last_transition is not None
    assert spun.last_transition.cause is Cause.RESOURCE_LIMIT_EXCEEDED
    assert spun.last_error.startswith("CPU time limit exceeded: 1s")
    assert wrote.last_transition.cause is Cause.RESOURCE_LIMIT_EXCEEDED
    assert wrote.last_error.startswith("file size limit exceeded: a write went past 4 KiB")


async def test_rlimits_are_set_before_the_program_runs_and_bounded_by_the_worker(
    server: ZBrainServer, client: Client, processes: Processes
) -> None:
    processes.worker(server.address, "--max-open-files", "64", "--max-cpu", "30s")
    show = ["sh", "-c", "ulimit -n; ulimit -t"]
    asks_less = await client.submit(show, resources=Resources(open_files=20, cpu_seconds=5))
    asks_more = await client.submit(show, resources=Resources(open_files=4096))
    asks_none = await client.submit(show)

    for job in (asks_less, asks_more, asks_none):
        assert (await finished(client, job.id)).state is JobState.SUCCEEDED

    assert await log_text(client, asks_less.id) == ["20", "5"]
    assert await log_text(client, asks_more.id) == ["64", "30"]
    assert await log_text(client, asks_none.id) == ["64", "30"]
    stored = await client.get(asks_less.id)
    assert stored.resources == Resources(open_files=20, cpu_seconds=5)


@pytest.mark.parametrize("mode", MODES)
async def test_a_jobs_folder_is_removed_once_its_attempt_ended(
    server: ZBrainServer, client: Client, processes: Processes, tmp_path: Path, mode: str
) -> None:
    temp_dir = tmp_path / "jobs"
    processes.spawn(
        "worker", "--server", server.address, "--mode", mode, "--temp-dir", str(temp_dir)
    )
    plain = await client.submit(["true"])
    cluttered = await client.submit(
        ["sh", "-c", 'mkdir -p a/b && touch a/b/c "$ZBRAIN_ARTIFACTS_DIR/x"']
    )

    for job in (plain, cluttered):
        assert (await finished(client, job.id)).state is JobState.SUCCEEDED

    [own] = temp_dir.iterdir()  # the worker's folder of job folders, while it runs
    await eventually(lambda: truth(not any(own.iterdir())), timeout=10)


async def test_impossible_limits_are_refused_at_submit_naming_each_field(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        await client.submit(["true"], resources=Resources(memory_bytes=1000, open_files=-1))

    fields = {violation.field for violation in refused.value.violations}
    assert fields == {"job.resources.memory_bytes", "job.resources.open_files"}


# -- the sandbox ---------------------------------------------------------------------


@needs_bwrap
async def test_a_sandboxed_job_writes_only_in_its_own_folder(
    server: ZBrainServer, client: Client, processes: Processes, tmp_path: Path
) -> None:
    processes.worker(server.address, "--mode", "sandbox")
    # Not under /tmp, which the sandbox replaces with an empty one of its own.
    outside_dir = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="zbrain-test-"))
    outside = outside_dir / "outside.txt"
    script = (
        f'echo escaped > {outside} || echo "outside: refused";'
        ' touch /etc/zbrain-sandbox-test 2>/dev/null || echo "etc: refused";'
        ' echo kept > mine.txt && printf \'{"ok": true}\' > "$ZBRAIN_OUTPUT"'
    )
    job = await client.submit(["sh", "-c", script])

    done = await finished(client, job.id)

    assert done.state is JobState.SUCCEEDED, done.last_error
    assert done.output == {"ok": True}
    assert "outside: refused" in await log_text(client, job.id)
    assert "etc: refused" in await log_text(client, job.id)
    assert not outside.exists()
    assert not Path("/etc/zbrain-sandbox-test").exists()
    outside_dir.rmdir()


@needs_bwrap
async def test_a_sandboxed_job_cannot_see_another_jobs_files(
    server: ZBrainServer, client: Client, processes: Processes, tmp_path: Path
) -> None:
    temp_dir = tmp_path / "jobs"
    processes.spawn(
        "worker", "--server", server.address, "--mode", "sandbox",
        "--concurrency", "2", "--temp-dir", str(temp_dir),
    )  # fmt: skip
    keeper = await client.submit(["sh", "-c", "echo secret > secret.txt; pwd; exec sleep 60"])

    async def keeper_folder() -> bool:
        return bool(await log_text(client, keeper.id))

    await eventually(keeper_folder, timeout=20)
    [folder] = await log_text(client, keeper.id)
    assert (Path(folder) / "secret.txt").read_text() == "secret\n"  # there, seen from outside
    # Every job folder of the worker is in one folder of its own: the snoop's alone.
    siblings = Path(folder).parent
    look = f"ls -A {siblings} | wc -l; cat {folder}/secret.txt 2>/dev/null || echo unreadable"
    snoop = await client.submit(["sh", "-c", look])
    snooped = await finished(client, snoop.id)
    await client.cancel(keeper.id)

    assert snooped.state is JobState.SUCCEEDED, snooped.last_error
    assert await log_text(client, snoop.id) == ["1", "unreadable"]  # its own folder alone
    assert (await finished(client, keeper.id)).state is JobState.CANCELED


@needs_bwrap
async def test_a_sandboxed_job_reaches_the_network_only_when_it_asks_and_the_worker_allows(
    server: ZBrainServer, client: Client, processes: Processes
) -> None:
    host, port = server.address.rsplit(":", 1)
    connect = f"import socket; socket.create_connection(({host!r}, {port}), timeout=5)"
    closed = processes.worker(server.address, "--mode", "sandbox", "--id", "closed")
    asked_but_refused = await client.submit([PYTHON, "-c", connect], network=True, max_retries=0)
    refused = await finished(client, asked_but_refused.id)
    assert refused.state is JobState.FAILED
    assert "ConnectionRefusedError" in refused.last_error or "unreachable" in refused.last_error
    closed.kill()
    closed.wait(timeout=30)

    processes.worker(server.address, "--mode", "sandbox", "--allow-network", "--id", "open")
    not_asked = await client.submit([PYTHON, "-c", connect], max_retries=0)
    asked = await client.submit([PYTHON, "-c", connect], network=True, max_retries=0)
    results = {job.id: await finished(client, job.id) for job in (not_asked, asked)}

    assert results[not_asked.id].state is JobState.FAILED
    assert results[asked.id].state is JobState.SUCCEEDED, results[asked.id].last_error
    assert results[asked.id].worker_id == "open"


@needs_bwrap
async def test_a_canceled_sandboxed_job_leaves_no_process_behind(
    server: ZBrainServer, client: Client, processes: Processes
) -> None:
    processes.worker(server.address, "--mode", "sandbox")
    marker = f"31{os.getpid() % 10000:04d}.5"  # a sleep no other test runs
    # A descendant in a session of its own escapes a process-group kill.
    script = f"setsid sleep {marker} & sleep {marker}1"
    job = await client.submit(["sh", "-c", script], max_retries=3)

    await eventually(lambda: truth(len(running_with(f"sleep\0{marker}")) >= 2), timeout=20)
    await client.cancel(job.id)
    done = await finished(client, job.id)

    assert done.state is JobState.CANCELED
    await eventually(lambda: truth(not running_with(f"sleep\0{marker}")), timeout=10)


async def test_sandbox_mode_refuses_to_start_without_bwrap(
    server: ZBrainServer, processes: Processes, tmp_path: Path
) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    worker = processes.spawn(
        "worker", "--server", server.address, "--mode", "sandbox", env={"PATH": str(empty_path)}
    )

    try:
        status = worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a sandbox worker without bwrap kept running")
    assert status != 0
    assert worker.stdout is not None
    said = worker.stdout.read()
    assert "sandbox mode needs bubblewrap" in said
    assert "apt-get install bubblewrap" in said


async def test_a_job_that_removes_its_artifact_folder_still_succeeds(
    server: ZBrainServer, client: Client, processes: Processes
) -> None:
    processes.worker(server.address)
    job = await client.submit(["sh", "-c", 'rmdir "$ZBRAIN_ARTIFACTS_DIR"'])

    done = await finished(client, job.id)

    assert done.state is JobState.SUCCEEDED, done.last_error
    assert done.artifacts == ()
