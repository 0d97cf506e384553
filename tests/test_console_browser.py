"""The operator console in a real browser: headless Debian chromium driven by selenium,
against the demo's own config served by uvicorn on loopback (fake engine, fake
embedder), with the official OpenAI SDK as the tenant's client.

The operator connects with the admin key, sees the tenants, adapters (versions and
residency) and collections, creates a key whose name is HTML (shown as text, never
run), sees its secret once (gone after a reload), watches the key's request appear in
the spend chart, revokes the key (the SDK then gets 401) and reads both changes in the
audit log. Screenshots at desktop (1280x800) and phone (390x844) widths go to
``test-artifacts/console/`` (path printed), each checked for content and for no
horizontal overflow. Skipped only where chromium, chromedriver or selenium are missing
(``make install`` installs them on Debian).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from gateway.app import create_app
from gateway.demo.config import ACME, DEMO_MODEL_ID, GLOBEX
from gateway.demo.keys import DemoKeys
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit
from tests.support.browser import chromium, needs_browser, served
from tests.support.demo_settings import FAKE_EMBEDDER, demo_gateway_settings
from tests.support.embedders import WordHashEmbedder
from tests.support.engine_fixtures import free_port
from tests.support.fakes import FakeEngine

pytestmark = needs_browser

OUTPUT = Path(__file__).resolve().parents[1] / "test-artifacts" / "console"
HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>"
NEW_TENANT = "console-team"
REFUSED_TENANT = (
    "/admin/tenants - Failed to load resource: the server responded with a status of 400"
)
TIMEOUT_S = 30
SCREENS = {"desktop": (1280, 800), "phone": (390, 844)}


@dataclass
class LiveGateway:
    url: str
    keys: DemoKeys
    engine: FakeEngine


@pytest.fixture(scope="module")
def live_gateway(
    fake_kit: FakeKit, renderer: PromptRenderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    port = free_port()
    settings, keys = demo_gateway_settings(
        fake_kit, tmp_path_factory.mktemp("console-demo"), port=port, log_level="warning"
    )
    engine = FakeEngine(max_model_len=2048)
    app = create_app(
        settings,
        engine_factory=lambda _: engine,
        renderer=renderer,
        embedder=WordHashEmbedder(name=FAKE_EMBEDDER),
    )
    with served(app, port, "console-server") as url:
        yield LiveGateway(url, keys, engine)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(1280, 800) as driver:
        yield driver


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders a table after each change: an element found a moment ago may
    # be gone; ask again.
    wait = WebDriverWait(
        driver,
        TIMEOUT_S,
        poll_frequency=0.05,
        ignored_exceptions=(StaleElementReferenceException,),
    )
    try:
        return wait.until(condition)
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}; log: {driver.get_log('browser')}")


def console_errors(driver: Any, *expected: str) -> list[dict[str, Any]]:
    """Errors in the browser's log, less those whose message holds an ``expected`` text
    (a refusal the test asked for is logged as a failed resource load)."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in expected)
    ]


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def row_of(driver: Any, box_id: str, needle: str) -> Any:
    """The first table row under ``#box_id`` whose text holds ``needle`` (or None)."""
    from selenium.webdriver.common.by import By

    for row in driver.find_elements(By.CSS_SELECTOR, f"#{box_id} tbody tr"):
        if needle in row.text:
            return row
    return None


def screenshot_at(driver: Any, name: str, width: int, height: int) -> Path:
    """The whole page at ``width`` (Chrome DevTools device emulation, phone-like below
    600 px), after checking the page does not scroll sideways there."""
    path = OUTPUT / f"console-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    screen = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", screen)
    try:
        time.sleep(0.4)  # the chart redraws for the new width (debounced resize)
        overflow = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert overflow[0] <= overflow[1], f"{name}: the page scrolls sideways {overflow}"
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        screen["height"] = max(height, int(size["height"]))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", screen)
        time.sleep(0.2)
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    with Image.open(path) as image:
        assert image.width == width and image.height >= height
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        # A blank or one-colour page has a handful of colours; the console has text,
        # bars and badges (None: more colours than counted, which is not blank either).
        assert colours is None or len(colours) > 50, f"{name}: the screenshot looks blank"
    print(f"console screenshot ({name}, {width}x{height}): {path}")
    return path


def test_console_manages_keys_shows_spend_and_audit(
    browser: Any, live_gateway: LiveGateway
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(live_gateway.url + "/console")
    assert driver.title == "loragate console"
    assert console_errors(driver) == []

    # Connect with the admin key: tenants, adapters, collections.
    driver.find_element(By.ID, "admin-key").send_keys(live_gateway.keys.key("admin"))
    driver.find_element(By.ID, "connect").click()
    wait_for(driver, lambda d: text_of(d, "connection-status") == "connected", "the connection")
    wait_for(driver, lambda d: row_of(d, "tenants", GLOBEX.name), "the tenant list")
    assert row_of(driver, "tenants", ACME.name).find_element(By.CSS_SELECTOR, ".badge").text
    adapters = wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#adapters .adapter") or None, "adapters"
    )
    assert [a.get_attribute("data-adapter") for a in adapters] == ["pirate", "robot"]
    residency = adapters[0].find_element(By.CSS_SELECTOR, ".res").text
    assert residency in ("cpu cache", "gpu slot", "disk")
    assert not driver.find_elements(By.CSS_SELECTOR, "#adapters .split")  # no split in the API
    wait_for(driver, lambda d: row_of(d, "collections", ACME.collection), "the collections")

    # A tenant: an HTML name is refused by the API (the error shown as text), a good one
    # is made with a monthly budget and listed as made over the API.
    driver.find_element(By.CSS_SELECTOR, "#tenant-create summary").click()
    driver.find_element(By.ID, "tenant-name").send_keys("<b>team</b>")
    driver.find_element(By.CSS_SELECTOR, "#tenant-form button[type=submit]").click()
    wait_for(driver, lambda d: "Invalid value for 'name'" in text_of(d, "message"), "refusal")
    assert "<b>team</b>" not in driver.find_element(By.ID, "message").get_attribute("innerHTML")
    driver.find_element(By.ID, "tenant-name").clear()
    driver.find_element(By.ID, "tenant-name").send_keys(NEW_TENANT)
    Select(driver.find_element(By.ID, "tenant-budget-period")).select_by_value("month")
    driver.find_element(By.ID, "tenant-budget-cost").send_keys("25")
    driver.find_element(By.CSS_SELECTOR, "#tenant-form button[type=submit]").click()
    new_row = wait_for(driver, lambda d: row_of(d, "tenants", NEW_TENANT), "the new tenant")
    assert new_row.find_element(By.CSS_SELECTOR, ".badge").text.lower() == "api"
    assert "25 USD / month" in new_row.text
    wait_for(driver, lambda d: row_of(d, "audit", "tenant.create"), "tenant.create audited")
    # Its budget, edited: a daily token cap instead of the monthly cost cap.
    wait_for(
        driver,
        lambda d: row_of(d, "tenants", NEW_TENANT).find_element(By.CSS_SELECTOR, ".tenant-budget"),
        "the tenant's budget button",
    ).click()
    Select(driver.find_element(By.ID, "edit-budget-period")).select_by_value("day")
    assert driver.find_element(By.ID, "edit-budget-cost").get_attribute("value") == "25"
    driver.find_element(By.ID, "edit-budget-cost").clear()
    driver.find_element(By.ID, "edit-budget-tokens").send_keys("5000")
    driver.find_element(By.ID, "budget-save").click()
    wait_for(
        driver,
        lambda d: "5000 tokens / day" in row_of(d, "tenants", NEW_TENANT).text,
        "the edited budget",
    )
    assert not driver.find_element(By.ID, "budget-form").is_displayed()
    wait_for(driver, lambda d: row_of(d, "audit", "tenant.update"), "tenant.update audited")

    # A key whose name is HTML: created, its secret shown once, its name shown as text.
    wait_for(
        driver,
        lambda d: row_of(d, "tenants", ACME.name).find_element(By.CSS_SELECTOR, ".tenant-keys"),
        "acme's keys button",
    ).click()
    wait_for(driver, lambda d: d.find_element(By.ID, "keys-panel").is_displayed(), "keys panel")
    driver.find_element(By.ID, "key-name").send_keys(HOSTILE_NAME)
    Select(driver.find_element(By.ID, "key-budget-period")).select_by_value("day")
    driver.find_element(By.ID, "key-budget-tokens").send_keys("100000")
    driver.find_element(By.ID, "key-create").click()
    wait_for(driver, lambda d: text_of(d, "secret-value"), "the new key's secret")
    secret = text_of(driver, "secret-value")
    key_row = wait_for(driver, lambda d: row_of(d, "keys", HOSTILE_NAME), "the key's row")
    key_id = key_row.find_element(By.CSS_SELECTOR, ".key-id").text
    assert key_id and key_id in text_of(driver, "secret-name")
    assert driver.execute_script("return window.__pwned") is None
    assert not driver.find_elements(By.CSS_SELECTOR, "main img")  # the name made no element

    # The tenant's application uses the key through the OpenAI SDK.
    client = openai.OpenAI(base_url=live_gateway.url + "/v1", api_key=secret, max_retries=0)
    answer = client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    used = answer.usage.total_tokens if answer.usage else 0
    assert used > 0

    # The spend chart, per key, shows that request under the key's (escaped) name.
    Select(driver.find_element(By.ID, "spend-group")).select_by_value("key_id")
    Select(driver.find_element(By.ID, "spend-range")).select_by_value("hour:24")
    wait_for(
        driver,
        lambda d: row_of(d, "spend-totals", HOSTILE_NAME),
        "the key's spend in the totals",
    )
    totals_row = row_of(driver, "spend-totals", HOSTILE_NAME)
    assert str(used) in totals_row.text
    chart_total = float(driver.find_element(By.ID, "spend-chart").get_attribute("data-total"))
    assert chart_total >= used
    assert driver.find_elements(By.CSS_SELECTOR, "#spend-chart svg rect.bar")
    assert HOSTILE_NAME in text_of(driver, "spend-legend")
    budget_texts = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#budgets .budget")]
    assert any(key_id in t and f"{used} of 100.0k tokens" in t for t in budget_texts), budget_texts

    for name, (width, height) in SCREENS.items():
        screenshot_at(driver, name, width, height)

    # After a reload the secret is gone: not on the page, not in the tab's storage.
    driver.refresh()
    wait_for(driver, lambda d: text_of(d, "connection-status") == "connected", "reconnection")
    wait_for(driver, lambda d: row_of(d, "keys", HOSTILE_NAME), "the key list after reload")
    assert not driver.find_element(By.ID, "secret-box").is_displayed()
    assert secret not in driver.page_source
    stored = driver.execute_script(
        "return Object.keys(sessionStorage).map((k) => sessionStorage.getItem(k))"
        ".concat(Object.keys(localStorage).map((k) => localStorage.getItem(k)))"
    )
    assert secret not in stored and live_gateway.keys.key("admin") in stored
    assert driver.execute_script("return localStorage.length") == 0

    # Revoke (two clicks): the SDK's next call with the key gets 401.
    revoke = row_of(driver, "keys", HOSTILE_NAME).find_element(By.CSS_SELECTOR, ".btn-danger")
    revoke.click()
    assert revoke.text == "Confirm revoke"
    revoke.click()
    wait_for(driver, lambda d: "revoked" in text_of(d, "message"), "the revocation")
    wait_for(driver, lambda d: row_of(d, "keys", HOSTILE_NAME) is None, "the key to leave the list")
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(
            model=DEMO_MODEL_ID, messages=[{"role": "user", "content": "again"}], max_tokens=8
        )
    assert refused.value.status_code == 401
    client.close()

    # The audit log: the creation and the revocation, by the admin key, newest first.
    wait_for(driver, lambda d: row_of(d, "audit", "key.revoke"), "the revocation in the audit log")
    actions = [
        (row.find_elements(By.TAG_NAME, "td")[3].text, row.find_elements(By.TAG_NAME, "td")[5].text)
        for row in driver.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
    ]
    assert actions == [
        ("key.revoke", key_id),
        ("key.create", key_id),
        ("tenant.update", "–"),
        ("tenant.create", "–"),
    ]
    assert HOSTILE_NAME in row_of(driver, "audit", "key.create").text
    assert driver.execute_script("return window.__pwned") is None
    assert not driver.find_elements(By.CSS_SELECTOR, "main img")
    assert console_errors(driver, REFUSED_TENANT) == []
