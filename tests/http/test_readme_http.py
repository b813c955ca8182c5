"""The README's HTTP API examples run verbatim with curl against `zbrain
serve --workers 2 --http-listen`, as `make run` starts it (only the port
differs), so the README cannot drift from what works."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Processes, free_port

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
README_URL = "http://127.0.0.1:8080"


def http_examples() -> str:
    section = README.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", section, re.S)
    [block] = blocks
    return block


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_examples_submit_get_follow_list_and_cancel(
    processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    processes.server(tmp_path / "data", "--workers", "2", "--http-listen", f"127.0.0.1:{port}")
    script = http_examples().replace(README_URL, f"http://127.0.0.1:{port}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"text": "line 1"' in out and '"text": "line 3"' in out  # the followed log
    assert '"state": "JOB_STATE_SUCCEEDED"' in out  # the list, after the log ended
    assert '"outcome": "CANCEL_OUTCOME_' in out  # the cancel
