"""Validation of what arrives over the wire: job specs and List page tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import duration_pb2

from zbrain.errors import InvalidArgumentError
from zbrain.protocol import TRUNCATION_MARK
from zbrain.v1 import job_pb2, job_service_pb2
from zbrain_server.config import Limits
from zbrain_server.core import lifecycle
from zbrain_server.core.ids import new_job_id
from zbrain_server.core.model import Job, JobQuery, JobState, NewJob
from zbrain_server.rpc import validation

# Small limits make each bound easy to cross.
LIMITS = Limits(
    max_input_bytes=40,
    max_cmd_args=3,
    max_cmd_bytes=20,
    max_env_entries=2,
    max_env_bytes=30,
    max_labels=2,
    max_label_bytes=10,
    max_timeout_s=100.0,
    max_retry_budget=5,
    max_request_id_bytes=8,
    max_page_size=10,
)

# -- new_job ---------------------------------------------------------------------


def validate(spec: job_pb2.JobSpec, request_id: str = "") -> NewJob:
    return validation.new_job(
        spec,
        field="job",
        org_id=spec.org_id or "home",
        default_timeout_s=30.0,
        default_max_retries=2,
        limits=LIMITS,
        request_id=request_id,
    )


def violated_fields(spec: job_pb2.JobSpec, request_id: str = "") -> list[str]:
    with pytest.raises(InvalidArgumentError) as error:
        validate(spec, request_id)
    return [violation.field for violation in error.value.violations]


def spec(**fields: Any) -> job_pb2.JobSpec:
    """A valid JobSpec; keyword arguments replace (or, as None, remove) fields."""
    values: dict[str, Any] = dict(cmd=["echo", "hi"])
    values.update(fields)
    return job_pb2.JobSpec(**{k: v for k, v in values.items() if v is not None})


def test_a_minimal_spec_takes_the_server_defaults() -> None:
    job = validate(spec())

    assert job == NewJob(
        org_id="home",
        cmd=("echo", "hi"),
        input_json="null",
        env={},
        timeout_us=30_000_000,
        max_retries=2,
        priority=0,
        labels={},
    )


def test_a_full_spec_is_kept_as_given() -> None:
    job = validate(
        spec(
            org_id="acme",
            input_json='{"a": [1]}',
            env={"X": "1"},
            labels={"k": "v"},
            timeout=duration_pb2.Duration(seconds=90, nanos=500_000),
            max_retries=0,
            priority=-4,
        ),
        request_id="r-1",
    )

    assert (job.org_id, job.input_json, job.request_id) == ("acme", '{"a": [1]}', "r-1")
    assert (job.env, job.labels) == ({"X": "1"}, {"k": "v"})
    assert job.timeout_us == 90_000_500
    assert (job.max_retries, job.priority) == (0, -4)


BAD_SPECS: list[tuple[str, job_pb2.JobSpec, str, str]] = [
    ("org_id_with_space", spec(org_id="my org"), "", "job.org_id"),
    ("org_id_leading_dash", spec(org_id="-acme"), "", "job.org_id"),
    ("org_id_too_long", spec(org_id="a" * 65), "", "job.org_id"),
    ("no_cmd", spec(cmd=None), "", "job.cmd"),
    ("empty_program", spec(cmd=["", "x"]), "", "job.cmd[0]"),
    ("too_many_args", spec(cmd=["a", "b", "c", "d"]), "", "job.cmd"),
    ("cmd_too_long", spec(cmd=["x" * 21]), "", "job.cmd"),
    ("nul_in_arg", spec(cmd=["echo", "a\x00b"]), "", "job.cmd[1]"),
    ("input_not_json", spec(input_json="{nope"), "", "job.input_json"),
    ("input_too_large", spec(input_json='"' + "x" * 40 + '"'), "", "job.input_json"),
    ("env_bad_name", spec(env={"1X": "v"}), "", "job.env['1X']"),
    ("env_reserved_name", spec(env={"ZBRAIN_JOB_ID": "v"}), "", "job.env['ZBRAIN_JOB_ID']"),
    ("env_nul_value", spec(env={"X": "a\x00"}), "", "job.env['X']"),
    ("env_too_many", spec(env={"A": "1", "B": "2", "C": "3"}), "", "job.env"),
    ("env_too_large", spec(env={"A": "x" * 30}), "", "job.env"),
    ("labels_too_many", spec(labels={"a": "", "b": "", "c": ""}), "", "job.labels"),
    ("label_empty_key", spec(labels={"": "v"}), "", "job.labels"),
    ("labels_too_large", spec(labels={"a": "x" * 20}), "", "job.labels['a']"),
    ("timeout_zero", spec(timeout=duration_pb2.Duration()), "", "job.timeout"),
    ("timeout_negative", spec(timeout=duration_pb2.Duration(seconds=-5)), "", "job.timeout"),
    ("timeout_bad_nanos", spec(timeout=duration_pb2.Duration(nanos=-1)), "", "job.timeout"),
    ("timeout_too_long", spec(timeout=duration_pb2.Duration(seconds=101)), "", "job.timeout"),
    ("retries_negative", spec(max_retries=-1), "", "job.max_retries"),
    ("retries_too_many", spec(max_retries=6), "", "job.max_retries"),
    ("limit_without_key", spec(concurrency_limit=2), "", "job.concurrency_limit"),
    ("key_too_long", spec(concurrency_key="k" * 11), "", "job.concurrency_key"),
    (
        "key_limit_negative",
        spec(concurrency_key="k", concurrency_limit=-1),
        "",
        "job.concurrency_limit",
    ),
    ("requires_empty_key", spec(requires={"": "a100"}), "", "job.requires"),
    ("requires_too_many", spec(requires={"a": "", "b": "", "c": ""}), "", "job.requires"),
    ("request_id_too_long", spec(), "123456789", "request_id"),
    ("request_id_nul", spec(), "a\x00", "request_id"),
]


@pytest.mark.parametrize(
    ("bad_spec", "request_id", "field"),
    [case[1:] for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_each_bad_field_is_named(bad_spec: job_pb2.JobSpec, request_id: str, field: str) -> None:
    assert violated_fields(bad_spec, request_id) == [field]


def test_every_bad_field_is_named_at_once() -> None:
    bad = spec(
        org_id="bad org",
        cmd=[],
        input_json="{",
        env={"ZBRAIN_X": "1"},
        max_retries=99,
        timeout=duration_pb2.Duration(seconds=-1),
    )

    fields = violated_fields(bad, request_id="x" * 9)

    assert sorted(fields) == sorted(
        [
            "job.org_id",
            "job.cmd",
            "job.input_json",
            "job.env['ZBRAIN_X']",
            "job.max_retries",
            "job.timeout",
            "request_id",
        ]
    )


def test_the_error_message_names_the_bad_fields_too() -> None:
    with pytest.raises(InvalidArgumentError) as error:
        validate(spec(cmd=[]))

    assert "job.cmd" in str(error.value)


def test_the_field_prefix_locates_a_job_in_a_batch() -> None:
    with pytest.raises(InvalidArgumentError) as error:
        validation.new_job(
            spec(input_json="{"),
            field="jobs[3]",
            org_id="home",
            default_timeout_s=30.0,
            default_max_retries=2,
            limits=LIMITS,
        )

    assert [v.field for v in error.value.violations] == ["jobs[3].input_json"]


def test_the_limits_themselves_are_allowed() -> None:
    job = validate(
        spec(
            cmd=["a", "b", "c" * 18],
            input_json='"' + "x" * 38 + '"',
            env={"A": "1", "B": "x" * 26},
            labels={"a": "1", "b": "2"},
            timeout=duration_pb2.Duration(seconds=100),
            max_retries=5,
        ),
        request_id="12345678",
    )

    assert job.max_retries == 5


# -- list_query and page tokens --------------------------------------------------

NEWEST, OLDEST = job_service_pb2.LIST_ORDER_NEWEST_FIRST, job_service_pb2.LIST_ORDER_OLDEST_FIRST
PENDING, RUNNING = job_pb2.JOB_STATE_PENDING, job_pb2.JOB_STATE_RUNNING

MakePage = Callable[[int], list[Job]]


@pytest.fixture
def make_page() -> MakePage:
    """A page of n stored jobs with real, increasing ids."""
    new = NewJob(
        org_id="acme", cmd=("true",), input_json="null", env={}, timeout_us=1, max_retries=0
    )

    def make_page(n: int) -> list[Job]:
        return [lifecycle.submitted_job(new_job_id(), new, 0) for _ in range(n)]

    return make_page


def list_query(**fields: Any) -> JobQuery:
    request = job_service_pb2.ListRequest(**fields)
    return validation.list_query(request, request.org_id or "home", LIMITS)


def test_a_bare_list_request_lists_the_default_org_newest_first() -> None:
    assert list_query() == JobQuery(org_id="home", states=(), newest_first=True, limit=10)


def test_list_query_takes_filters_and_order() -> None:
    query = list_query(org_id="acme", states=[RUNNING, PENDING], order=OLDEST, page_size=3)

    assert query == JobQuery("acme", (JobState.PENDING, JobState.RUNNING), False, 3)


def test_page_size_is_capped_by_the_limit() -> None:
    assert list_query(page_size=1000).limit == LIMITS.max_page_size


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"org_id": "no spaces"}, "org_id"),
        ({"states": [0]}, "states[0]"),
        ({"states": [PENDING, 42]}, "states[1]"),
        ({"order": 9}, "order"),
        ({"page_size": -1}, "page_size"),
    ],
    ids=["org_id", "unspecified_state", "unknown_state", "unknown_order", "negative_page_size"],
)
def test_a_bad_list_request_names_its_bad_field(request_fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        list_query(**request_fields)

    assert [v.field for v in error.value.violations] == [field]


def test_a_full_page_gets_a_token_that_continues_after_its_last_job(make_page: MakePage) -> None:
    query = list_query(org_id="acme", states=[PENDING], order=OLDEST, page_size=3)
    page = make_page(3)

    token = validation.next_page_token(query, page)
    continued = list_query(
        org_id="acme", states=[PENDING], order=OLDEST, page_size=3, page_token=token
    )

    assert token
    assert continued == replace(query, after_id=page[-1].id)


def test_a_short_page_is_the_last_one(make_page: MakePage) -> None:
    query = list_query(page_size=3)

    assert validation.next_page_token(query, make_page(2)) == ""
    assert validation.next_page_token(query, []) == ""


def test_a_token_may_continue_with_another_page_size(make_page: MakePage) -> None:
    page = make_page(2)
    token = validation.next_page_token(list_query(page_size=2), page)

    assert list_query(page_size=5, page_token=token).after_id == page[-1].id


def test_a_token_does_not_depend_on_the_order_states_are_named(make_page: MakePage) -> None:
    page = make_page(1)
    token = validation.next_page_token(list_query(states=[RUNNING, PENDING], page_size=1), page)

    assert list_query(states=[PENDING, RUNNING], page_token=token).after_id == page[-1].id


@pytest.mark.parametrize(
    "other_filters",
    [{"org_id": "other"}, {"states": [RUNNING]}, {"states": []}, {"order": OLDEST}],
    ids=["org", "states", "no_states", "order"],
)
def test_a_token_is_refused_with_other_filters(
    make_page: MakePage, other_filters: dict[str, Any]
) -> None:
    filters: dict[str, Any] = {"org_id": "acme", "states": [PENDING], "order": NEWEST}
    token = validation.next_page_token(list_query(**filters, page_size=1), make_page(1))

    with pytest.raises(InvalidArgumentError) as error:
        list_query(**{**filters, **other_filters}, page_token=token)

    [violation] = error.value.violations
    assert violation.field == "page_token"
    assert "different filters" in violation.description


def encode(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def decode(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


@pytest.mark.parametrize(
    "token",
    [
        "garbage!!",
        "%%%",
        "a",
        base64.urlsafe_b64encode(b"\xff\xfe not utf-8").decode(),
        encode("just a string"),
        encode([1, 2, 3]),
        encode(None),
        encode({"after": new_job_id()}),
        encode({"filter": "x"}),
    ],
    ids=[
        "not_base64",
        "symbols",
        "truncated",
        "not_utf8",
        "json_string",
        "json_list",
        "json_null",
        "no_filter",
        "no_after",
    ],
)
def test_a_garbage_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        list_query(page_token=token)

    [violation] = error.value.violations
    assert violation.field == "page_token"


@pytest.mark.parametrize("after", ["not-a-job-id", 42, None, ["x"]])
def test_a_token_naming_no_job_id_is_refused(make_page: MakePage, after: object) -> None:
    genuine = validation.next_page_token(list_query(page_size=1), make_page(1))
    token = encode({**decode(genuine), "after": after})

    with pytest.raises(InvalidArgumentError) as error:
        list_query(page_token=token)

    assert [v.field for v in error.value.violations] == ["page_token"]


# -- log lines -------------------------------------------------------------------


def test_a_line_within_the_limit_is_kept_whole() -> None:
    assert validation.truncate_line("héllo", 6) == "héllo"


def test_an_over_long_line_is_cut_to_the_limit_with_a_visible_mark() -> None:
    cut = validation.truncate_line("x" * 1000, 100)

    assert cut.endswith(TRUNCATION_MARK)
    assert len(cut.encode()) <= 100
    assert cut.startswith("x" * 50)


def test_a_cut_never_splits_a_character() -> None:
    cut = validation.truncate_line("é" * 100, 51)

    assert len(cut.encode()) <= 51
    assert cut.removesuffix(TRUNCATION_MARK) == "é" * ((51 - 20) // 2)


def test_a_limit_below_the_mark_still_bounds_the_line() -> None:
    assert len(validation.truncate_line("x" * 1000, 10).encode()) <= 10


def test_a_nul_in_an_attempt_error_is_shown_not_refused() -> None:
    result = validation.attempt_result(
        job_service_pb2.AttemptResult(
            outcome=job_service_pb2.ATTEMPT_OUTCOME_FAILED, error="bad\x00byte"
        )
    )

    assert result.error == "bad\ufffdbyte"
