"""How `zbrain org get` shows an organisation's settings."""

from __future__ import annotations

import pytest

from zbrain.cli._orgs import _settings
from zbrain.cli._output import Output
from zbrain.models import OrgSettings


def test_byte_limits_are_shown_in_full_and_a_rate_briefly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _settings(Output(), OrgSettings("team-a", max_starts_per_second=2.5, max_log_bytes=10_000_000))
    shown = capsys.readouterr().out
    assert "max log bytes       10000000 per job\n" in shown
    assert "max starts/s        2.5\n" in shown
    assert "max artifact bytes  none of its own (the server's)\n" in shown
