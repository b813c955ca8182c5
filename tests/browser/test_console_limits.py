"""What issue 16 added, as the console shows it: why a waiting job waits (no
matching worker, a paused org), the unmatched filter, and an org's page where
pausing and resuming are done. Real server, real Chromium, real workers.
"""

from __future__ import annotations

import sys

from selenium.webdriver.common.by import By

from tests.browser.conftest import Consoles, page_errors, screenshot, text_of, wait_for
from zbrain import JobState

PY = sys.executable


def test_a_job_no_worker_matches_says_so_and_is_listed_as_unmatched(
    consoles: Consoles, browser
) -> None:
    console = consoles.start(workers=1)
    with console.client() as client:
        held = client.submit([PY, "-c", "pass"], requires={"gpu": "a100"})
        ran = client.submit([PY, "-c", "pass"])
        client.wait(ran.id, timeout=30)

    browser.get(console.url + f"#/jobs/{held.id}")
    wait_for(browser, lambda d: "no connected worker matches" in text_of(d, "#waiting-reason"))
    assert "gpu=a100" in text_of(browser, "#requires")

    browser.get(console.url + "#/jobs?unmatched=1")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{held.id}"]'))
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{ran.id}"]')
    assert browser.find_element(By.ID, "filter-unmatched").is_selected()
    assert page_errors(browser) == []


def test_pausing_an_org_from_its_page_holds_its_jobs_until_resumed(
    consoles: Consoles, browser
) -> None:
    console = consoles.start(workers=1)
    browser.get(console.url + "#/orgs?org=default")
    limit = wait_for(browser, lambda d: d.find_elements(By.ID, "setting-maxLogBytes")).pop()
    limit.clear()
    limit.send_keys("4096")
    browser.find_element(By.ID, "save-settings").click()
    wait_for(browser, lambda d: "of 4,096 bytes" in text_of(d, "#org-log-usage"))
    browser.find_element(By.ID, "org-pause").click()
    wait_for(browser, lambda d: text_of(d, "#org-paused") == "paused")
    screenshot(browser, "orgs")

    with console.client() as client:
        assert client.orgs.get("default").max_log_bytes == 4096
        assert client.orgs.get("default").paused  # the store holds it, not only the page
        job = client.submit([PY, "-c", "print('after the pause')"])
        browser.get(console.url + f"#/jobs/{job.id}")
        wait_for(browser, lambda d: "organisation is paused" in text_of(d, "#waiting-reason"))

        browser.get(console.url + "#/orgs?org=default")
        wait_for(browser, lambda d: d.find_elements(By.ID, "org-resume")).pop().click()
        wait_for(browser, lambda d: text_of(d, "#org-paused") == "running")
        assert client.wait(job.id, timeout=30).state == JobState.SUCCEEDED
    assert page_errors(browser) == []


def sign_in(browser, url: str, token: str) -> None:
    browser.get(url + "#/signin")
    wait_for(browser, lambda d: d.find_element(By.ID, "token")).send_keys(token)
    browser.find_element(By.ID, "signin-submit").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "sign-out"))


def test_an_admin_pauses_a_selector_and_a_client_sees_the_org_read_only(
    consoles: Consoles, browser
) -> None:
    data_dir = consoles.data_dir()
    admin = consoles.token(data_dir, "team-a", "admin")
    reader = consoles.token(data_dir, "team-a", "client")
    console = consoles.start("--auth", "required", workers=0, data_dir=data_dir)

    sign_in(browser, console.url, admin)
    browser.get(console.url + "#/orgs?org=team-a")
    wait_for(browser, lambda d: d.find_elements(By.ID, "pause-selector")).pop().send_keys(
        "pipeline=nightly"
    )
    browser.find_element(By.CSS_SELECTOR, "#pause-selector-form button").click()
    wait_for(browser, lambda d: "pipeline=nightly" in text_of(d, "#org-paused-selectors"))
    assert text_of(browser, "#org-paused") == "running"
    with console.client(admin) as client:
        assert [dict(s) for s in client.orgs.get("team-a").paused_selectors] == [
            {"pipeline": "nightly"}
        ]
    browser.find_element(By.ID, "sign-out").click()
    wait_for(browser, lambda d: "#/signin" in d.current_url)

    sign_in(browser, console.url, reader)
    browser.get(console.url + "#/orgs?org=team-a")
    wait_for(browser, lambda d: "pipeline=nightly" in text_of(d, "#org-paused-selectors"))
    assert "Only an admin" in text_of(browser, ".page-orgs")
    assert not browser.find_elements(By.CSS_SELECTOR, "#settings-form, #org-pause, #org-resume")
    assert page_errors(browser) == []
