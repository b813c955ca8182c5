"""The workflow commands of the command line (issue 15) end to end: jobs
that wait for others, delayed jobs, graph files, the graph around a job,
templates, schedules and rerun, against a real `zbrain serve` with workers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.integration.conftest import Cli


def test_jobs_wait_for_others_and_graph_shows_them(cli: Cli) -> None:
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    first = cli.ok("submit", "--at", later, "--", "true").stdout.strip()
    second = cli.ok("submit", "--after", f"{first[-8:]}:finished", "--", "echo", "2").stdout
    third = cli.ok("submit", "--after", second.strip(), "--", "echo", "3").stdout.strip()

    shown = cli.ok("graph", third[-8:]).stdout.splitlines()
    assert [row.split()[:2] for row in shown[1:]] == [
        [first[-8:], "SCHEDULED"], [second.strip()[-8:], "BLOCKED"], [f"*{third[-8:]}", "BLOCKED"]
    ]  # fmt: skip
    [graph] = cli.ok("graph", third, "--json").json
    assert {(e["parent"], e["child"], e["condition"]) for e in graph["edges"]} == {
        (first, second.strip(), "FINISHED"), (second.strip(), third, "SUCCEEDED")
    }  # fmt: skip
    assert "after     " + first[-8:] + " (finished)" in cli.ok("get", second.strip()).stdout

    cli.ok("cancel", first)  # and with it every job waiting downstream
    waited = cli("wait", third[-8:], "--json")
    assert waited.status == 1
    assert waited.json[0]["state"] == "CANCELED"


def test_a_delayed_job_waits_its_time(cli: Cli) -> None:
    [job] = cli.ok("submit", "--delay", "1s", "--json", "--", "true").json
    assert job["state"] == "SCHEDULED"
    assert job["next_run_time"] > job["create_time"]
    assert cli.ok("wait", job["id"], "--json").json[0]["state"] == "SUCCEEDED"


def test_run_graph_submits_a_file_and_waits_for_it(cli: Cli, tmp_path: Path) -> None:
    graph = tmp_path / "pipeline.yaml"
    graph.write_text(
        "jobs:\n"
        "  extract: {cmd: [echo, extracted]}\n"
        "  load: {cmd: [sh, -c, 'exit 3'], max_retries: 0, after: [extract]}\n"
        "  report: {cmd: [echo, done], after: [load]}\n"
    )
    ran = cli("run-graph", str(graph), "--wait")
    assert ran.status == 1
    rows = {row.split()[0]: row.split()[2] for row in ran.stdout.splitlines()[1:]}
    assert rows == {"extract": "SUCCEEDED", "load": "FAILED", "report": "CANCELED"}

    [submitted] = cli.ok("run-graph", str(graph), "--json").json
    assert list(submitted["jobs"]) == ["extract", "load", "report"]

    graph.write_text("jobs:\n  a: {cmd: [true], after: [b]}\n  b: {cmd: [true], after: [a]}\n")
    cycle = cli("run-graph", str(graph))
    assert cycle.status == 1
    assert "cycle" in cycle.stderr


def test_templates_from_the_command_line(cli: Cli) -> None:
    created = cli.ok(
        "template", "create", "greet", "--param", "who", "--param", "times:integer=1",
        "--", "echo", "hello {{ who }}",
    )  # fmt: skip
    assert created.stdout == "template greet version 1 created\n"
    assert "who (string, required)" in cli.ok("template", "get", "greet").stdout
    assert cli.ok("template", "list").stdout.splitlines()[1].split()[:3] == [
        "greet", "1", "who,"
    ]  # fmt: skip

    [job] = cli.ok("template", "submit", "greet", "--param", "who=Ada", "--wait", "--json").json
    assert job["cmd"] == ["echo", "hello Ada"]
    assert cli.ok("logs", job["id"]).stdout == "hello Ada\n"
    missing = cli("template", "submit", "greet")
    assert missing.status == 1
    assert "'who' is missing" in missing.stderr
    assert "deleted (1 versions)" in cli.ok("template", "delete", "greet").stdout


def test_schedules_from_the_command_line(cli: Cli) -> None:
    assert (
        "schedule hb created"
        in cli.ok(
            "schedule", "create", "hb", "--every", "1h", "--paused", "--", "echo", "alive"
        ).stdout
    )
    assert cli.ok("schedule", "list").stdout.splitlines()[1].split()[:3] == ["hb", "every", "1h00m"]
    job_id = cli.ok("schedule", "trigger", "hb").stdout.strip()
    assert cli.ok("wait", job_id, "--json").json[0]["labels"]["zbrain.schedule"] == "hb"
    assert "schedule hb resumed; next fire in" in cli.ok("schedule", "resume", "hb").stdout
    shown = cli.ok("schedule", "get", "hb").stdout
    assert shown.count("upcoming") >= 2
    [paused] = cli.ok("schedule", "pause", "hb", "--json").json
    assert paused["paused"] is True
    cli.ok("schedule", "delete", "hb")
    assert cli("schedule", "get", "hb").status == 1


def test_rerun_submits_a_finished_job_again(cli: Cli) -> None:
    first = cli.ok("submit", "--input", json.dumps({"n": 1}), "--", "cat").stdout.strip()
    cli.ok("wait", first)
    [again] = cli.ok("rerun", first[-8:], "--input", '{"n": 2}', "--wait", "--json").json
    assert again["state"] == "SUCCEEDED" and again["rerun_of"] == first
    assert cli.ok("get", first, "--json").json[0]["rerun_ids"] == [again["id"]]
