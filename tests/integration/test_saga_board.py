"""The saga board (`saga board`) in headless Chromium, on the real stack.

The board runs as a user runs it — the `saga` console script, serving on loopback — and reads
the real topics. Each of the four flows of the saga, and a saga with a dead-lettered event,
shows on the page with its exact lanes, sequence, causes and marks; a stuck saga shows what it
waits for, and the board follows it live to its end; the list's filters, search and keyboard
work. With SAGA_BOARD_SCREENSHOTS=DIR each flow's board is saved as DIR/board-<flow>.png (the
README shows those of docs/).

Needs Chromium and its driver (Debian: chromium, chromium-driver; scripts/system-deps.sh
installs them) and selenium (the dev extras). Without them the tests say so and skip."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from saga_cli import demo
from saga_cli.errors import CliError
from saga_cli.http_client import Unavailable
from saga_cli.stack import Stack, StackSettings
from tests.support.foreign import headers_for, payment_completed, publish
from tests.support.saga import (
    FREEZE_LIMIT,
    SAGA_CLI,
    SAGA_TIMEOUT,
    SERVICE_URLS,
    frozen,
    new_customer,
    new_sku,
    order_body,
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
    "--window-size=1400,1100",
)
APPEARS_WITHIN = 20.0
"""The page polls every second; a saga's last event may trail its order's final state."""
STUCK_AFTER_S = 1
"""The board under test calls a saga stuck after this long in flight (a frozen service may stay
frozen for FREEZE_LIMIT seconds only)."""

# (lane, event type, marks, sequence number of the cause) of each flow, in order
HAPPY = [
    ("order_svc", "ORDER_CREATED", "", None),
    ("inventory_svc", "INVENTORY_RESERVED", "", 1),
    ("payment_svc", "PAYMENT_COMPLETED", "", 2),
    ("order_svc", "ORDER_CONFIRMED", "outcome", 3),
    ("inventory_svc", "INVENTORY_COMMITTED", "", 4),
]
STOCK_SHORT = [
    ("order_svc", "ORDER_CREATED", "", None),
    ("inventory_svc", "INVENTORY_REJECTED", "", 1),
    ("order_svc", "ORDER_CANCELLED", "compensation outcome", 2),
]
DECLINED = [
    ("order_svc", "ORDER_CREATED", "", None),
    ("inventory_svc", "INVENTORY_RESERVED", "", 1),
    ("payment_svc", "PAYMENT_FAILED", "", 2),
    ("inventory_svc", "INVENTORY_RELEASED", "compensation", 3),
    ("order_svc", "ORDER_CANCELLED", "compensation outcome", 4),
]
CANCELLED_AFTER_PAYMENT = [
    ("order_svc", "ORDER_CREATED", "", None),
    ("inventory_svc", "INVENTORY_RESERVED", "", 1),
    ("payment_svc", "PAYMENT_COMPLETED", "", 2),
    ("order_svc", "ORDER_CONFIRMATION_FAILED", "compensation", None),  # the customer's cancel: no event caused it
    ("payment_svc", "PAYMENT_REFUNDED", "compensation", 4),
    ("inventory_svc", "INVENTORY_RELEASED", "compensation", 5),
    ("order_svc", "ORDER_CANCELLED", "compensation outcome", 6),
]


# --- the browser and the board ---------------------------------------------------------------

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


@pytest.fixture(scope="module")
def board(services):
    """`saga board` on a free loopback port, following the topics from a minute ago; its URL once
    it has read what was already there. Stopped (SIGTERM to its own pid) at the end."""
    since = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    process = subprocess.Popen([str(SAGA_CLI), "board", "--port", "0", "--since", since, "--stuck-after", str(STUCK_AFTER_S),
                                "--bootstrap-server", services.settings.kafka_bootstrap],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("saga board at http://127.0.0.1:"), (line, process.stderr.read() if process.poll() is not None else "")
        url = line.split(" at ", 1)[1].split(" ", 1)[0].rstrip("/")
        deadline = time.monotonic() + 60
        while not httpx.get(f"{url}/api/status", timeout=5).json()["follow"]["caught_up"]:
            assert time.monotonic() < deadline, "the board did not catch up with the topics within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition, what: str, timeout: float = APPEARS_WITHIN, seen=None):
    """Poll `condition()` until it returns something truthy (ignoring a page that is mid re-render);
    on timeout the failure says what `seen()` shows then."""
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
            shown = f"; the board shows {seen()!r}" if seen else ""
            raise AssertionError(f"the board did not show {what} within {timeout:.0f}s{shown}")
        time.sleep(0.1)


async def call(service: str, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
    """One request to a service's API, made again while the service cannot answer (others restart
    services and put load on the shared stack: connection refused, 503 or 429 with Retry-After),
    up to SAGA_TIMEOUT; its JSON answer once it is a success."""
    deadline = time.monotonic() + SAGA_TIMEOUT
    async with httpx.AsyncClient(base_url=SERVICE_URLS[service].url, timeout=10) as http:
        while True:
            try:
                answer = await http.request(method, path, json=body, headers=headers)
            except httpx.TransportError as error:
                assert time.monotonic() < deadline, f"{service} did not answer {method} {path}: {error}"
                await asyncio.sleep(0.5)
                continue
            if answer.is_success:
                return answer.json()
            assert answer.status_code in (429, 503) and time.monotonic() < deadline, answer.text
            await asyncio.sleep(min(float(answer.headers.get("Retry-After", "1")), 2.0))


async def seed_stock(sku: str, available: int) -> None:
    await call("inventory_svc", "PUT", f"/stock/{sku}", {"available": available})


async def seed_account(customer: str, balance: str) -> None:
    await call("payment_svc", "PUT", f"/accounts/{customer}", {"balance": balance, "currency": "EUR"})


async def place_order(customer: str, items: dict[str, int], amount: str) -> str:
    """POST /orders (one Idempotency-Key however often it is sent); the order id."""
    placed = await call("order_svc", "POST", "/orders", order_body(customer, items, amount), {"Idempotency-Key": str(uuid.uuid4())})
    return placed["order_id"]


async def wait_for_status(order_id: str) -> None:
    """Until the order is CONFIRMED or CANCELLED (SAGA_TIMEOUT)."""
    deadline = time.monotonic() + SAGA_TIMEOUT
    while (await call("order_svc", "GET", f"/orders/{order_id}"))["status"] not in ("CONFIRMED", "CANCELLED"):
        assert time.monotonic() < deadline, f"order {order_id} not finished within {SAGA_TIMEOUT:.0f}s"
        await asyncio.sleep(0.2)


def place_and_cancel_after_payment(flow: demo.Flow, run: str, body: dict) -> str:
    """Flow 4 as `make demo` makes it (saga_cli/demo.py), again while order_svc answers overloaded."""
    deadline = time.monotonic() + SAGA_TIMEOUT
    while True:
        try:
            return demo.place_and_cancel_after_payment(flow, run, body, Stack(StackSettings()))
        except CliError as error:  # a service overloaded or restarting: the same order again (same key)
            if not isinstance(error, Unavailable) and "not reachable" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def act(action) -> bool:
    """Do `action` (a click, keys) on an element of a list the page re-renders every second: False
    when the element went stale meanwhile (wait_for then finds it again)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        action()
    except StaleElementReferenceException:
        return False
    return True


def lanes_shown(browser, order_id: str) -> list[tuple[str, str, str, int | None]]:
    """(lane, event type, marks, cause's sequence number) of each event card of the saga shown, in
    the order of their sequence numbers (which must be 1, 2, 3…)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        panel = browser.find_element(By.ID, "saga")
        if panel.get_attribute("data-order-id") != order_id:
            return []
        cards = panel.find_elements(By.CSS_SELECTOR, ".step")
        rows = [(int(card.get_attribute("data-seq")), card.get_attribute("data-lane"), card.get_attribute("data-event-type"),
                 card.get_attribute("data-marks"), card.get_attribute("data-cause-seq")) for card in cards]
    except StaleElementReferenceException:
        return []
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1)), rows
    return [(lane, kind, marks, int(cause) if cause else None) for _, lane, kind, marks, cause in rows]


def load(browser, url: str) -> None:
    """A fresh page (going from one hash of the page to another would keep the last test's page)."""
    browser.get("about:blank")
    browser.get(url)


def open_saga(browser, url: str, order_id: str, expected: list, timeout: float = APPEARS_WITHIN) -> None:
    """Open the board on the saga and wait until it shows exactly `expected`."""
    load(browser, f"{url}/#saga={order_id}")
    wait_for(lambda: lanes_shown(browser, order_id) == expected, f"the lanes {expected} of saga {order_id}",
             timeout=timeout, seen=lambda: lanes_shown(browser, order_id))


def lane_columns(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [head.get_attribute("data-lane") for head in browser.find_elements(By.CSS_SELECTOR, "#lanes .lane-head")]


def screenshot(browser, name: str) -> None:
    folder = os.environ.get("SAGA_BOARD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"board-{name}.png"))


def no_page_errors(browser) -> None:
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


async def traced_causes(order_id: str) -> list[int | None]:
    """Each event's cause as a sequence number, from `saga trace ID --json` (the CLI's reading of the
    same topics): what the board's 'caused by #n' links must say."""
    done = await asyncio.to_thread(subprocess.run, [str(SAGA_CLI), "trace", order_id, "--json"],
                                   capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)["events"]
    seq = {}
    for number, event in enumerate(events, start=1):
        if event["event_id"] and not event["duplicate"]:
            seq.setdefault(event["event_id"], number)
    return [seq.get(event["causation_id"]) if event["causation_id"] else None for event in events]


# --- the flows ---------------------------------------------------------------------------------

async def test_the_four_flows_each_show_their_lanes_sequence_causes_and_marks(board, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run = uuid.uuid4().hex[:8]
    widget, gadget = f"W-{run}", f"G-{run}"
    alice, bob, carol = f"alice-{run}", f"bob-{run}", f"carol-{run}"
    await seed_stock(widget, 10)
    await seed_stock(gadget, 1)
    await seed_account(alice, "100.00")
    await seed_account(bob, "5.00")
    await seed_account(carol, demo.CAROL_BALANCE)

    happy = await place_order(alice, {widget: 2}, "40.00")
    short = await place_order(alice, {gadget: 5}, "25.00")
    declined = await place_order(bob, {widget: 1}, "30.00")
    flow4 = demo.Flow("4. cancelled after payment", carol, [(widget, 1)], "25.00", "CANCELLED", "cancelled_by_customer",
                      "ORDER_CANCELLED", cancel_after_payment=True)
    body = {"customer_id": carol, "items": [{"sku": widget, "quantity": 1}], "amount": "25.00", "currency": "EUR"}
    after_payment = await asyncio.to_thread(place_and_cancel_after_payment, flow4, run, body)
    for order_id in (happy, short, declined, after_payment):
        await wait_for_status(order_id)

    flows = [("happy-path", happy, HAPPY, "CONFIRMED", None),
             ("stock-short", short, STOCK_SHORT, "CANCELLED", "out_of_stock"),
             ("payment-declined", declined, DECLINED, "CANCELLED", "insufficient_funds"),
             ("cancelled-after-payment", after_payment, CANCELLED_AFTER_PAYMENT, "CANCELLED", "cancelled_by_customer")]
    for name, order_id, expected, outcome, reason in flows:
        if name == "payment-declined":  # order_svc may read the release before the decline: then the decline cancels
            causes = await traced_causes(order_id)
            expected = [(*step[:3], cause) for step, cause in zip(expected, causes)]
            assert causes[-1] in (3, 4), causes
        open_saga(browser, board, order_id, expected, timeout=SAGA_TIMEOUT)
        assert await traced_causes(order_id) == [step[3] for step in expected]
        assert lane_columns(browser) == ["order_svc", "inventory_svc", "payment_svc"]
        shown = browser.find_element(By.ID, "saga-outcome")
        assert shown.get_attribute("data-outcome") == outcome
        panel = browser.find_element(By.ID, "saga").text
        assert (reason or "") in panel
        assert browser.find_elements(By.CSS_SELECTOR, "#saga .waiting-card") == []
        compensations = browser.find_elements(By.CSS_SELECTOR, "#saga .step.compensation .type")
        assert all(card.text.startswith("↺ ") for card in compensations)
        screenshot(browser, name)

    # the list: a customer's sagas, a reason among them, a search by order id; all by keyboard
    load(browser, f"{board}/")
    customer = browser.find_element(By.ID, "customer")
    customer.send_keys(alice)
    rows = "#sagas tbody tr"
    listed = lambda: sorted(row.get_attribute("data-order-id") for row in browser.find_elements(By.CSS_SELECTOR, rows))
    wait_for(lambda: listed() == sorted([happy, short]), f"only {alice}'s two sagas", seen=listed)
    wait_for(lambda: "out_of_stock" in [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#reason option")],
             "out_of_stock among the reasons")
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element(By.ID, "reason")).select_by_value("out_of_stock")
    wait_for(lambda: listed() == [short], f"only {short}, out of stock", seen=listed)
    browser.find_element(By.ID, "clear").click()
    wait_for(lambda: len(listed()) >= 4, "every saga again once the filters are cleared", seen=listed)

    browser.find_element(By.TAG_NAME, "body").send_keys("/")
    assert browser.switch_to.active_element == browser.find_element(By.ID, "search")
    browser.switch_to.active_element.send_keys(declined[:13])
    wait_for(lambda: listed() == [declined], f"only {declined} for its first 13 characters", seen=listed)
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: lanes_shown(browser, declined)[:1] == [DECLINED[0]], "the saga opened from the search")
    wait_for(lambda: act(lambda: browser.find_element(By.ID, "step-1").click()), "a click on event #1")
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    wait_for(lambda: browser.switch_to.active_element.get_attribute("id") == "step-2", "focus on event #2 after ↓")
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    browser.switch_to.active_element.send_keys("c")
    wait_for(lambda: browser.switch_to.active_element.get_attribute("id") == "step-2", "focus on #3's cause, #2, after c")
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for(lambda: browser.switch_to.active_element.get_attribute("class") == "row-link", "focus back on the list after Esc")
    no_page_errors(browser)


async def test_a_dead_lettered_event_shows_in_the_lane_of_the_service_that_refused_it(board, browser, stack):
    from selenium.webdriver.common.by import By

    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    order_id = await place_order(customer, {sku: 1}, "10.00")
    await wait_for_status(order_id)
    open_saga(browser, board, order_id, HAPPY, timeout=SAGA_TIMEOUT)

    forged = payment_completed(order_id, "10.00")  # unsigned: order_svc refuses it as unauthenticated
    await publish(stack.settings.kafka_bootstrap, "events.payment", order_id, forged, headers_for(forged))
    expected = [*HAPPY, ("payment_svc", "PAYMENT_COMPLETED", "foreign", None), ("order_svc", "DEAD_LETTER", "dead_letter", 6)]
    wait_for(lambda: lanes_shown(browser, order_id) == expected, "the forged event and its dead letter, live",
             timeout=SAGA_TIMEOUT, seen=lambda: lanes_shown(browser, order_id))
    letter = browser.find_element(By.ID, "step-7")
    assert "order_svc refused PAYMENT_COMPLETED: unauthenticated" in letter.text
    assert "✕ dead letter" in letter.text and "⚑ from outside" in browser.find_element(By.ID, "step-6").text
    screenshot(browser, "dead-letter")

    # the dead letters view lists it under its saga, and opens the saga
    browser.find_element(By.CSS_SELECTOR, '#views button[data-view="dead_letters"]').click()
    browser.find_element(By.ID, "search").send_keys(order_id)  # others' tests may add hundreds meanwhile
    row = f'#letters tbody tr[data-order-id="{order_id}"]'
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, row), "the dead letter in the dead letters view",
             seen=lambda: [browser.find_element(By.ID, name).text[:300] for name in ("list-pane", "follow", "problem")])
    assert "unauthenticated" in browser.find_element(By.CSS_SELECTOR, row).text
    assert "order_svc" in browser.find_element(By.CSS_SELECTOR, row).text
    no_page_errors(browser)


async def test_a_stuck_saga_shows_what_it_waits_for_and_then_how_it_ended(board, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    load(browser, f"{board}/")
    browser.find_element(By.CSS_SELECTOR, '#views button[data-view="stuck"]').click()
    row = None
    async with frozen("payment_svc"):
        frozen_at = time.monotonic()
        order_id = await place_order(customer, {sku: 1}, "10.00")
        row = f'#sagas tbody tr[data-order-id="{order_id}"]'
        left = lambda: max(FREEZE_LIMIT - (time.monotonic() - frozen_at), 0.5)
        wait_for(lambda: "waits for payment_svc: PAYMENT_COMPLETED or PAYMENT_FAILED"
                 in browser.find_element(By.CSS_SELECTOR, row).text, f"saga {order_id} stuck, waiting for payment_svc",
                 timeout=left())
        assert browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-stuck") == "yes"
        wait_for(lambda: act(lambda: browser.find_element(By.CSS_SELECTOR, f"{row} a").send_keys(Keys.ENTER)),
                 "Enter on the saga's row", timeout=left())
        waiting = "#saga .waiting-card"
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, waiting), "the waiting card", timeout=left())
        card = browser.find_element(By.CSS_SELECTOR, waiting)
        assert card.get_attribute("data-lane") == "payment_svc"
        assert card.get_attribute("data-events") == "PAYMENT_COMPLETED PAYMENT_FAILED"
        assert card.get_attribute("data-after-seq") == "2"
        assert "after #2 INVENTORY_RESERVED" in card.text
        assert lanes_shown(browser, order_id) == HAPPY[:2]
        screenshot(browser, "stuck")
    # payment_svc runs again: the page follows the saga to its end by itself
    wait_for(lambda: lanes_shown(browser, order_id) == HAPPY, "the saga finished, live", timeout=SAGA_TIMEOUT,
             seen=lambda: lanes_shown(browser, order_id))
    assert browser.find_elements(By.CSS_SELECTOR, "#saga .waiting-card") == []
    assert browser.find_element(By.ID, "saga-outcome").get_attribute("data-outcome") == "CONFIRMED"
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, row), "the saga gone from the stuck view")
    no_page_errors(browser)


async def test_the_board_serves_everything_itself_on_loopback_only(board):
    """No asset from elsewhere (a strict Content-Security-Policy, same-origin script and style), no
    answer to a page of another origin (Host check), bad filters a one-line 422."""
    import re

    page = httpx.get(f"{board}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert sorted(re.findall(r'(?:src|href)="([^"#]+)"', page.text)) == ["/board.css", "/board.js", "data:,"]
    for asset, kind in (("board.js", "text/javascript"), ("board.css", "text/css")):
        answer = httpx.get(f"{board}/{asset}", timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert set(re.findall(r"https?://[^\s\"'`)]+", answer.text)) <= {"http://www.w3.org/2000/svg"}  # a name, not a fetch
    rebound = httpx.get(f"{board}/api/sagas", headers={"Host": "attacker.example:80"}, timeout=10)
    assert rebound.status_code == 403
    for query in ("status=finished", "limit=0", "limit=5000", "since=yesterday"):
        answer = httpx.get(f"{board}/api/sagas?{query}", timeout=10)
        assert answer.status_code == 422 and "\n" not in answer.json()["detail"], (query, answer.text)
    assert httpx.get(f"{board}/api/sagas/not-an-id", timeout=10).status_code == 422
    assert httpx.get(f"{board}/api/sagas/{uuid.uuid4()}", timeout=30).status_code == 404


async def test_order_svc_board_says_where_the_saga_board_is(services):
    from saga_cli.board.command import DEFAULT_PORT

    answer = httpx.get(f"{SERVICE_URLS['order_svc'].url}/board", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert f'href="http://127.0.0.1:{DEFAULT_PORT}/"' in answer.text
    assert "<code>saga board</code>" in answer.text
