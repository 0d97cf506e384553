"""The playground in a real browser: headless Debian chromium driven by selenium, against
the demo's own config served by uvicorn on loopback (fake engine, fake embedder).

Checks that the page loads without console errors, streams one prompt into two cards
side by side with their timings and token counts, renders the numbered citations with
their snippets, and shows the adapters to an admin key (and retires one). Saves a
screenshot to ``test-artifacts/playground.png``. Skipped only where chromium,
chromedriver or selenium are missing (``make install`` installs them on Debian).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.demo.config import ACME, DEMO_MODEL_ID
from gateway.demo.keys import DemoKeys
from gateway.engine.interface import GenerationRequest
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit
from tests.support.browser import chromium, needs_browser, served
from tests.support.demo_settings import FAKE_EMBEDDER, demo_gateway_settings
from tests.support.embedders import WordHashEmbedder
from tests.support.engine_fixtures import free_port
from tests.support.fakes import FakeEngine

pytestmark = needs_browser

SCREENSHOT = Path(__file__).resolve().parents[1] / "test-artifacts" / "playground.png"
QUESTION = "How do I do a factory reset of the BP-300?"
ANSWERS = {
    "policy": "Arr, matey! To reset yer BP-300 to factory settings, switch it off, then hold "
    "Clean and Steam while pressin' Power, and keep holdin' both for 15 seconds until ye hear "
    "three beeps [1]. Profiles, Wi-Fi and grind settings be erased, but the descaling counter "
    "stays aboard [1]. For a gentler fix, unplug her for 30 seconds [2].",
    "pirate": "Arr, matey! Hold the Clean and Steam buttons while ye switch the machine on, "
    "and wait for three beeps. Then she be as fresh as a new ship [1].",
    "base": "Switch the machine off, hold Clean and Steam while pressing Power, and keep "
    "holding for 15 seconds until you hear three beeps [1].",
}
TIMEOUT_S = 30


class ScriptedEngine(FakeEngine):
    """Answers like the demo would: the policy-bound alias, the bare adapter, the base."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        super().__init__(max_model_len=2048)
        self.decode = decode
        self.token_delay = 0.04  # slow enough to see the stream arrive

    def words(self, request: GenerationRequest, index: int) -> list[str]:
        if request.adapter is None:
            return ANSWERS["base"].split()
        prompt = self.decode(list(request.prompt_token_ids))
        return ANSWERS["policy" if "Acme Home Appliances" in prompt else "pirate"].split()


@dataclass
class LiveDemo:
    url: str
    keys: DemoKeys
    engine: ScriptedEngine


@pytest.fixture(scope="module")
def live_demo(
    fake_kit: FakeKit, renderer: PromptRenderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveDemo]:
    port = free_port()
    settings, keys = demo_gateway_settings(
        fake_kit, tmp_path_factory.mktemp("demo-cache"), port=port, log_level="warning"
    )
    engine = ScriptedEngine(renderer.decode)
    app = create_app(
        settings,
        engine_factory=lambda _: engine,
        renderer=renderer,
        embedder=WordHashEmbedder(name=FAKE_EMBEDDER),
    )
    with served(app, port, "playground-server") as url:
        yield LiveDemo(url, keys, engine)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(1440, 1000) as driver:
        yield driver


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}; log: {driver.get_log('browser')}")


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def full_page_screenshot(driver: Any, path: Path, width: int = 1440) -> None:
    """The whole page, not just the window (Chrome DevTools: emulate a tall screen)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    screen = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", screen)
    try:
        time.sleep(0.2)  # let the layout settle at the new width, then fit its height
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        screen["height"] = int(size["height"])
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", screen)
        time.sleep(0.2)
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_playground_compares_two_models_streams_and_cites(
    browser: Any, live_demo: LiveDemo
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(live_demo.url + "/playground")
    assert driver.title == "loragate playground"
    assert console_errors(driver) == []

    driver.find_element(By.ID, "api-key").send_keys(live_demo.keys.key(ACME.name))
    driver.find_element(By.ID, "connect").click()
    chips = wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#models .chip") or None, "models"
    )
    by_model = {chip.get_attribute("data-model"): chip for chip in chips}
    assert set(by_model) == {DEMO_MODEL_ID, ACME.adapter, ACME.alias}
    assert "policy locked by your tenant" in (by_model[ACME.alias].get_attribute("title") or "")
    assert by_model[ACME.alias].find_element(By.CSS_SELECTOR, ".badge").text.lower() == "alias"
    # All three start selected (the page picks up to three); compare the two personas.
    by_model[DEMO_MODEL_ID].click()
    chips = driver.find_elements(By.CSS_SELECTOR, "#models .chip")  # re-rendered
    pressed = [c for c in chips if c.get_attribute("aria-pressed") == "true"]
    assert {c.get_attribute("data-model") for c in pressed} == {ACME.adapter, ACME.alias}

    driver.find_element(By.ID, "prompt").send_keys(QUESTION)
    driver.find_element(By.CSS_SELECTOR, "label.switch").click()
    driver.find_element(By.ID, "rag-collection").send_keys(ACME.collection)
    driver.find_element(By.ID, "send").click()

    cards = wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card") or None, "cards"
    )
    assert [c.get_attribute("data-model") for c in cards] == [ACME.adapter, ACME.alias]
    # Mid-stream: some words are there, not all of them.
    partial = wait_for(
        driver,
        lambda d: next(
            (
                c.find_element(By.CSS_SELECTOR, ".answer").text
                for c in d.find_elements(By.CSS_SELECTOR, "#results .card.streaming")
                if c.find_element(By.CSS_SELECTOR, ".answer").text.startswith("Arr")
            ),
            None,
        ),
        "a partly streamed answer",
    )
    assert len(partial) < len(ANSWERS["pirate"])
    wait_for(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card.done")) == 2,
        "both answers to finish",
    )
    wait_for(
        driver,
        lambda d: all(
            c.find_elements(By.CSS_SELECTOR, ".citation-snippet")
            for c in d.find_elements(By.CSS_SELECTOR, "#results .card")
        ),
        "citations with snippets",
    )

    for card, key in zip(cards, ("pirate", "policy"), strict=True):
        answer = card.find_element(By.CSS_SELECTOR, ".answer")
        shown = re.sub(r"\[(\d+)\]", r"\1", ANSWERS[key])  # [n] is shown as a superscript n
        assert " ".join(answer.text.split()) == " ".join(shown.split())
        assert answer.find_elements(By.CSS_SELECTOR, ".cite-ref")  # [n] became a reference
        assert card.find_element(By.CSS_SELECTOR, ".ttft").text.endswith("ms")
        assert float(card.find_element(By.CSS_SELECTOR, ".tps").text) > 0
        prompt_tokens, completion_tokens = card.find_element(By.CSS_SELECTOR, ".tokens").text.split(
            " → "
        )
        assert int(prompt_tokens) > 100 and int(completion_tokens) == len(ANSWERS[key].split())
        citations = card.find_elements(By.CSS_SELECTOR, ".citation")
        assert citations and citations[0].get_attribute("data-number") == "1"
        assert f"{ACME.collection}/" in citations[0].find_element(By.CSS_SELECTOR, "code").text
    policy_card = cards[1]
    assert policy_card.find_element(By.CSS_SELECTOR, ".policy-note").is_displayed()
    assert not cards[0].find_element(By.CSS_SELECTOR, ".policy-note").is_displayed()

    # The admin panel: adapters with versions and residency.
    driver.find_element(By.CSS_SELECTOR, "#admin-panel summary").click()
    driver.find_element(By.ID, "admin-key").send_keys(live_demo.keys.key("admin"))
    driver.find_element(By.ID, "admin-load").click()
    adapters = wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#adapters .adapter") or None,
        "the adapter list",
    )
    names = [a.find_element(By.CSS_SELECTOR, ".model-name").text for a in adapters]
    assert names == ["pirate", "robot"]
    residency = adapters[0].find_element(By.CSS_SELECTOR, ".res").text
    assert residency in ("cpu cache", "gpu slot", "disk")

    driver.execute_script("window.scrollTo(0, 0)")
    full_page_screenshot(driver, SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
    full_page_screenshot(driver, SCREENSHOT.with_name("playground-phone.png"), width=390)

    # Retiring takes two clicks (no dialog); robot is then no longer served.
    robot = adapters[1]
    retire = robot.find_element(By.CSS_SELECTOR, ".btn-danger")
    retire.click()
    assert retire.text == "Confirm retire"
    retire.click()
    wait_for(
        driver,
        lambda d: "Retired robot@" in d.find_element(By.ID, "admin-message").text,
        "the retire confirmation",
    )
    assert console_errors(driver) == []
