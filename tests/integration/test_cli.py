"""The `zbrain` command line end to end, against a real `zbrain serve` process.

Most commands run in-process (the `cli` fixture, through `zbrain.cli.main`,
which is what the `zbrain` script calls), which is fast; a subprocess is used
where the process itself matters: its exit, its output streams, its start.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Processes, read_until
from tests.integration.conftest import Cli
from zbrain import SyncClient


def zbrain(address: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zbrain", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "ZBRAIN_SERVER": address},
        timeout=60,
    )


def test_submit_get_list_logs_as_a_user_would(address: str) -> None:
    submitted = zbrain(address, "submit", "--", "echo", "hello")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    waited = zbrain(address, "wait", job_id, "--timeout", "30s")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "SUCCEEDED" in waited.stdout

    shown = zbrain(address, "get", job_id)
    assert f"id        {job_id}" in shown.stdout
    assert '["echo", "hello"]' in shown.stdout

    logs = zbrain(address, "logs", job_id)
    assert logs.stdout == "hello\n"

    listed = zbrain(address, "list")
    assert listed.stdout.splitlines()[0].split() == [
        "ID", "ORG", "STATE", "ATTEMPT", "CREATED", "DURATION", "COMMAND"
    ]  # fmt: skip
    assert job_id[-8:] in listed.stdout


def test_json_output_is_one_object_per_line(address: str) -> None:
    for n in range(3):
        assert (
            zbrain(address, "submit", "--input", json.dumps({"n": n}), "--", "true").returncode == 0
        )
    listed = zbrain(address, "list", "--json", "--oldest-first")
    jobs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [job["input"] for job in jobs] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_submit_options_reach_the_job(address: str, tmp_path: Path) -> None:
    input_file = tmp_path / "input.json"
    input_file.write_text('{"from": "file"}')
    out = zbrain(
        address,
        "submit",
        "--json",
        "--org",
        "team-a",
        "--timeout",
        "90s",
        "--retries",
        "5",
        "--env",
        "GREETING=hi there",
        "--label",
        "kind=test",
        "--input",
        f"@{input_file}",
        "--",
        "sh",
        "-c",
        "echo $GREETING",
    )
    job = json.loads(out.stdout)
    assert job["org_id"] == "team-a"
    assert job["timeout_s"] == 90
    assert job["max_retries"] == 5
    assert job["env"] == {"GREETING": "hi there"}
    assert job["labels"] == {"kind": "test"}
    assert job["input"] == {"from": "file"}
    assert job["cmd"] == ["sh", "-c", "echo $GREETING"]


def test_cancel_reports_what_happened(address: str) -> None:
    job_id = zbrain(
        address, "submit", "--org", "nobody-serves-this", "--", "sleep", "60"
    ).stdout.strip()
    assert "canceled" in zbrain(address, "cancel", job_id).stdout
    again = zbrain(address, "cancel", job_id)
    assert again.returncode == 0
    assert "already finished (CANCELED)" in again.stdout


def test_failed_job_fails_wait(address: str) -> None:
    out = zbrain(
        address, "submit", "--wait", "--retries", "0", "--", "sh", "-c", "echo broken >&2; exit 4"
    )
    assert out.returncode == 1
    assert "exited with status 4: broken" in out.stdout


def test_ctrl_c_while_submit_waits_names_the_job_that_goes_on(address: str) -> None:
    """The job was submitted but its id not printed yet: Ctrl-C must not lose it."""
    # stderr a terminal, as a person's: the spinner then shows when the wait began.
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    waiting = subprocess.Popen(
        # Python keeps SIGINT ignored if it starts so (as a shell's background
        # job does); a person's terminal delivers it as KeyboardInterrupt.
        [sys.executable, "-c", CTRL_C_ABLE, "submit", "--wait", "--org", ORG, "--", "true"],
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
        env={**env, "ZBRAIN_SERVER": address, "TERM": "xterm"},
    )
    os.close(terminal)
    try:
        shown = _read_until(controller, "waiting for job")
        waiting.send_signal(signal.SIGINT)
        assert waiting.wait(30) == 130
        shown += _read_until(controller, "full id is ")
        shown += _read_until(controller, "\n")
    finally:
        os.close(controller)
        waiting.kill()
    said = re.search(r"stopped waiting; job (\w{8}) goes on: .* its full id is (\S+)", shown)
    assert said is not None, shown
    short, full = said.groups()
    assert full.endswith(short)
    job = json.loads(zbrain(address, "get", "--json", "--org", ORG, full).stdout)
    assert job["state"] == "PENDING"  # only the waiting stopped


def test_a_follow_cut_short_by_a_lost_server_says_how_to_go_on(
    processes: Processes, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    server, address = processes.server(tmp_path / "data", "--workers", "1")
    printing = ["sh", "-c", 'echo one; echo two; echo "$$" >> "$PIDS"; exec sleep 60']
    try:
        job_id = zbrain(address, "submit", "--env", f"PIDS={pids}", "--", *printing).stdout.strip()
        following = subprocess.Popen(
            [sys.executable, "-m", "zbrain", "logs", "-f", job_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "ZBRAIN_SERVER": address},
        )
        assert following.stderr is not None
        read_until(following, "two")
        with SyncClient.connect(address) as client:
            last = [line.sequence for line in client.logs(job_id)][-1]
        os.killpg(server.pid, signal.SIGKILL)  # the server and its worker, at once
        assert following.wait(30) == 1
        said = following.stderr.read()
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert "lost the ZBrain server" in said
    assert f"to go on from there: zbrain logs -f {job_id} --from {last}" in said
    assert "Traceback" not in said


ORG = "nobody-serves-this"  # its jobs wait: nothing runs, nothing is left behind
CTRL_C_ABLE = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['zbrain', *sys.argv[1:]]; runpy.run_module('zbrain', run_name='__main__')"
)


def _read_until(fd: int, text: str, timeout: float = 30.0) -> str:
    """What a terminal shows until `text` appears (AssertionError after `timeout`)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not shown within {timeout}s: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                seen += os.read(fd, 4096).decode(errors="replace")
            except OSError:  # the other side closed: nothing more will come
                break
    return seen


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "not-an-id"], "malformed job id"),
        (["get", "01939a4e-8b2c-7def-8123-456789abcdef"], "not found"),
        (["submit", "--input", "{bad", "--", "true"], "--input is not valid JSON"),
        (["submit", "--"], "nothing to run"),
        (["submit", "--env", "NOEQUALS", "--", "true"], "expected KEY=VALUE"),
        (["list", "--state", "sleeping"], "unknown state"),
        (["list", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    cli: Cli, args: list[str], message: str
) -> None:
    out = cli(*args)
    assert out.status in (1, 2)
    assert message in out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr


def test_unreachable_server_is_a_clear_error(processes: Processes) -> None:
    out = zbrain("127.0.0.1:1", "list")
    assert out.returncode == 1
    assert "cannot reach the ZBrain server at 127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_shuts_down_gracefully_and_keeps_jobs(processes: Processes, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server, address = processes.server(data)
    job_id = zbrain(address, "submit", "--", "true").stdout.strip()

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == 0
    assert server.stdout is not None
    assert "ZBrain stopped" in server.stdout.read()

    _, address = processes.server(data)
    assert "PENDING" in zbrain(address, "get", job_id).stdout


def test_serve_refuses_a_bad_setting(processes: Processes, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "zbrain", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "ZBRAIN_LEASE_TTL": "soon"},
        timeout=30,
    )
    assert out.returncode == 1
    assert "ZBRAIN_LEASE_TTL" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_port_already_in_use(processes: Processes, tmp_path: Path) -> None:
    _, address = processes.server(tmp_path / "first")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "zbrain",
            "serve",
            "--listen",
            address,
            "--data-dir",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"cannot listen on {address}: the address is in use" in out.stderr
    assert "Traceback" not in out.stderr
    assert "add_port" not in out.stderr  # no line of gRPC's own C++ log before it


def test_serve_reports_an_unusable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = subprocess.run(
        [sys.executable, "-m", "zbrain", "serve", "--data-dir", str(blocker / "data")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "cannot create the data directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_logs_json_lines_with_job_fields(processes: Processes, tmp_path: Path) -> None:
    server, address = processes.server(tmp_path / "data", "--workers", "1", "--log-format", "json")
    out = zbrain(address, "submit", "--wait", "--retries", "0", "--", "false")
    assert out.returncode == 1
    assert server.stdout is not None
    # Every line, the banner's and the local worker's too, is a JSON object.
    entries = []
    for line in server.stdout:  # the server logs the failure just after storing it
        entries.append(json.loads(line))
        if "after attempt 1" in entries[-1]["message"]:
            break
    assert {"job_id", "org_id", "worker_id", "trace_id"} <= set(entries[-1])
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    entries += [json.loads(line) for line in server.stdout]
    assert any(e["message"].startswith("connected to") for e in entries)  # the worker's
    assert entries[-1]["message"] == "ZBrain stopped"


def test_the_banner_says_where_metrics_are_and_whether_tls_is_on(
    processes: Processes, tmp_path: Path
) -> None:
    server = processes.spawn(
        "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
        "--log-format", "json", "--metrics-listen", "127.0.0.1:0",
    )  # fmt: skip
    assert server.stdout is not None
    banner = json.loads(server.stdout.readline())
    assert banner["message"].startswith("ZBrain listening on 127.0.0.1:")
    assert banner["tls"] == "off"
    assert banner["metrics"] == "http://127.0.0.1:0/metrics"


# -- issue 17: the command line as users expect it -----------------------------------


def test_global_options_go_before_or_after_the_command(cli: Cli, address: str) -> None:
    submitted = cli.ok("--server", "127.0.0.1:1", "submit", "--server", address, "--", "true")
    job_id = submitted.stdout.strip()
    before = cli.ok("--server", address, "--json", "get", job_id).json
    after = cli.ok("get", job_id, "--json", "--server", address).json
    assert before[0]["id"] == after[0]["id"] == job_id


def test_version_and_a_short_help_alone(offline: Cli) -> None:
    assert re.fullmatch(r"zbrain \S+\n", offline.ok("--version").stdout)
    bare = offline.ok()
    assert "zbrain submit -- echo hello" in bare.stdout
    assert "examples:" in offline.ok("logs", "--help").stdout


def test_every_client_command_shows_examples_in_its_help() -> None:
    from zbrain.cli import CLIENT_COMMANDS, build_parser
    from zbrain.cli._completion import _walk

    for path, parser in _walk(build_parser(with_plugin=False)):
        if path and path[0] in CLIENT_COMMANDS | {"token"}:
            assert "examples:\n  " in parser.format_help(), path


def test_short_ids_are_shown_and_accepted_in_any_case(cli: Cli) -> None:
    job_id = cli.ok("submit", "--", "echo", "hi").stdout.strip()
    short = job_id[-8:]
    assert short in cli.ok("list").stdout
    assert cli.ok("wait", short, "--json").json[0]["id"] == job_id
    assert cli.ok("get", job_id.upper(), "--json").json[0]["id"] == job_id
    assert cli.ok("logs", short).stdout == "hi\n"
    missing = cli("get", "abcdef12")
    assert missing.status == 1
    assert "no job among the newest" in missing.stderr


def test_list_says_when_more_exist_and_filters(cli: Cli) -> None:
    for n in range(3):
        cli.ok("submit", "--label", f"n={n}", "--label", "kind=test", "--", "true")
    limited = cli.ok("list", "--limit", "2")
    assert len(limited.stdout.splitlines()) == 3  # header and two jobs
    assert "more exist: --limit N for more, --all for every one" in limited.stderr
    assert "more exist" not in cli.ok("list", "--all").stderr
    assert [job["labels"]["n"] for job in cli.ok("list", "--label", "n=1", "--json").json] == ["1"]
    assert len(cli.ok("list", "--label", "kind=test", "--since", "1h", "--json").json) == 3
    assert cli.ok("list", "--since", "2999-01-01T00:00:00Z").stdout.count("\n") == 1
    assert "default" in cli.ok("list").stdout.splitlines()[1].split()  # the org column
    cli.ok("submit", "--org", "team-b", "--", "true")
    assert {job["org_id"] for job in cli.ok("list", "--all-orgs", "--json").json} == {
        "default", "team-b"
    }  # fmt: skip


def test_json_is_one_representation_across_commands(cli: Cli) -> None:
    cli.ok(
        "submit", "--wait", "--", "sh", "-c",
        'echo oops >&2; echo x > "$ZBRAIN_ARTIFACTS_DIR/a.txt"',
    )  # fmt: skip
    [job] = cli.ok("list", "--json").json
    assert job["state"] == "SUCCEEDED"
    events = cli.ok("events", "--json", "--topic", f"jobs/{job['id']}/").json
    changed = [e for e in events if e["type"] == "job_state_changed"]
    assert changed[-1]["to_state"] == "SUCCEEDED" and changed[-1]["cause"] == "SUCCEEDED"
    assert isinstance(changed[-1]["lease_epoch"], int)
    [line] = cli.ok("logs", job["id"], "--json").json
    assert line["stream"] == "STDERR"
    logged = [e for e in events if e["type"] == "job_logged"]
    assert logged[0]["lines"][0]["stream"] == "STDERR"
    [artifact] = cli.ok("artifacts", job["id"], "--json").json
    assert artifact["size_bytes"] == 2
    times = [job["create_time"], events[0]["time"], line["time"], job["attempts"][0]["end_time"]]
    for value in times:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", value), value


def test_token_create_prints_only_the_token_on_stdout(cli: Cli) -> None:
    created = cli.ok("token", "create", "--org", "ops", "--role", "admin")
    assert re.fullmatch(r"zbt_\S+\n", created.stdout)
    assert "shown only this once" in created.stderr
    listed = cli.ok("token", "list", "--json", "--token", created.stdout.strip()).json
    assert listed[0]["revoke_time"] is None
    assert listed[0]["create_time"].endswith("Z")


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("127.0.0.1:99999", "the port must be between 1 and 65535"),
        ("http://", "is not a server address"),
    ],
)
def test_bad_server_addresses_are_named(offline: Cli, server: str, message: str) -> None:
    ran = offline("list", "--server", server)
    assert ran.status == 1
    assert message in ran.stderr


def test_a_server_address_may_be_a_url(cli: Cli, address: str) -> None:
    cli.ok("list", "--server", f"http://{address}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--timeout", "0", "--", "true"], "a duration must be more than zero"),
        (["submit", "--timeout", "-5s", "--", "true"], "'-5s' is not a duration"),
        (["lsit"], "invalid choice: 'lsit'"),
        (["submit", "--at", "tomorrow", "--", "true"], "is not a time"),
        (["schedule", "create", "s", "--", "true"], "give --cron EXPR or --every DURATION"),
    ],
)
def test_usage_errors_are_one_line(offline: Cli, args: list[str], message: str) -> None:
    ran = offline(*args)
    assert ran.status == 2
    assert message in ran.stderr
    assert len(ran.stderr.splitlines()) == 1, ran.stderr


def test_submit_batch_sends_a_file_of_jobs(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(json.dumps({"cmd": ["echo", str(n)], "input": {"n": n}}) + "\n" for n in range(3))
    )
    ids = cli.ok("submit", "--batch", str(jobs)).stdout.split()
    assert len(ids) == 3
    assert [cli.ok("get", i, "--json").json[0]["input"] for i in ids] == [
        {"n": 0}, {"n": 1}, {"n": 2}
    ]  # fmt: skip
    monkeypatch.setattr(sys, "stdin", open(jobs))  # noqa: SIM115 - closed by the command
    assert len(cli.ok("submit", "--batch", "-").stdout.split()) == 3
    jobs.write_text('{"cmd": ["true"]}\n{"cmd": "true"}\n')
    bad = cli("submit", "--batch", str(jobs))
    assert bad.status == 1
    assert "line 2" in bad.stderr and "needs cmd" in bad.stderr


def test_logs_options_and_attempt_separators(cli: Cli) -> None:
    cli(
        "submit", "--wait", "--retries", "1", "--", "sh", "-c",
        'echo "try $ZBRAIN_ATTEMPT a"; echo "try $ZBRAIN_ATTEMPT b"; exit 1',
    )  # fmt: skip
    job_id = cli.ok("list", "--json").json[0]["id"]
    assert cli.ok("logs", job_id).stdout.splitlines() == [
        "try 1 a", "try 1 b", "--- attempt 2 ---", "try 2 a", "try 2 b"
    ]  # fmt: skip
    assert cli.ok("logs", job_id, "--attempt", "2").stdout.splitlines() == ["try 2 a", "try 2 b"]
    assert cli.ok("logs", job_id, "--tail", "1").stdout.splitlines() == [
        "--- attempt 2 ---", "try 2 b"
    ]  # fmt: skip
    stamped = cli.ok("logs", job_id, "--timestamps", "--attempt", "1").stdout.splitlines()
    assert re.fullmatch(r"\S+Z try 1 a", stamped[0])
    assert cli.ok("logs", job_id, "--since", "2999-01-01T00:00:00Z").stdout == ""


def test_get_summarises_large_input_and_shows_attempts(cli: Cli) -> None:
    big = json.dumps({"data": "x" * 10_000})
    job_id = cli.ok("submit", "--retries", "1", "--input", big, "--", "false").stdout.strip()
    cli("wait", job_id)
    shown = cli.ok("get", job_id).stdout
    assert "(--full shows all)" in shown
    assert len(shown) < 3000
    assert "x" * 10_000 in cli.ok("get", job_id, "--full").stdout
    table = shown[shown.index("ATTEMPT  WORKER") :].splitlines()
    assert [row.split()[0] for row in table[1:]] == ["1", "2"]
    assert all("exited with status 1" in row for row in table[1:])


def test_completion_scripts_complete_commands(offline: Cli, tmp_path: Path) -> None:
    cli = offline
    script = tmp_path / "zbrain.bash"
    script.write_text(cli.ok("completion", "bash").stdout)
    completed = subprocess.run(
        [
            "bash",
            "-c",
            f"source {script}; COMP_WORDS=(zbrain schedule cr); COMP_CWORD=2; "
            '_zbrain_complete; echo "${COMPREPLY[@]}"; '
            "COMP_WORDS=(zbrain logs --ta); COMP_CWORD=2; "
            '_zbrain_complete; echo "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.stdout.splitlines() == ["create", "--tail"], completed.stderr
    assert "complete -c zbrain" in cli.ok("completion", "fish").stdout
    assert "bashcompinit" in cli.ok("completion", "zsh").stdout


def test_events_say_when_there_are_none_after_a_sequence(cli: Cli) -> None:
    ran = cli.ok("events", "--from", "1000")
    assert ran.stdout == ""
    assert "no events after sequence 1000" in ran.stderr


def test_a_cancel_request_reads_as_one_in_events(cli: Cli) -> None:
    job_id = cli.ok("submit", "--", "sleep", "60").stdout.strip()
    deadline = time.monotonic() + 30
    while cli.ok("get", job_id, "--json").json[0]["state"] != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
    assert "was told to stop it" in cli.ok("cancel", job_id).stdout
    assert cli("wait", job_id).status == 1
    shown = cli.ok("events", "--topic", f"jobs/{job_id}/").stdout
    assert "RUNNING: cancel requested by user" in shown
    assert "RUNNING -> RUNNING" not in shown
    assert "canceled" in cli.ok("get", job_id).stdout.split("why", 1)[1].splitlines()[0]


def test_a_job_over_the_memory_it_was_given_fails_naming_the_limit(address: str) -> None:
    # Holds its memory until killed: the sleep only keeps it alive meanwhile.
    hog = "import time; block = bytearray(256 << 20); time.sleep(60)"
    out = zbrain(
        address,
        "submit", "--memory", "64M", "--cpu", "30s", "--retries", "0", "--wait",
        "--", sys.executable, "-c", hog,
    )  # fmt: skip

    assert out.returncode == 1, out.stdout + out.stderr
    assert "limits    memory 64 MiB, cpu 30s" in out.stdout
    assert "RESOURCE_LIMIT_EXCEEDED" in out.stdout
    assert "memory limit exceeded" in out.stdout


def test_a_limit_that_cannot_work_is_refused_with_the_field_named(address: str) -> None:
    out = zbrain(address, "submit", "--open-files", "1", "--", "true")

    assert out.returncode != 0
    assert "job.resources.open_files: must be 0 (no limit) or at least 3" in out.stderr


def test_sharing_commands_and_submit_flags(cli: Cli) -> None:
    job_id = cli.ok(
        "submit", "--requires", "gpu", "--requires", "zone=eu", "--concurrency-key", "c42",
        "--memory", "64M", "--cpu", "1.5s", "--network", "--", "true",
    ).stdout.strip()  # fmt: skip
    shown = cli.ok("get", job_id[-8:]).stdout  # by its short id
    assert "requires  gpu zone=eu" in shown
    assert "key       c42 (at most 1 at once)" in shown
    assert "limits    memory 64 MiB, cpu 2s, network" in shown
    assert "waiting   " in shown  # no worker offers gpu
    [unmatched] = cli.ok("list", "--unmatched", "--json").json
    assert (unmatched["id"], unmatched["requires"]) == (job_id, {"gpu": "", "zone": "eu"})
    assert unmatched["resources"]["memory_bytes"] == 64 << 20

    cli.ok("org", "set", "default", "--max-running", "3", "--max-starts-per-second", "2.5")
    [settings] = cli.ok("org", "pause", "default", "--selector", "team=a", "--json").json
    assert (settings["max_running_jobs"], settings["max_starts_per_second"]) == (3, 2.5)
    assert settings["paused_selectors"] == [{"team": "a"}]
    assert re.search(r"paused selectors +team=a\n", cli.ok("org", "get", "default").stdout)
    cli.ok("org", "resume", "default", "--selector", "team=a")
    assert cli.ok("org", "get", "default", "--json").json[0]["paused_selectors"] == []
    assert cli.ok("workers").stdout.startswith("ID ")
    for args, message in (
        (["org", "set", "default"], "nothing to set: give one of --max-running"),
        (["org", "set", "default", "--max-waiting", "-1"], "must be 0 (none of its own) or more"),
        (["submit", "--memory", "lots", "--", "true"], "'lots' is not a size"),
        (["submit", "--requires", "=x", "--", "true"], "expected KEY=VALUE or KEY"),
    ):
        ran = cli(*args)
        assert ran.status == 2 and message in ran.stderr and len(ran.stderr.splitlines()) == 1
