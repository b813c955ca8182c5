"""Fixtures of the command-line tests: a served ZBrain and the `zbrain`
command line run in this process against it."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Processes
from zbrain.cli import main


@pytest.fixture
def address(processes: Processes, tmp_path: Path) -> str:
    """A `zbrain serve --workers 2` process, as `make run` starts it (with
    quick retries)."""
    quick = {"ZBRAIN_RETRY_BASE": "50ms", "ZBRAIN_RETRY_CAP": "200ms"}
    _, address = processes.server(tmp_path / "data", "--workers", "2", env=quick)
    return address


@dataclass
class Ran:
    """What a command did: its exit status and what it printed."""

    status: int
    stdout: str
    stderr: str

    @property
    def json(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines()]


class Cli:
    """Runs `zbrain ARGS...` in this process against one server."""

    def __init__(
        self, address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.capsys = capsys
        monkeypatch.setenv("ZBRAIN_SERVER", address)
        monkeypatch.setenv("ZBRAIN_LOG_FORMAT", "text")  # main sets it; restored after
        monkeypatch.setattr(sys, "stdin", sys.stdin)
        # main() sets up logging for the process; this one's is put back after.
        root = logging.getLogger()
        monkeypatch.setattr(root, "handlers", list(root.handlers))
        monkeypatch.setattr(root, "level", root.level)

    def __call__(self, *args: str) -> Ran:
        self.capsys.readouterr()
        try:
            status = main(list(args))
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 0
        out = self.capsys.readouterr()
        return Ran(status, out.out, out.err)

    def ok(self, *args: str) -> Ran:
        ran = self(*args)
        assert ran.status == 0, ran
        return ran


@pytest.fixture
def cli(address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(address, capsys, monkeypatch)


@pytest.fixture
def offline(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The command line with no server: for what it must answer by itself."""
    return Cli("127.0.0.1:1", capsys, monkeypatch)
