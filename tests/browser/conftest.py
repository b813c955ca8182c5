"""Fixtures of the browser tests: a real `zbrain serve` process with its HTTP
listener and local workers, and a real headless Chromium driven by Selenium.

The server runs in a child process because Selenium's calls block: a server
in the test's own event loop would stop while the browser waits for it.

Without Chromium and its driver (Debian's `chromium` and `chromium-driver`,
which `make test` installs) the tests skip, except under CI=true, where they
fail: a green run must mean the console was driven.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from zbrain import SyncClient

CHROMIUM = os.environ.get("ZBRAIN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ZBRAIN_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 20.0  # the longest any condition is waited for; a busy 2-core machine is slow
# Console messages that are not the page's mistakes: a request answered
# with an error status (401 before signing in, 404 for a missing job) is
# logged by Chromium whatever the page does with it.
EXPECTED_MESSAGES = ("Failed to load resource",)


def _missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install --group dev)"
    return None


def start_browser(width: int = 1280, height: int = 860) -> Any:
    """A headless Chromium driven through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    return driver


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the whole run (starting one takes a second
    or two on a busy machine); `browser` hands it to each test clean."""
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI: {missing}")
        pytest.skip(missing)
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Any]:
    """The browser for one test: at a desktop size, without the cookies,
    storage and log messages of the test before (every test's server is on
    127.0.0.1, and cookies do not tell ports apart)."""
    chromium.set_window_size(1280, 860)
    chromium.get_log("browser")  # drop what the last test left
    yield chromium
    if chromium.current_url.startswith("http"):
        chromium.delete_all_cookies()
        chromium.execute_script("sessionStorage.clear(); localStorage.clear()")
    chromium.get("about:blank")


def page_errors(driver: Any) -> list[str]:
    """Script errors and Content-Security-Policy violations the page logged."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and not any(expected in entry["message"] for expected in EXPECTED_MESSAGES)
    ]


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    """Wait until `condition(driver)` is truthy and answer it (Selenium's wait,
    which also retries elements replaced while it looked)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, timeout, ignored_exceptions=[StaleElementReferenceException]
    ).until(condition)


def click(driver: Any, selector: str) -> None:
    """Click the element `selector` (CSS) names on a page that redraws itself
    as events arrive (a job's page): a click on an element replaced between
    finding and clicking it is retried on the new one."""
    from selenium.webdriver.common.by import By

    def clicked(d: Any) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    wait_for(driver, clicked)


def screenshot(driver: Any, name: str) -> None:
    """Save the page as ZBRAIN_SCREENSHOTS/<name>.png when that variable names
    a folder (how docs/img is made); otherwise do nothing."""
    folder = os.environ.get("ZBRAIN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        size = driver.get_window_size()
        driver.set_window_size(size["width"], max(size["height"], 1000))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(size["width"], size["height"])


@dataclass
class Console:
    """A running server: its console's address and its gRPC address."""

    url: str
    address: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def http_port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].strip("/"))

    def kill(self) -> None:
        """Kill the server and its local workers at once, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait()

    def client(self, token: str | None = None) -> SyncClient:
        return SyncClient.connect(self.address, token=token, timeout=10)


class Consoles:
    """`zbrain serve` processes with an HTTP listener, stopped at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[subprocess.Popen[str]] = []
        self.consoles: list[Console] = []

    def zbrain(self, *args: str) -> str:
        """Run a `zbrain` command to its end; its standard output."""
        done = subprocess.run(
            [sys.executable, "-m", "zbrain", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def token(self, data_dir: Path, org: str, role: str) -> str:
        """A token made offline on the store, as an operator makes the first one."""
        out = self.zbrain(
            "token", "create", "--data-dir", str(data_dir), "--org", org, "--role", role
        )
        return out.splitlines()[0].strip()

    def data_dir(self) -> Path:
        return self.tmp_path / f"console{len(self.children)}"

    def start(
        self,
        *args: str,
        workers: int = 1,
        data_dir: Path | None = None,
        http_port: int | None = None,
    ) -> Console:
        """A server on a free gRPC port, serving HTTP on `http_port` (a free
        one by default), once its console answers."""
        data_dir = data_dir or self.data_dir()
        http_port = http_port or free_port()
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zbrain",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                f"127.0.0.1:{http_port}",
                "--data-dir",
                str(data_dir),
                "--workers",
                str(workers),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self.children.append(child)
        console = Console(
            url=f"http://127.0.0.1:{http_port}/", address="", data_dir=data_dir, process=child
        )
        self.consoles.append(console)
        # Read everything it prints, so a chatty server never blocks on a full pipe.
        listening = threading.Event()

        def drain() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                console.output.append(line)
                if not console.address and "ZBrain listening on " in line:
                    console.address = line.split("ZBrain listening on ")[1].split()[0]
                    listening.set()
            listening.set()

        threading.Thread(target=drain, daemon=True).start()
        assert listening.wait(WAIT_S) and console.address, "".join(console.output)
        self._wait_http(console)
        return console

    def _wait_http(self, console: Console) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with urllib.request.urlopen(console.url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("console did not answer:\n" + "".join(console.output))
            time.sleep(0.05)

    def stop_all(self, *, quiet: bool = False) -> None:
        """Kill every server; print what each said (pytest shows it when a test fails)."""
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, 9)
            child.wait()
        if quiet:
            return
        for console in self.consoles:
            print(f"--- output of the server at {console.url} ---")
            print("".join(console.output))


@pytest.fixture
def consoles(tmp_path: Path) -> Iterator[Consoles]:
    started = Consoles(tmp_path)
    yield started
    started.stop_all()


# The job page redraws as events arrive, replacing its elements: reads are
# one script each, so an element cannot go stale between finding and reading.


def text_of(driver, selector: str) -> str:
    """The rendered text of the first element matching selector ("" if none)."""
    text: str | None = driver.execute_script(
        "const found = document.querySelector(arguments[0]);return found ? found.innerText : '';",
        selector,
    )
    return (text or "").strip()


def texts_of(driver, selector: str) -> list[str]:
    """The text content of every element matching selector."""
    texts: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((node) => node.textContent);",
        selector,
    )
    return texts
