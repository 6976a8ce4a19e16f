"""Flower as docker-compose.yml runs it (the same argv, natively), driven in Debian's headless Chromium:
refused without the login; with it, the Broker page lists every model's queue with its length.

Needs `apt-get install -y chromium chromium-driver` (.ci/run installs them). Without them this test
fails and says so: a check the deployment issue added must not turn into a silent skip.
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cascade import jsonl
from tests.support.deploy import compose, http_status, native_argv, wait_http

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"
AUTH = "ops:browser-test-pass"


def chrome(tmp_path: Path) -> Any:
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = shutil.which(CHROMEDRIVER) or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").exists() else None
    )
    if browser is None or driver is None:
        pytest.fail(
            "headless Chromium is needed for the Flower browser test and is not installed: "
            "apt-get install -y chromium chromium-driver (Debian)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    # Both paths given: Selenium Manager has nothing to look up or download.
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def test_flower_in_chromium_requires_the_login_and_shows_the_queues(make_herd, db, double, tmp_path) -> None:
    herd = make_herd()
    # No worker for any model: five messages wait in herd.small, the other queues are empty.
    herd.cli(
        "submit",
        str(jsonl(tmp_path / "d.jsonl", [{"id": i, "text": f"q {i}"} for i in range(5)])),
        "--job",
        "flower",
        "--task",
        "qa",
    )
    service = compose()["services"]["flower"]
    assert service["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    cmd, port = native_argv(tuple(service["command"]), tmp_path)
    log = tmp_path / "flower.log"
    proc = herd.procs.start(cmd, env={**herd.env, "FLOWER_BASIC_AUTH": AUTH}, log=log)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthcheck", proc, log)

    assert http_status(f"{base}/broker") == 401
    assert (
        http_status(f"{base}/broker", {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()})
        == 401
    )

    driver = chrome(tmp_path)
    try:
        # Unauthenticated in the browser: no queue is ever shown.
        driver.get(f"{base}/broker")
        assert "herd.small" not in driver.page_source
        # Log in: the browser sends the credentials with every request, as after the login prompt.
        token = base64.b64encode(AUTH.encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        rows: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            driver.get(f"{base}/broker")
            rows = _queue_rows(driver)
            if rows.get("herd.small") == "5":
                break
            time.sleep(1)
        shot = tmp_path / "flower-broker.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        assert shot.stat().st_size > 0
        assert rows.get("herd.small") == "5", rows
        assert rows.get("herd.medium") == "0" and rows.get("herd.large") == "0", rows
    finally:
        driver.quit()


def _queue_rows(driver: Any) -> dict[str, str]:
    """{queue name: messages} from the Broker page's table."""
    from selenium.webdriver.common.by import By

    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "table tbody tr"):
        cells = [cell.text.strip() for cell in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1]
    return rows
