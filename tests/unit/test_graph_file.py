"""Graph files (`zbrain run-graph`): named jobs and their dependencies, read
into one batch, with every mistake named."""

from __future__ import annotations

from pathlib import Path

import pytest

from zbrain.errors import InvalidArgumentError
from zbrain.graphs import parse_graph, read_graph
from zbrain.v1 import job_pb2

GRAPH = """
org: analytics
defaults:
  timeout: 10m
  max_retries: 2
jobs:
  extract:
    cmd: [python, extract.py]
    input: {day: "2026-12-01"}
  load:
    cmd: [python, load.py]
    after: [extract]
    max_retries: 0
  notify:
    cmd: [echo, done]
    after: [{job: load, condition: finished}, "01a2351e-5d01-727c-a5d4-e8363595ea3c:finished"]
"""


def test_a_yaml_graph_becomes_one_batch_with_refs(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(GRAPH)

    graph = read_graph(path)

    assert graph.names == ["extract", "load", "notify"]
    extract, load, notify = graph.specs
    assert (extract.ref, extract.org_id, extract.input_json) == (
        "extract",
        "analytics",
        '{"day": "2026-12-01"}',
    )
    assert extract.timeout.seconds == 600 and extract.max_retries == 2
    assert load.max_retries == 0
    assert [(d.ref, d.condition) for d in load.depends_on] == [
        ("extract", job_pb2.DEPENDENCY_CONDITION_SUCCEEDED)
    ]
    assert [(d.ref, d.job_id, d.condition) for d in notify.depends_on] == [
        ("load", "", job_pb2.DEPENDENCY_CONDITION_FINISHED),
        ("", "01a2351e-5d01-727c-a5d4-e8363595ea3c", job_pb2.DEPENDENCY_CONDITION_FINISHED),
    ]


def test_json_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text('{"jobs": {"a": {"cmd": ["true"]}, "b": {"cmd": ["true"], "after": ["a"]}}}')

    assert read_graph(path).names == ["a", "b"]


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"jobs": []}, "mapping"),
        ({"jobs": {}}, "no jobs"),
        ({"jobs": {"a": {"cmd": "echo hi"}}}, "list of arguments"),
        ({"jobs": {"a": {"cmd": ["true"], "after": ["nobody"]}}}, "'nobody'"),
        (
            {"jobs": {"a": {"cmd": ["true"], "after": ["b:sometimes"]}, "b": {"cmd": ["x"]}}},
            "sometimes",
        ),
        ({"jobs": {"a": {"cmd": ["true"], "colour": "red"}}}, "colour"),
        ({"jobs": {"a": {"cmd": ["true"], "timeout": "soon"}}}, "duration"),
        ({"jobs": {"a": {"cmd": ["true"], "run_at": "2026-12-03T02:00:00"}}}, "time zone"),
        ({"jobs": {"a": {"cmd": ["true"]}}, "extra": 1}, "unknown keys"),
    ],
)
def test_mistakes_are_named(document: object, words: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        parse_graph(document, "g.yaml")

    assert words in str(refused.value)
    assert str(refused.value).startswith("g.yaml")


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        read_graph(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: [unclosed")
    with pytest.raises(InvalidArgumentError, match="not valid YAML"):
        read_graph(bad)
