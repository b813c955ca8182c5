"""The command line's parts that need no server: ids as typed, durations and
times as shown, and how words are read before argparse sees them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import cast

import pytest

from zbrain.cli import _attach_dashed_values, _command_word, _output, build_parser, main
from zbrain.cli._ids import is_suffix, normalise
from zbrain.cli._output import Output, duration, summarise
from zbrain.sizes import format_size

JOB_ID = "01a23591-a74f-70d8-abf7-44619821f5a1"


@pytest.mark.parametrize(
    "typed", [JOB_ID, JOB_ID.upper(), JOB_ID.replace("-", ""), f"  {JOB_ID}\n"]
)
def test_a_full_id_is_read_in_any_case_with_or_without_dashes(typed: str) -> None:
    assert normalise(typed) == JOB_ID


@pytest.mark.parametrize(
    ("typed", "short"),
    [
        ("9821f5a1", True),
        ("9821F5A1", True),
        ("21f5a1", True),
        ("f5a1", False),
        ("zzzzzzzz", False),
    ],
)
def test_a_short_id_is_six_or_more_hex_digits(typed: str, short: bool) -> None:
    assert normalise(typed) is None
    assert is_suffix(typed) is short


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.85, "850ms"),
        (2, "2s"),
        (4.25, "4.25s"),
        (184, "3m04s"),
        (7500, "2h05m"),
        (273600, "3d04h"),
    ],
)
def test_durations_read_as_people_write_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_times_are_relative_or_exact_in_utc() -> None:
    now = datetime(2026, 12, 2, 6, 40, 12, tzinfo=UTC)
    out = Output(now=now)
    assert out.when(now - timedelta(minutes=2, seconds=5)) == "2m ago"
    assert out.when(now + timedelta(hours=3)) == "in 3h"
    assert out.when(None) == "-"
    assert Output(utc=True, now=now).when(now) == "2026-12-02T06:40:12Z"


def test_relative_times_are_read_when_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`submit --wait` prints a job that finished after the command began: its
    times are in the past then, not "in 5s" from when the command began."""
    began = datetime(2026, 12, 2, 14, 55, 20, tzinfo=UTC)
    time_now = [began]

    class Clock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Clock:
            return cast(Clock, time_now[0])

    monkeypatch.setattr(_output, "datetime", Clock)
    out = Output()  # the command begins
    time_now[0] = began + timedelta(seconds=60)  # and prints a minute later
    assert out.when(began + timedelta(seconds=55)) == "5s ago"


def test_large_json_is_summarised_unless_asked_for_whole() -> None:
    value = {"data": "x" * 1000}
    assert summarise(value).startswith('1012 bytes: {"data": "xxx')
    assert summarise(value).endswith("(--full shows all)")
    assert summarise(value, full=True) == '{"data": "' + "x" * 1000 + '"}'
    assert format_size(3 * 1024 * 1024) == "3 MiB"


def test_a_value_starting_with_a_dash_is_attached_to_its_option() -> None:
    parser = build_parser(with_plugin=False)
    words = ["submit", "--timeout", "-5s", "--priority", "-1", "--wait", "-1"]
    assert _attach_dashed_values(words, parser) == [
        "submit", "--timeout=-5s", "--priority=-1", "--wait", "-1"
    ]  # fmt: skip


def test_the_command_word_skips_global_options_and_their_values() -> None:
    assert _command_word(["--server", "list", "get", "x"]) == "get"
    assert _command_word(["--json", "--log-format", "json", "serve"]) == "serve"
    assert _command_word(["--version"]) is None


def test_org_byte_quotas_are_read_as_sizes() -> None:
    args = build_parser(with_plugin=False).parse_args(
        ["org", "set", "team-a", "--max-log-bytes", "512M", "--max-artifact-bytes", "4096"]
    )
    assert (args.max_log_bytes, args.max_artifact_bytes) == (512 << 20, 4096)


def test_a_client_command_is_parsed_by_its_own_parser_and_help_still_lists_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`main` builds only the command named (the whole tree cost more than a
    Get call); what it reads is the same, and help still shows every command."""
    alone = build_parser(with_plugin=False, only="get")
    args = alone.parse_args(["get", "2d81f67a", "--full", "--org", "team-a"])
    assert (args.id, args.full, args.org) == ("2d81f67a", True, "team-a")
    with pytest.raises(SystemExit):
        main(["--help", "get"])
    assert "submit" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["get", "--server", "127.0.0.1:1"])
    assert capsys.readouterr().err.startswith(
        "zbrain get: error: the following arguments are required: id"
    )
