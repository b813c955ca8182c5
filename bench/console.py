"""The web console's figures, in a real headless Chromium (docs/console.md).

    python -m bench.console                 # 100,000 log lines; the jobs page over 100,000 jobs
    python -m bench.console --lines 20000 --jobs 5000

- A job printing --lines lines as fast as it can, followed live on its page:
  how long until the last line is on the page, the longest gap between two
  animation frames meanwhile (what a reader would feel as a frozen page)
  beside the same on the idle page for 5 s before (what a busy machine alone
  costs), the JavaScript heap, and how many lines the DOM holds.
- The jobs page over --jobs stored jobs: the time List takes for the page's
  first page (50 jobs, newest first) over HTTP, p50 and p99 of 200 calls;
  and its events socket (`topic=jobs/`) as a page load opens it, from the
  end (`from_end=true`), beside one from the start that replays the stored
  history (one event a job) until it is caught up: time and bytes.

It prints figures and asserts nothing about time, like bench.run. It needs
the browser the browser tests use (Debian's chromium and chromium-driver).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tests.browser.conftest import Consoles, start_browser, wait_for
from zbrain.client import job_spec

FLOOD = (
    "import pathlib, sys, time; print('ready', flush=True); "
    "[time.sleep(0.02) for _ in iter(lambda: pathlib.Path(sys.argv[1]).exists(), True)]; "
    "sys.stdout.writelines(f'line {i}\\n' for i in range(int(sys.argv[2])))"
)
# Installed once the page follows the job: the longest gap between frames.
WATCH_FRAMES = """
window.zbrainFrames = {longest: 0, last: performance.now()};
const tick = (now) => {
  const frames = window.zbrainFrames;
  frames.longest = Math.max(frames.longest, now - frames.last);
  frames.last = now;
  requestAnimationFrame(tick);
};
requestAnimationFrame(tick);
"""
LINES_ON_PAGE = "return document.querySelectorAll('#log-lines .line[data-seq]').length"
LAST_LINE = (
    "const lines = document.querySelectorAll('#log-lines .line[data-seq]');"
    "return lines.length ? lines[lines.length - 1].textContent : null"
)


def follow_a_flood(consoles: Consoles, driver: Any, folder: Path, lines: int) -> None:
    console = consoles.start(workers=1)
    gate = folder / "gate"
    with console.client() as client:
        job = client.submit([sys.executable, "-c", FLOOD, str(gate), str(lines)])
    driver.get(console.url + f"#/jobs/{job.id}")
    wait_for(driver, lambda d: d.execute_script(LINES_ON_PAGE) >= 1)
    driver.execute_script(WATCH_FRAMES)
    # The same page idle for as long, first: what the machine alone costs the frames.
    time.sleep(5)
    idle = driver.execute_script("return window.zbrainFrames.longest")
    driver.execute_script(WATCH_FRAMES)
    started = time.monotonic()
    gate.touch()
    wait_for(driver, lambda d: d.execute_script(LAST_LINE) == f"line {lines - 1}", timeout=600)
    took = time.monotonic() - started
    longest = driver.execute_script("return window.zbrainFrames.longest")
    heap = driver.execute_script("return performance.memory.usedJSHeapSize")
    on_page = driver.execute_script(LINES_ON_PAGE)
    print(f"log flood: {lines:,} lines on the page {took:.1f} s after the first")
    print(
        f"  longest gap between frames meanwhile: {longest:.0f} ms (idle page, 5 s: {idle:.0f} ms)"
    )
    print(f"  JavaScript heap after: {heap / 2**20:.1f} MiB; lines in the DOM: {on_page:,}")


def first_page(consoles: Consoles, jobs: int) -> None:
    console = consoles.start(workers=0)
    with console.client() as client:
        for start in range(0, jobs, 1000):
            count = min(1000, jobs - start)
            client.submit_batch(job_spec(["true"], labels={"n": str(start)}) for _ in range(count))
    url = console.url + "v1/jobs?page_size=50"
    took = []
    for _ in range(200):
        begin = time.perf_counter()
        with urllib.request.urlopen(url) as answer:
            answer.read()
        took.append((time.perf_counter() - begin) * 1000)
    took.sort()
    print(
        f"jobs page, first page of 50 over {jobs:,} jobs: p50 {statistics.median(took):.1f} ms, "
        f"p99 {took[int(len(took) * 0.99) - 1]:.1f} ms (GET /v1/jobs, 200 calls)"
    )
    stream = console.url.replace("http", "ws", 1) + "v1/events:stream?topic=jobs/"
    for origin, events in (("from_end=true", 0), ("from=0", jobs)):
        seconds, size = asyncio.run(_events_socket(f"{stream}&{origin}", events))
        print(
            f"  its events socket, {origin}: open and caught up in {seconds * 1000:.0f} ms, "
            f"{size / 2**20:.2f} MiB of history received"
        )


async def _events_socket(url: str, events: int) -> tuple[float, int]:
    """How long a socket takes to open and receive `events` events, and their bytes."""
    size = received = 0
    async with aiohttp.ClientSession() as session:
        begin = time.perf_counter()
        async with session.ws_connect(url, max_msg_size=0) as socket:
            while received < events:
                frame = await socket.receive_str(timeout=600)
                size += len(frame)
                received += frame.count('"sequence"')
            return time.perf_counter() - begin, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        consoles = Consoles(Path(scratch))
        driver = start_browser()
        try:
            follow_a_flood(consoles, driver, Path(scratch), args.lines)
            first_page(consoles, args.jobs)
        finally:
            driver.quit()
            consoles.stop_all(quiet=True)


if __name__ == "__main__":
    main()
