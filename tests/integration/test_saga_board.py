"""The saga board (order_svc's GET /board) in headless Chromium: an order placed over HTTP
appears on the page by its own polling, and a click on it shows its timeline.

Needs Chromium and its driver (Debian: chromium, chromium-driver; scripts/system-deps.sh
installs them) and selenium (the dev extras). Without them the test says so and skips."""
from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from tests.support.saga import (
    SAGA_TIMEOUT,
    SERVICE_URLS,
    new_customer,
    new_sku,
    place_order,
    seed_account,
    seed_stock,
)

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)
APPEARS_WITHIN = 15.0
"""The board polls every 2 s; a few polls of slack for a busy shared stack."""


def chromium() -> tuple[str, str]:
    """(browser, driver) executables, or skip saying what is missing."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(name for name, found in (("chromium", browser), ("chromedriver", driver)) if not found)
        pytest.skip(f"{missing} not installed, so the board cannot be tested in a browser here "
                    "(scripts/system-deps.sh installs the Debian packages chromium and chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (it is in the dev extras: pip install -e '.[dev]')")
    browser_path, driver_path = chromium()
    profile = tempfile.mkdtemp(prefix="saga-board-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition, what: str, timeout: float = APPEARS_WITHIN):
    """Poll `condition()` until it returns something truthy (ignoring a page that is mid re-render)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            found = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"the board did not show {what} within {timeout:.0f}s")
        time.sleep(0.1)


async def test_a_placed_order_appears_and_a_click_shows_its_timeline(services, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    browser.get(f"{SERVICE_URLS['order_svc'].url}/board")
    assert browser.title.startswith("Saga board")
    wait_for(lambda: browser.find_element(By.ID, "refreshed").text not in ("", "never"), "its first refresh")

    order_id = await place_order(customer, {sku: 1}, "10.00")

    row = f'#sagas tbody tr[data-order-id="{order_id}"]'
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, row), f"order {order_id}")
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-status") == "CONFIRMED",
             f"order {order_id} CONFIRMED", timeout=SAGA_TIMEOUT)
    assert customer in browser.find_element(By.CSS_SELECTOR, row).text

    def click() -> bool:  # the table is re-rendered every 2 s: find the row again if it went stale
        try:
            browser.find_element(By.CSS_SELECTOR, row).click()
            return True
        except StaleElementReferenceException:
            return False

    wait_for(click, f"a clickable row for {order_id}")
    panel = f'#timeline[data-order-id="{order_id}"]'
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, panel), f"the timeline of {order_id}")
    assert browser.find_element(By.ID, "timeline-status").text == "CONFIRMED"
    steps = wait_for(lambda: [(step.get_attribute("data-kind"), step.get_attribute("data-event-type"))
                              for step in browser.find_elements(By.CSS_SELECTOR, f"{panel} tr.step")],
                     "the timeline's steps")
    assert steps == [("emitted", "ORDER_CREATED"), ("consumed", "PAYMENT_COMPLETED"), ("emitted", "ORDER_CONFIRMED")]
    assert "→ CONFIRMED" in browser.find_element(By.CSS_SELECTOR, panel).text
    assert browser.find_element(By.ID, "problem").text == ""
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
