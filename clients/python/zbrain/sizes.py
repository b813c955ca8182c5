"""Sizes as people write them: `512M`, `2G`, `64KiB` or plain bytes; and
counts, whole numbers of things.

One parser for the worker's `--max-memory`-like flags, `zbrain submit
--memory` and the server's ZBRAIN_*_BYTES settings, so a size means the same
wherever it is written. Units are binary (K = 1024), as `ulimit` and memory
tools count.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:I?B)?|B)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {None: 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """The number of bytes `text` stands for; ValueError saying what is
    accepted when it is not a size."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size; use a number of bytes or e.g. 64K, 512M, 2G")
    unit = match.group(2).upper() if match.group(2) else None
    return int(float(match.group(1)) * _UNIT_BYTES[unit])


def format_size(size: int) -> str:
    """`size` bytes in the largest binary unit that keeps it whole-ish: 64 MiB."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def parse_count(text: str) -> int:
    """A whole number of things (processes, files, slots, retries); ValueError
    in words a person can act on, not Python's `invalid literal for int()`."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
