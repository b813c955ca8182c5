"""Durations as people write them: `500ms`, `30s`, `5m`, `2h`, `7d` or plain seconds.

One parser for the command line's flags and the server's ZBRAIN_* settings,
so a value means the same wherever it is written.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """The number of seconds `text` stands for; ValueError saying what is
    accepted when it is not a duration (a negative one is not)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; use a number of seconds or e.g. 500ms, 30s, 5m, 2h, 7d"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
