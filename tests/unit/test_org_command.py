"""How `zbrain org get` shows an organisation's settings."""

from __future__ import annotations

import pytest

from zbrain.cli._orgs import _settings
from zbrain.cli._output import Output
from zbrain.models import OrgSettings


def shown_settings(settings: OrgSettings, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    _settings(Output(), settings)
    rows = [line.split("  ", 1) for line in capsys.readouterr().out.splitlines()]
    return {key.strip(): value.strip() for key, value in rows}


def test_byte_quotas_are_shown_in_full_against_usage_and_a_rate_briefly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = OrgSettings(
        "team-a", max_starts_per_second=2.5, max_log_bytes=10_000_000, log_bytes_used=2_500_000
    )
    shown = shown_settings(settings, capsys)
    assert shown["log bytes"] == "2500000 of 10000000 (25%)"
    assert shown["max starts/s"] == "2.5"
    assert shown["artifact bytes"] == "0 stored, no quota"
