"""The web console in a real headless Chromium against a real server.

Each test starts its own `zbrain serve` (HTTP listener, local workers, its
own data folder) and its own browser, and waits for conditions, never for
fixed times.
"""

from __future__ import annotations

import sys
from pathlib import Path

from selenium.webdriver.common.by import By

from tests.browser.conftest import (
    Consoles,
    click,
    page_errors,
    screenshot,
    text_of,
    texts_of,
    wait_for,
)
from zbrain import JobState

PY = sys.executable
# A job printing argv[1] numbered lines as fast as it can.
FLOOD = "import sys; sys.stdout.writelines(f'line {i}\\n' for i in range(int(sys.argv[1])))"


def state_shown(driver) -> str:
    """The state badge of the job page ("running", "succeeded", ...)."""
    state: str | None = driver.execute_script(
        "const badge = document.querySelector('#job-state .badge');"
        "return badge ? badge.getAttribute('data-state') : '';"
    )
    return state or ""


def log_texts(driver) -> list[str]:
    """The text of the log lines on the page (without their stream tags), in one call."""
    texts: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#log-lines .line[data-seq]')]"
        ".map((line) => line.textContent)"
    )
    return texts


def test_a_job_submitted_elsewhere_appears_in_the_list_without_reloading(
    consoles: Consoles, browser
) -> None:
    console = consoles.start(workers=1)
    browser.get(console.url + "#/jobs")
    wait_for(browser, lambda d: text_of(d, "#live-status") == "● live")
    browser.execute_script("window.zbrainNotReloaded = true")

    with console.client() as client:
        failed = client.submit([PY, "-c", "raise SystemExit(3)"], max_retries=0)
        job = client.submit([PY, "-c", "print('hello from the list test')"], labels={"k": "v"})
        client.wait(job.id, timeout=30)
        client.wait(failed.id, timeout=30)
    wait_for(browser, lambda d: "failed" in text_of(d, f'tr[data-job-id="{failed.id}"] .state'))

    row = f'tr[data-job-id="{job.id}"]'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row))
    wait_for(browser, lambda d: "succeeded" in text_of(d, f"{row} .state"))
    assert browser.execute_script("return window.zbrainNotReloaded") is True
    submitted = browser.find_element(By.CSS_SELECTOR, f"{row} time")
    assert submitted.get_attribute("title").endswith(" UTC")  # the exact time on hover
    screenshot(browser, "jobs")

    # Filters live in the address: by label, by state.
    def rows_shown(d) -> list[str]:
        return [
            r.get_attribute("data-job-id")
            for r in d.find_elements(By.CSS_SELECTOR, "#jobs-body tr")
        ]

    browser.get(console.url + "#/jobs?label=k%3Dv")
    wait_for(browser, lambda d: rows_shown(d) == [job.id])
    browser.get(console.url + "#/jobs?state=JOB_STATE_FAILED&state=JOB_STATE_CANCELED")
    wait_for(browser, lambda d: rows_shown(d) == [failed.id])

    browser.get(console.url + "#/")
    counts = "#by-state tbody tr[data-org='default'] td"
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, counts)) == 8)
    by_state = [text.strip() for text in texts_of(browser, counts)]
    assert by_state[5:7] == ["1", "1"]  # succeeded, failed
    # The chart comes after the counts, from reads of its own.
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#hour-chart rect"))
    screenshot(browser, "overview")

    browser.get(console.url + "#/workers")
    wait_for(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#workers-body tr[data-worker-id]")
    )
    screenshot(browser, "workers")

    # At a phone's width the page fits: nothing but the tables scrolls sideways.
    browser.set_window_size(390, 844)
    for page in ("#/jobs", f"#/jobs/{job.id}"):
        browser.get(console.url + page)
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs-body tr, #job-state"))
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )
    screenshot(browser, "job-phone")
    assert page_errors(browser) == []


def test_the_jobs_page_stays_live_across_a_server_restart(consoles: Consoles, browser) -> None:
    console = consoles.start(workers=0)
    browser.get(console.url + "#/jobs")
    wait_for(browser, lambda d: text_of(d, "#live-status") == "● live")
    browser.execute_script("window.zbrainNotReloaded = true")

    console.kill()
    wait_for(browser, lambda d: text_of(d, "#live-status") == "reconnecting")
    again = consoles.start(workers=0, data_dir=console.data_dir, http_port=console.http_port)
    wait_for(browser, lambda d: text_of(d, "#live-status") == "● live")
    with again.client() as client:
        job = client.submit([PY, "-c", "pass"])
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job.id}"]'))
    assert browser.execute_script("return window.zbrainNotReloaded") is True


# Notes every WebSocket the page opens, with the event sequences it receives.
SOCKET_SPY = """
window.zbrainSockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    const seen = { url: String(url), sequences: [] };
    window.zbrainSockets.push(seen);
    this.addEventListener("message", (message) => {
      const events = JSON.parse(message.data).events || [];
      seen.sequences.push(...events.map((event) => Number(event.sequence)));
    });
  }
};
"""


def test_a_page_load_follows_events_from_the_end_not_through_the_history(
    consoles: Consoles, browser
) -> None:
    console = consoles.start(workers=0)
    with console.client() as client:
        for _ in range(20):
            client.submit([PY, "-c", "pass"])
        history = [event.sequence for event in client.events()]
    spy = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SOCKET_SPY})
    try:
        browser.get(console.url + "#/jobs")
        wait_for(browser, lambda d: text_of(d, "#live-status") == "● live")
        with console.client() as client:
            job = client.submit([PY, "-c", "pass"])
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job.id}"]'))
        sockets = browser.execute_script("return window.zbrainSockets")
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": spy["identifier"]}
        )
    streams = [s for s in sockets if "/v1/events:stream" in s["url"]]
    assert "from_end=true" in streams[0]["url"]
    received = [sequence for stream in streams for sequence in stream["sequences"]]
    assert received and min(received) > history[-1]


def test_a_job_submitted_with_the_form_streams_its_log_while_it_runs(
    consoles: Consoles, browser, tmp_path: Path
) -> None:
    console = consoles.start(workers=1)
    gate = tmp_path / "gate"
    script = (
        "import pathlib, sys, time; "
        "print('first line', flush=True); "
        "print('a warning', file=sys.stderr, flush=True); "
        "[time.sleep(0.02) for _ in iter(lambda: pathlib.Path(sys.argv[1]).exists(), True)]; "
        "print('last line', flush=True)"
    )
    browser.get(console.url)
    wait_for(browser, lambda d: d.find_elements(By.ID, "by-state"))
    browser.find_element(By.CSS_SELECTOR, 'nav a[data-page="submit"]').click()
    argv = wait_for(browser, lambda d: d.find_element(By.ID, "submit-argv"))
    argv.send_keys("\n".join([PY, "-c", script, str(gate)]))
    browser.find_element(By.ID, "submit-input").send_keys('{"n": 1}')
    browser.find_element(By.ID, "submit-env").send_keys("GREETING=hello")
    browser.find_element(By.ID, "submit-timeout").send_keys("60")
    browser.find_element(By.ID, "submit-retries").send_keys("0")
    browser.find_element(By.ID, "submit-button").click()

    wait_for(browser, lambda d: "#/jobs/" in d.current_url)
    wait_for(browser, lambda d: "first line" in log_texts(d))
    wait_for(browser, lambda d: "a warning" in log_texts(d))
    wait_for(browser, lambda d: state_shown(d) == "running")
    assert "last line" not in log_texts(browser)
    assert texts_of(browser, "#log-lines .line.stderr") == ["a warning"]
    assert text_of(browser, ".attempt-sep").upper() == "ATTEMPT 1"
    # The page redraws the job as its events arrive, replacing these elements:
    # each look and click is retried on a fresh one, the reveal kept across redraws.
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#env .secret").text == "••••••")
    click(browser, "#env .reveal")
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#env .secret").text == "hello")

    gate.touch()
    wait_for(browser, lambda d: "last line" in log_texts(d))
    wait_for(browser, lambda d: state_shown(d) == "succeeded")
    screenshot(browser, "job")
    assert page_errors(browser) == []


def test_canceling_a_running_job_changes_its_state_and_offers_a_rerun(
    consoles: Consoles, browser
) -> None:
    console = consoles.start(workers=1)
    with console.client() as client:
        job = client.submit(  # a job that runs until canceled
            [PY, "-c", "import time; print('working', flush=True); time.sleep(120)"]
        )
    browser.get(console.url + f"#/jobs/{job.id}")
    wait_for(browser, lambda d: "working" in log_texts(d))
    wait_for(browser, lambda d: state_shown(d) == "running")

    click(browser, "#cancel")
    wait_for(browser, lambda d: state_shown(d) == "canceled")
    with console.client() as client:
        assert client.get(job.id).state is JobState.CANCELED

    # A finished job offers a rerun instead: a new job, linked to this one.
    click(browser, "#rerun")
    wait_for(browser, lambda d: job.id not in d.current_url)
    wait_for(browser, lambda d: text_of(d, "#dependencies a"))
    assert text_of(browser, "#dependencies a") == job.id
    assert page_errors(browser) == []


def test_log_lines_and_arguments_are_shown_as_text_never_run(consoles: Consoles, browser) -> None:
    console = consoles.start(workers=1)
    script_tag = "<script>window.zbrainPwned = 1</script>"
    image_tag = '<img src=x onerror="window.zbrainPwned = 2">'
    with console.client() as client:
        job = client.submit(
            [
                PY,
                "-c",
                "import os, pathlib, sys; print(sys.argv[1]); print(sys.argv[2], file=sys.stderr); "
                "pathlib.Path(os.environ['ZBRAIN_ARTIFACTS_DIR'], 'report.txt').write_text('42')",
                script_tag,
                image_tag,
            ],
            labels={"note": "<b>bold</b>"},
        )
        client.wait(job.id, timeout=30)
    browser.get(console.url + f"#/jobs/{job.id}")
    wait_for(browser, lambda d: len(log_texts(d)) >= 2)

    # stdout and stderr are separate pipes: either line may come first.
    assert sorted(log_texts(browser)) == sorted([script_tag, image_tag])
    argv = texts_of(browser, "#argv li")
    assert argv[-2:] == [script_tag, image_tag]
    assert text_of(browser, "#labels") == "note=<b>bold</b>"
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main b, #log-lines script") == []
    assert browser.execute_script("return window.zbrainPwned") is None

    # Its artifact is listed with a link that downloads it.
    wait_for(browser, lambda d: text_of(d, "#artifacts a"))
    assert text_of(browser, "#artifacts a") == "report.txt"
    content = browser.execute_script(
        "return fetch(document.querySelector('#artifacts a').href).then((answer) => answer.text())"
    )
    assert content == "42"
    assert page_errors(browser) == []


def test_signing_in_and_out_with_auth_on(consoles: Consoles, browser) -> None:
    data_dir = consoles.data_dir()
    token = consoles.token(data_dir, "team-a", "client")
    console = consoles.start("--auth", "required", data_dir=data_dir)
    browser.get(console.url + "#/jobs")
    wait_for(browser, lambda d: "#/signin" in d.current_url)

    token_input = wait_for(browser, lambda d: d.find_element(By.ID, "token"))
    token_input.send_keys("zb_not_a_token")
    browser.find_element(By.ID, "signin-submit").click()
    wait_for(browser, lambda d: text_of(d, "#signin-error"))
    token_input.clear()
    token_input.send_keys(token)
    browser.find_element(By.ID, "signin-submit").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "jobs-table"))
    session = {c["name"]: c for c in browser.get_cookies()}["zbrain_session"]
    assert session["httpOnly"] is True
    assert token not in browser.current_url

    with console.client(token) as client:
        job = client.submit([PY, "-c", "print('signed in')"])
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job.id}"]'))

    browser.find_element(By.ID, "sign-out").click()
    wait_for(browser, lambda d: "#/signin" in d.current_url)
    browser.get(console.url + "#/jobs")  # the old cookie no longer opens anything
    wait_for(browser, lambda d: "#/signin" in d.current_url)
    assert page_errors(browser) == []


def test_a_flood_of_log_lines_keeps_the_dom_capped(
    consoles: Consoles, browser, tmp_path: Path
) -> None:
    """5,000 lines arriving at once: the page keeps the last 2,000 (DOM_CAP)
    and brings earlier ones back on request. (`python -m bench.console`
    measures 100,000 lines.)"""
    console = consoles.start(workers=1)
    with console.client() as client:
        job = client.submit([PY, "-c", FLOOD, "5000"])
        client.wait(job.id, timeout=30)
    browser.get(console.url + f"#/jobs/{job.id}")
    wait_for(browser, lambda d: text_of(d, "#log-count") == "5,000 lines")
    wait_for(browser, lambda d: log_texts(d)[-1:] == ["line 4999"])

    shown = log_texts(browser)
    assert len(shown) == 2000
    assert shown[0] == "line 3000"
    click(browser, "#log-earlier")
    assert log_texts(browser)[0] == "line 2000"
    assert page_errors(browser) == []


def test_an_admin_creates_and_revokes_tokens(consoles: Consoles, browser) -> None:
    data_dir = consoles.data_dir()
    admin = consoles.token(data_dir, "ops", "admin")
    console = consoles.start("--auth", "required", workers=0, data_dir=data_dir)
    browser.get(console.url + "#/signin")
    wait_for(browser, lambda d: d.find_element(By.ID, "token")).send_keys(admin)
    browser.find_element(By.ID, "signin-submit").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "tokens-link").is_displayed())

    browser.find_element(By.ID, "tokens-link").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "token-org")).send_keys("team-b")
    browser.find_element(By.ID, "token-description").send_keys("ci <runner>")
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    secret = wait_for(browser, lambda d: text_of(d, "#token-secret"))
    with console.client(secret) as client:
        client.submit([PY, "-c", "pass"], org="team-b")  # the new token works at once
    row = wait_for(
        browser,
        lambda d: [
            r for r in d.find_elements(By.CSS_SELECTOR, "#tokens-body tr") if "team-b" in r.text
        ],
    )[0]
    assert "ci <runner>" in row.text
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait_for(browser, lambda d: "revoked" in text_of(d, "#tokens-body"))
    assert page_errors(browser) == []
